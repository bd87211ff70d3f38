"""The checkpoint repository: the strategy is saved as JSON (+ npz), never pickled, and a
checkpoint from an older backend (``strategy.pkl``) is refused with what to do, unopened."""
from __future__ import annotations

import pathlib
import pickle

import pytest
import redis

from backend.service.checkpoints import (
    LEGACY_STRATEGY_FILE,
    CheckpointCache,
    CheckpointMissingError,
    OutdatedCheckpointError,
    fast_seq,
    prune_checkpoints,
)
from backend.service.store import ProjectStore
from tests.helpers.backend import make_settings, publish_checkpoint

PID = 5


class _Trap:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def published(redis_url, tmp_path, tiny_bert):
    settings = make_settings(redis_url, tmp_path, tiny_bert)
    store = ProjectStore(redis.Redis.from_url(redis_url, decode_responses=True), settings.key_prefix)
    directory = publish_checkpoint(settings, store, PID, "acq-1-a")
    return settings, directory


def test_the_strategy_is_saved_as_json_and_scores_after_loading(published):
    settings, directory = published
    assert (directory / "strategy.json").is_file() and not (directory / LEGACY_STRATEGY_FILE).exists()
    checkpoint = CheckpointCache(settings.model_dir, device="cpu").get(PID, "acq-1-a")
    entries, ran = checkpoint.score_texts(["a great film", None, "   ", "awful"])
    assert ran == 2 and entries[1].result == [] and entries[2].result == []
    assert entries[0].result[0]["value"]["choices"] and 0 < entries[0].score <= 1
    by_task, ran_tasks = checkpoint.score([{"id": 1, "data": {"text": "a great film"}}, {"id": 2, "data": {}}])
    assert ran_tasks == 1 and by_task[0] == entries[0] and by_task[1].result == []


def test_an_old_pickled_checkpoint_asks_for_a_retrain_and_is_never_unpickled(published, tmp_path):
    settings, directory = published
    (directory / "strategy.json").unlink()
    (directory / "strategy.npz").unlink(missing_ok=True)
    marker = tmp_path / "unpickled"
    (directory / LEGACY_STRATEGY_FILE).write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(OutdatedCheckpointError, match="Start training") as info:
        CheckpointCache(settings.model_dir, device="cpu").get(PID, "acq-1-a")
    assert isinstance(info.value, CheckpointMissingError)  # /predict answers it as "model unavailable"
    assert "older version" in str(info.value)
    assert not marker.exists()


def test_a_missing_checkpoint_says_model_dir_must_be_shared(published):
    settings, _ = published
    with pytest.raises(CheckpointMissingError, match="MODEL_DIR"):
        CheckpointCache(settings.model_dir, device="cpu").get(PID, "acq-9-nope")


def test_pruning_leaves_the_fast_versions_being_written(tmp_path):
    """A prune (after fast update N published) must not delete the folder of update N+1, written
    but not yet published, nor its temporary folder: deleting it left the project serving a
    version with no folder (/predict answered 503 in the service-loop test)."""
    root = tmp_path / "7"
    names = ["acq-1-a", "fast-3-20261207-a", "fast-4-20261207-b", "fast-5-20261207-c",
             ".fast-6-20261207-d.tmp-1a2b3c4d", ".acq-2-b.tmp-5e6f7a8b", "features"]
    for name in names:
        (root / name).mkdir(parents=True)
    removed = prune_checkpoints(tmp_path, 7, keep={"acq-1-a", "fast-4-20261207-b"}, published_fast_seq=4)
    assert sorted(removed) == [".acq-2-b.tmp-5e6f7a8b", "fast-3-20261207-a"]
    assert sorted(p.name for p in root.iterdir()) == sorted(set(names) - set(removed))
    assert [fast_seq(n) for n in names] == [None, 3, 4, 5, 6, None, None]
