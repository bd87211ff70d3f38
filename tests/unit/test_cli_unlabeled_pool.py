"""`plasm --unlabeled FILE`: the pool file reader (backend.engine.data.pool)."""
from __future__ import annotations

import gzip
import json

import pytest

from backend.engine.data.pool import read_unlabeled_pool
from backend.engine.errors import DatasetError
from backend.engine.types import ClassificationExample, TaggingExample, TaskType

CLS, TAG = TaskType.CLASSIFICATION, TaskType.TAGGING


def test_text_lines(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("a great film\n\nthe plot was dull\r\n")
    assert read_unlabeled_pool(path, CLS) == [ClassificationExample("a great film"),
                                              ClassificationExample("the plot was dull")]
    assert read_unlabeled_pool(path, TAG)[1] == TaggingExample(["the", "plot", "was", "dull"])


def test_json_lines_with_text_or_tokens(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"review": "fine"}, {"tokens": ["alice", "in", "paris"]}, {"review": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert read_unlabeled_pool(path, CLS, "review") == [ClassificationExample("fine"),
                                                        ClassificationExample("alice in paris")]
    assert read_unlabeled_pool(path, TAG, "review")[1].words == ["alice", "in", "paris"]
    path.write_text(json.dumps({"other": "x"}))
    with pytest.raises(DatasetError, match="line 1"):
        read_unlabeled_pool(path, CLS)


def test_csv_tsv_and_compressed(tmp_path):
    (tmp_path / "pool.csv").write_text("id,text\n1,good\n2,bad\n")
    assert [e.text for e in read_unlabeled_pool(tmp_path / "pool.csv", CLS)] == ["good", "bad"]
    (tmp_path / "pool.tsv").write_text("text\tid\nnice one\t1\n")
    assert [e.text for e in read_unlabeled_pool(tmp_path / "pool.tsv", CLS)] == ["nice one"]
    (tmp_path / "pool.txt.gz").write_bytes(gzip.compress(b"zipped text\n"))
    assert [e.text for e in read_unlabeled_pool(tmp_path / "pool.txt.gz", CLS)] == ["zipped text"]
    with pytest.raises(DatasetError, match="no column 'body'"):
        read_unlabeled_pool(tmp_path / "pool.csv", CLS, "body")
    with pytest.raises(DatasetError, match="no such unlabeled pool file"):
        read_unlabeled_pool(tmp_path / "missing.txt", CLS)
