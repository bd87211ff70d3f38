import json

import pytest

from backend.engine.io import atomic_directory, atomic_write_json


def test_atomic_directory_replaces_the_old_tree_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # not visible before the swap
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_directory_failure_keeps_the_old_tree(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("cancelled")
    assert (target / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_write_json_round_trips(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_json(path, {"a": [1, 2]})
    atomic_write_json(path, {"a": [3]})
    assert json.loads(path.read_text()) == {"a": [3]}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
