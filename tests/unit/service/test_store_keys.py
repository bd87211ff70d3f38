"""The key layout in `backend.service.store.keys` is the truth: every key the store's writers put in
a real Redis matches a pattern of its table, every field they write on the project hash is in its
field list, and each documented entry is written by some writer (no stale lines). The patterns
are parsed from the docstring, never repeated here."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields

import pytest
import redis

import backend.service.store.keys as keys_module
from backend.service.records import HistoryPoint, IterationInfo, IterationRecord, PipelineStatus, ProjectState
from backend.service.store import ProjectStore, ScoreEntry, compare_and_delete
from backend.service.telemetry import Metrics
from tests.helpers.backend import CLASSIFICATION_XML

PID = 7
# Written only inside a MULTI (renamed over the pool before the transaction ends): no SCAN sees it.
NEVER_VISIBLE = {"P:project:<id>:pool:tmp"}


def _block(title: str) -> list[str]:
    """The entries of the literal block whose introducing line starts with `title`: lines indented
    by exactly four spaces (deeper lines continue the entry above), first word only."""
    lines = (keys_module.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title) and line.endswith("::"))
    entries: list[str] = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        if line.startswith("    ") and not line.startswith("     "):
            entries.append(line.split()[0])
    return entries


def _pattern(entry: str, prefix: str, placeholder: str) -> re.Pattern[str]:
    text = re.escape(prefix) + entry[1:] if entry.startswith("P:") else entry
    out = re.sub(r"<id>", r"\\d+", text)
    return re.compile(re.sub(r"<[^>]+>", placeholder, out) + r"\Z")


KEY_ENTRIES = _block("Key layout")
FIELD_ENTRIES = _block("Fields of the project hash")


def _key_patterns(prefix: str) -> dict[str, re.Pattern[str]]:
    return {entry: _pattern(entry, prefix, ".+") for entry in KEY_ENTRIES}


def _field_patterns() -> dict[str, re.Pattern[str]]:
    return {entry: _pattern(entry, "", "[^:]+") for entry in FIELD_ENTRIES}


@pytest.fixture
def store(redis_url: str) -> Iterator[ProjectStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield ProjectStore(client, f"t-{uuid.uuid4().hex[:6]}")
    client.close()


def _record(version: str) -> IterationRecord:
    return IterationRecord(iteration=1, version=version, previous_version="untrained", pipeline="p", labeled=3,
                           pool_size=2, subset_size=2, scored_by_model=2, kept_stale=0, unscored=0,
                           rescored_share=1.0, full_rescore=True, pool_refreshed=True, chunks=1, pushed=2,
                           seconds={"train": 1.0}, started_at=0.0, finished_at=1.0)


def _writers(store: ProjectStore) -> list[Callable[[], object]]:
    """Every writer of the store, called the way the web process and the jobs call it; the order
    lets each state exist at some point (a running pipeline, a held lock, a second registration)."""
    s = store
    return [
        lambda: s.register_label_config(PID, CLASSIFICATION_XML),
        lambda: s.register_project(PID, CLASSIFICATION_XML, "sentiment", "body", "classification"),
        lambda: s.request_training(PID, "job-a"),
        lambda: s.begin_training(PID, "job-a"),
        lambda: s.request_training(PID, "job-b"),  # deferred: sets the rerun flag
        lambda: s.set_stage_job(PID, "job-a", "score-1"),
        lambda: s.count_annotation_events(PID, 1, 5, ["ANNOTATION_CREATED:1:t0"]),
        lambda: s.record_error(PID, "job-a", "boom"),
        lambda: s.pool_replace(PID, {1: "a", 2: "b"}, "text", iteration=1),
        lambda: s.pool_add(PID, {3: "c"}),
        lambda: s.put_scores(PID, "v1", {1: ScoreEntry([], 0.5, 0.5)}),
        lambda: s.add_model_scored(PID, 1),
        lambda: s.put_status("job-a", PipelineStatus(project=PID, pipeline="job-a", stage="score")),
        lambda: s.update_status("job-a", stage="push"),
        lambda: s.start_iteration(PID, IterationInfo(iteration=1, version="v1", pipeline="job-a",
                                                     value_key="text"), [1, 2]),
        lambda: s.add_iteration_progress(PID, "v1", 2, 0.1, "job-a"),
        lambda: s.remember_labeled(PID, "v1", [4, 5, 6]),
        lambda: s.publish_version(PID, "v1", 1, _record("v1")),
        lambda: s.replace_last_iteration_record(PID, _record("v1")),
        lambda: s.publish_version(PID, "fast-1-x", None, None, fast_seq=1),
        lambda: s.end_pipeline(PID, "job-a"),
        lambda: s.mark_pool_stale(PID),
        lambda: s.set_fields(PID, serving_model="proxy", finetune_won=False, serving_reason={"proxy": {}},
                             feature_key="base-x", feature_source="enc", feature_source_version=""),
        lambda: s.request_fast(PID, "fast-job"),
        lambda: s.fast_begin(PID, "fast-job"),
        lambda: s.next_fast_seq(PID),
        lambda: s.note_fast_event(PID),
        lambda: s.set_typical_ids(PID, "base-x", 30, [1, 2]),
        lambda: s.set_fast_cv(PID, {"c": 1.0, "labeled": 3, "classes": ["a"], "feature_key": "base-x"}),
        lambda: s.set_fast_status(PID, {"status": "published"}),
        lambda: s.claim(PID, "features-build", "b-1", 60),
        lambda: s.claim(PID, "cv-queued", "cv-1", 60),
        lambda: s.claim(PID, "prune-queued", "pr-1", 60),
        lambda: s.take_successor_lock(PID, "s-1", 60),
        lambda: s.request_successor_cancel("s-1"),
        lambda: s.r.set(s.janitor_lock_key(), "token", px=60_000),  # as the janitor takes it
        lambda: s.r.hset(s.janitor_sightings_key(), "job:execution", "1.0"),  # as the janitor notes an expiry
        lambda: Metrics(s.r, s.prefix).count_job("fast", "ok"),
        lambda: s.append_history(PID, HistoryPoint(at=0.0, version="fast-1-x", kind="fast", labeled=3,
                                                   serving="proxy")),
        lambda: s.record_audits(PID, [2], 3, "fast-1-x"),
        lambda: s.set_ground_truth_ids(PID, [1]),
        lambda: s.set_stop_set_ids(PID, [1, 2]),
        lambda: s.set_stop_state(PID, {"history": []}),
        lambda: s.set_quality_estimate(PID, {"value": None}),
        lambda: s.set_suspects(PID, {"suspects": []}),
    ]


def _observe(store: ProjectStore, keys: set[str], hash_fields: set[str]) -> None:
    keys.update(str(k) for k in store.r.scan_iter(count=1000))
    hash_fields.update(str(f) for f in store.r.hkeys(store.key(PID)))


def _run_writers(store: ProjectStore) -> tuple[set[str], set[str]]:
    """(every key, every project-hash field) that existed after some writer ran."""
    keys: set[str] = set()
    hash_fields: set[str] = set()
    for write in _writers(store):
        write()
        _observe(store, keys, hash_fields)
    with store.ls_switch_lock(PID, timeout=5):
        _observe(store, keys, hash_fields)
    return keys, hash_fields


def test_the_layout_docstring_parses() -> None:
    assert "P:project:<id>" in KEY_ENTRIES and "P:project:<id>:trained-on:<version>" in KEY_ENTRIES
    assert "version" in FIELD_ENTRIES and "typical:<feature_key>:<count>" in FIELD_ENTRIES
    assert len(KEY_ENTRIES) == len(set(KEY_ENTRIES)) and len(FIELD_ENTRIES) == len(set(FIELD_ENTRIES))


def test_every_key_written_is_documented_and_every_documented_key_is_written(store: ProjectStore) -> None:
    keys, _ = _run_writers(store)
    patterns = _key_patterns(store.prefix)
    undocumented = sorted(k for k in keys if not any(p.match(k) for p in patterns.values()))
    assert undocumented == []
    unwritten = sorted(e for e, p in patterns.items() if e not in NEVER_VISIBLE and not any(p.match(k) for k in keys))
    assert unwritten == []


def test_every_project_hash_field_written_is_documented(store: ProjectStore) -> None:
    _, hash_fields = _run_writers(store)
    patterns = _field_patterns()
    assert sorted(f for f in hash_fields if not any(p.match(f) for p in patterns.values())) == []
    assert sorted(e for e, p in patterns.items() if not any(p.match(f) for f in hash_fields)) == []


def test_every_project_state_field_is_documented() -> None:
    patterns = _field_patterns().values()
    missing = [f.name for f in fields(ProjectState) if f.name != "project_id"
               and not any(p.match(f.name) for p in patterns)]
    assert missing == []


def test_compare_and_delete_only_deletes_the_holders_key(redis_url: str) -> None:
    for decode in (True, False):  # the store's text client and RQ's bytes client
        conn = redis.Redis.from_url(redis_url, decode_responses=decode)
        conn.set("lock", "mine")
        assert compare_and_delete(conn, "lock", "theirs") is False and conn.exists("lock")
        assert compare_and_delete(conn, "lock", "mine") is True and not conn.exists("lock")
        assert compare_and_delete(conn, "lock", "mine") is False  # already gone
        conn.close()
