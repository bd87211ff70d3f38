"""ProjectStore against a real redis-server: dedupe scripts, scores, pool cache, publishing,
surviving a restart of the backend, and clear errors when Redis is down."""
from __future__ import annotations

import math
import threading
import uuid

import numpy as np
import pytest
import redis

from backend.engine.types import TaskType
from backend.service.records import IterationInfo, IterationRecord, PipelineStatus
from backend.service.store import UNTRAINED, ProjectStore, ScoreEntry, StoreUnavailableError
from tests.helpers.backend import CLASSIFICATION_XML
from tests.helpers.servers import RedisServer


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    s = ProjectStore(client, f"t-{uuid.uuid4().hex[:6]}")
    s.register_project(7, CLASSIFICATION_XML, "sentiment", "text", "classification")
    yield s
    client.close()


def test_needs_a_decoding_client(redis_url):
    with pytest.raises(ValueError, match="decode_responses"):
        ProjectStore(redis.Redis.from_url(redis_url))


def test_register_reports_config_changes_and_marks_pool_stale(store):
    state = store.get_project(7)
    assert state.version == UNTRAINED and state.iteration == 0 and not state.trained
    assert state.control_name == "sentiment" and state.value_key == "text"
    assert store.register_project(7, CLASSIFICATION_XML, "sentiment", "text", "classification") is False
    assert store.register_project(7, CLASSIFICATION_XML + " ", "sentiment", "text", "classification") is True
    assert not store.get_project(7).pool_stale  # same task field: the cached pool is still right
    assert store.register_project(7, CLASSIFICATION_XML.replace("$text", "$body"), "sentiment", "body",
                                  "classification") is True
    assert store.get_project(7).pool_stale
    assert store.get_project(8) is None
    assert store.project_ids() == [7]


def test_training_dedupe_one_queued_one_running_and_a_rerun_flag(store):
    first = store.request_training(7, "job-a")
    assert (first.outcome, first.job_id) == ("enqueue", "job-a")
    again = store.request_training(7, "job-b")
    assert (again.outcome, again.job_id) == ("queued", "job-a")  # the queued one will see the labels

    assert store.begin_training(7, "job-a")
    state = store.get_project(7)
    assert state.running_job == "job-a" and state.queued_job is None
    during = store.request_training(7, "job-c")
    assert during.outcome == "deferred" and store.get_project(7).dirty
    assert store.request_training(7, "job-d").outcome == "deferred"  # never a pile-up

    assert store.end_pipeline(7, "job-a") is True  # one more run is due
    assert store.end_pipeline(7, "job-a") is None  # idempotent: not running any more
    state = store.get_project(7)
    assert state.running_job is None and not state.dirty
    assert store.request_training(7, "job-e").outcome == "enqueue"


def test_a_second_pipeline_cannot_start_while_one_runs(store):
    store.request_training(7, "job-a")
    assert store.begin_training(7, "job-a")
    assert not store.begin_training(7, "job-x")
    assert store.get_project(7).dirty  # the running one reruns instead
    assert store.end_pipeline(7, "job-x") is None


def test_concurrent_requests_enqueue_exactly_once(store):
    outcomes = []

    def ask(i):
        outcomes.append(store.request_training(7, f"job-{i}").outcome)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("enqueue") == 1 and outcomes.count("queued") == 19


def test_clear_job_field_only_clears_the_expected_job(store):
    store.request_training(7, "job-a")
    assert not store.clear_job_field(7, "queued_job", "job-b")
    assert store.clear_job_field(7, "queued_job", "job-a")
    assert store.get_project(7).queued_job is None


def test_annotation_counter_fires_every_n(store):
    assert store.count_annotations(7, 1, 3) == (False, 1)
    assert store.count_annotations(7, 1, 3) == (False, 2)
    assert store.count_annotations(7, 2, 3) == (True, 4)
    assert store.count_annotations(7, 1, 3) == (False, 1)
    assert store.count_annotations(7, 50, 0) == (False, 51)  # 0 = only Start training


def test_annotation_counter_counts_each_event_identity_once(store):
    assert store.count_annotations(7, 0, 3, ["ANNOTATION_CREATED:1:t0", "ANNOTATION_CREATED:2:t0"]) == (False, 2)
    assert store.count_annotations(7, 0, 3, ["ANNOTATION_CREATED:2:t0"]) == (False, 2)  # second webhook
    assert store.count_annotations(7, 0, 3, ["ANNOTATION_UPDATED:2:t1"]) == (True, 3)  # an edit is new
    assert store.count_annotations(7, 1, 3, ["ANNOTATION_CREATED:1:t0"]) == (False, 1)  # no identity: counts
    assert 0 < store.r.ttl(store.key(7, "event", "ANNOTATION_CREATED:1:t0")) <= 24 * 3600


def test_scores_round_trip_and_uncertainties(store):
    entries = {1: ScoreEntry([{"type": "choices"}], 0.9, 0.1), 2: ScoreEntry([], 0.4, 0.6)}
    store.put_scores(7, "v1", entries)
    got = store.get_scores(7, "v1", [2, 3, 1])
    assert got == entries
    u = store.uncertainties(7, "v1", [1, 2, 3])
    assert u[:2].tolist() == [0.1, 0.6] and math.isnan(u[2])
    assert np.isnan(store.uncertainties(7, UNTRAINED, [1, 2])).all()
    assert store.scored_count(7, "v1") == 2


def test_pool_cache(store):
    assert not store.pool_exists(7)
    store.pool_add(7, {1: "x"})  # no cache yet: ignored, the next training lists the pool
    assert not store.pool_exists(7)
    store.pool_replace(7, {3: "c", 1: "a", 2: "b"}, "text", iteration=1)
    assert store.pool_ids(7) == [1, 2, 3]
    assert store.pool_texts(7, [2, 9]) == ["b", None]
    store.pool_add(7, {4: "d"})
    assert store.pool_remove(7, [1, 99]) == 1
    assert store.pool_ids(7) == [2, 3, 4]
    state = store.get_project(7)
    assert state.pool_value_key == "text" and state.pool_refreshed_iteration == 1 and not state.pool_stale
    store.mark_pool_stale(7)
    assert store.get_project(7).pool_stale


def test_publish_keeps_current_and_previous_scores_only(store):
    for i, version in enumerate(["v1", "v2", "v3"], start=1):
        store.put_scores(7, version, {1: ScoreEntry([], 0.5, 0.5)})
        store.start_iteration(7, IterationInfo(iteration=i, version=version, pipeline="p", value_key="text"), [1])
        store.publish_version(7, version, i, {"iteration": i, "version": version, "seconds": {"train": 1.0}})
    assert store.current_version(7) == "v3" and store.get_project(7).iteration == 3
    assert store.versions(7) == ["v1", "v2", "v3"]
    assert store.scored_count(7, "v1") == 0 and store.scored_count(7, "v2") == 1
    assert [r["version"] for r in store.iterations(7)] == ["v1", "v2", "v3"]
    assert store.last_iteration(7)["iteration"] == 3
    with pytest.raises(KeyError):
        store.iteration_info(7, "v3")  # finished iterations leave no progress hash behind


def test_iteration_progress_counters(store):
    store.start_iteration(7, IterationInfo(iteration=1, version="v1", pipeline="p", value_key="text",
                                           subset_size=10, full_rescore=False, fit_loss=None,
                                           conversion={"skipped": {"unknown_label": 1}}), [5, 6, 7])
    store.put_status("p", PipelineStatus(project=7, pipeline="p", stage="score", subset_size=10, chunks=2))
    assert store.add_iteration_progress(7, "v1", 4, 0.5, "p") == (4, 1)
    assert store.add_iteration_progress(7, "v1", 6, 0.25, "p") == (10, 2)
    info = store.iteration_info(7, "v1")
    assert store.iteration_pool(7, "v1") == [5, 6, 7] and info.inference_seconds == 0.75
    assert info.subset_size == 10 and info.full_rescore is False and info.fit_loss is None
    assert info.conversion == {"skipped": {"unknown_label": 1}}
    assert store.get_project(7).model_scored_total == 10
    status = store.get_status("p")
    assert (status.scored, status.chunks_done, status.scoring_progress()) == (10, 2, 1.0)


def test_project_state_reads_typed_fields(store):
    state = store.get_project(7)
    assert state.task_type is TaskType.CLASSIFICATION and state.public()["task_type"] == "classification"
    assert state.dirty is False and state.last_error_at is None and state.queued_job is None
    store.record_error(7, "job-x", "boom")
    state = store.get_project(7)
    assert state.last_error == "boom" and state.last_error_job == "job-x" and isinstance(state.last_error_at, float)


def test_successor_lock_and_cancel_flag(store):
    assert store.take_successor_lock(7, "s-1", 60)
    assert not store.take_successor_lock(7, "s-2", 60) and store.successor_lock_holder(7) == "s-1"
    assert not store.take_successor_lock(7, "s-2", 60, replacing="s-0")  # not the holder any more
    assert store.take_successor_lock(7, "s-2", 60, replacing="s-1")
    store.release_successor_lock(7, "s-1")  # not the holder: no effect
    assert store.successor_lock_holder(7) == "s-2"
    store.release_successor_lock(7, "s-2")
    assert store.successor_lock_holder(7) is None
    assert not store.successor_cancel_requested("s-2")
    store.request_successor_cancel("s-2")
    assert store.successor_cancel_requested("s-2")
    store.clear_successor_cancel("s-2")
    assert not store.successor_cancel_requested("s-2")


class _TakeoverRedis(redis.Redis):
    """A real client that lets another job take `key` over right after the first command touching
    it returns: the moment a GET-then-DEL release deletes the new holder's lock."""

    key: str | None = None

    def execute_command(self, *args, **options):
        reply = super().execute_command(*args, **options)
        if self.key is not None and self.key in args:
            key, self.key = self.key, None
            redis.Redis(connection_pool=self.connection_pool).set(key, "s-2", ex=60)
        return reply


def test_release_successor_lock_never_deletes_a_lock_taken_over_by_another_job(store, redis_url):
    client = _TakeoverRedis.from_url(redis_url, decode_responses=True)
    racing = ProjectStore(client, store.prefix)
    assert racing.take_successor_lock(7, "s-1", 60)
    client.key = racing._successor_lock_key(7)  # s-1's lock expires and s-2 takes it during the release
    racing.release_successor_lock(7, "s-1")
    assert store.successor_lock_holder(7) == "s-2"
    assert racing.release_successor_lock(7, "s-1") is False and store.successor_lock_holder(7) == "s-2"
    assert racing.release_successor_lock(7, "s-2") is True and store.successor_lock_holder(7) is None
    client.close()


def test_claims_release_only_their_holder(store):
    assert store.claim(7, "cv-queued", "cv-1", 60) is None
    assert store.claim(7, "cv-queued", "cv-2", 60) == "cv-1"
    assert store.release(7, "cv-queued", "cv-2") is False and store.claim(7, "cv-queued", "cv-3", 60) == "cv-1"
    assert store.release(7, "cv-queued", "cv-1") is True and store.claim(7, "cv-queued", "cv-3", 60) is None


def test_fast_path_fields(store):
    assert store.last_fast_event(7) == 0.0 and store.fast_cv(7) is None
    store.note_fast_event(7, at=123.5)
    assert store.last_fast_event(7) == 123.5
    assert store.request_fast(7, "f-1") is None and store.request_fast(7, "f-2") == "f-1"
    assert store.fast_begin(7, "f-1") == 1 and store.request_fast(7, "f-2") is None  # the claim is released
    assert store.next_fast_seq(7) == 2 and store.get_project(7).fast_seq == 2
    assert store.typical_ids(7, "base-a", 30) is None
    store.set_typical_ids(7, "base-a", 30, [3, 1, 2])
    store.set_typical_ids(7, "ft-v1", 30, [5])
    store.set_typical_ids(7, "ft-v2", 10, [6])
    assert store.typical_ids(7, "base-a", 30) == [3, 1, 2] and store.typical_ids(7, "base-a", 10) is None
    assert store.drop_typical_except(7, {"base-a", "ft-v2"}) == 1
    assert store.typical_ids(7, "ft-v1", 30) is None and store.typical_ids(7, "ft-v2", 10) == [6]
    with pytest.raises(ValueError):
        store.typical_ids(7, "a:b", 30)
    store.set_fast_cv(7, {"c": 0.5, "labeled": 12, "classes": ["neg", "pos"], "feature_key": "base-a"})
    assert store.fast_cv(7) == {"c": 0.5, "labeled": 12, "classes": ["neg", "pos"], "feature_key": "base-a"}
    store.set_fast_status(7, {"status": "published"})
    assert store.get_project(7).fast_status["status"] == "published"


def test_replace_last_iteration_record(store):
    store.publish_version(7, "v1", 1, {"iteration": 1, "version": "v1"})
    store.publish_version(7, "v2", 2, {"iteration": 2, "version": "v2", "pushed": 0})
    record = IterationRecord(iteration=2, version="v2", previous_version="v1", pipeline="p", labeled=4, pool_size=9,
                             subset_size=9, scored_by_model=9, kept_stale=0, unscored=0, rescored_share=1.0,
                             full_rescore=True, pool_refreshed=False, chunks=1, pushed=9, seconds={"push": 0.1},
                             started_at=1.0, finished_at=2.0)
    store.replace_last_iteration_record(7, record)
    assert [r["version"] for r in store.iterations(7)] == ["v1", "v2"]
    assert store.last_iteration(7)["pushed"] == 9


def test_state_survives_a_new_store_instance(store, redis_url):
    store.put_scores(7, "v1", {1: ScoreEntry([], 0.5, 0.5)})
    store.publish_version(7, "v1", 1, {"iteration": 1})
    store.request_training(7, "job-a")
    fresh = ProjectStore(redis.Redis.from_url(redis_url, decode_responses=True), store.prefix)  # a restarted backend
    state = fresh.get_project(7)
    assert state.version == "v1" and state.queued_job == "job-a"
    assert fresh.get_scores(7, "v1", [1])[1].score == 0.5


def test_redis_down_gives_a_clear_error():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_connect_timeout=0.5)
        s = ProjectStore(client, "t")
        s.ping()
        server.stop()
        with pytest.raises(StoreUnavailableError, match=f"Redis at redis://127.0.0.1:{server.port}/0 is unreachable"):
            s.ping()


def test_a_task_the_order_shows_again_is_no_longer_an_audit(store):
    """Only a label given while the task is shown as an audit is an unbiased draw: once a later
    version's order shows it, a label it gets was chosen by uncertainty."""
    store.record_audits(7, [2, 3, 5], 10, "fast-1-x")
    store.record_audits(7, [4], 11, "fast-2-x", ordered_ids=[3, 9])
    assert store.audit_ids(7) == {2, 4, 5}
    store.record_audits(7, [], 12, "fast-3-x", ordered_ids=[2])
    assert store.audit_ids(7) == {4, 5}


def test_ground_truth_ids_are_replaced_by_each_read(store):
    assert store.ground_truth_ids(7) == set()
    store.set_ground_truth_ids(7, {3, 1})
    store.set_ground_truth_ids(7, [1, 8])
    assert store.ground_truth_ids(7) == {1, 8}
