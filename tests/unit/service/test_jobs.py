"""RQ jobs with a real Redis and real RQ workers (in-process `SimpleWorker`, burst mode).

Label Studio is not running here: its URL points at a closed port, which is how the failure
paths are exercised for real. The full pipeline against a real Label Studio is in
tests/integration/test_backend_e2e.py.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from rq import SimpleWorker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry

from backend.service.jobs.common import describe_job
from backend.service.jobs.iteration import enqueue_scoring, request_training
from backend.service.jobs.stages import new_version
from backend.service.ls_client import LabelStudioClient
from backend.service.records import IterationInfo
from backend.service.runtime import JobContext, set_context
from backend.service.store import ScoreEntry
from tests.helpers.backend import make_settings, publish_checkpoint, sentiment_tasks
from tests.helpers.servers import free_port

PID = 7


@pytest.fixture
def ctx(redis_url, tmp_path, tiny_bert):
    settings = make_settings(redis_url, tmp_path, tiny_bert, label_studio_url=f"http://127.0.0.1:{free_port()}",
                             label_studio_api_key="test-token", label_studio_timeout=2.0, score_chunk_size=4,
                             janitor_interval=1.0)  # the janitor confirms an expiry 2 s after it first saw it
    context = JobContext.from_settings(settings)
    set_context(context)
    yield context
    set_context(None)


def work(ctx: JobContext) -> None:
    SimpleWorker(ctx.queues.all(), connection=ctx.queues.connection).work(burst=True)


def failed_ids(ctx: JobContext) -> set[str]:
    ids: set[str] = set()
    for q in ctx.queues.all():
        ids |= set(FailedJobRegistry(queue=q).get_job_ids())
    return ids


def test_score_chunks_store_results_and_count_model_calls(ctx):
    publish_checkpoint(ctx.settings, ctx.store, PID, "acq-1-a")
    tasks = sentiment_tasks(10, start_id=1)
    ctx.store.pool_replace(PID, {t["id"]: t["data"]["text"] for t in tasks}, "text", 1)
    ctx.store.start_iteration(PID, IterationInfo(iteration=2, version="acq-1-a", value_key="text", subset_size=6,
                                                 pipeline="p", chunks=2), [t["id"] for t in tasks])
    ctx.store.begin_training(PID, "p")
    chunk_jobs, finisher = enqueue_scoring(ctx, PID, "p", "acq-1-a", [1, 2, 3, 5, 8, 9])
    assert len(chunk_jobs) == 2  # SCORE_CHUNK_SIZE=4
    assert finisher.get_status() == JobStatus.DEFERRED
    for job in chunk_jobs:  # run only the chunks: the finisher needs Label Studio
        job.perform()
    info = ctx.store.iteration_info(PID, "acq-1-a")
    assert info.scored == 6 and info.chunks_done == 2 and info.inference_seconds > 0
    scores = ctx.store.get_scores(PID, "acq-1-a", [t["id"] for t in tasks])
    assert sorted(scores) == [1, 2, 3, 5, 8, 9]
    for entry in scores.values():
        assert entry.result[0]["value"]["choices"] and 0 < entry.score <= 1
        assert entry.uncertainty == pytest.approx(1 - entry.score)  # least confidence
    assert ctx.store.get_project(PID).model_scored_total == 6


def test_failed_training_keeps_the_previous_model_and_records_the_error(ctx):
    publish_checkpoint(ctx.settings, ctx.store, PID, "acq-1-a")
    req = request_training(ctx, PID, "test")
    assert req.outcome == "enqueue"
    work(ctx)
    state = ctx.store.get_project(PID)
    assert state.version == "acq-1-a" and state.iteration == 1  # still serving
    assert state.running_job is None and state.queued_job is None
    assert "unreachable" in state.last_error and state.last_error_job == req.job_id
    described = describe_job(ctx, req.job_id)
    assert described["status"] == "failed" and described["pipeline_status"] == "failed"
    assert described["stage"] == "fetch" and "unreachable" in described["error"]
    body = ctx.metrics.render(ctx.store, ctx.queues.all()).decode()
    assert f'job="{req.job_id}"' in body and "unreachable" in body
    assert 'feasible_al_jobs_total{job="train_acquisition",outcome="failed"} 1.0' in body
    assert (ctx.settings.model_dir / str(PID) / "acq-1-a").is_dir()


@contextlib.contextmanager
def unresponsive_server():
    """A port that accepts connections and never answers: a Label Studio that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_events_during_a_run_cause_exactly_one_more_run(ctx):
    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    with unresponsive_server() as url:
        ctx.label_studio = LabelStudioClient(url, "test-token", timeout=1.0, max_retries=0)
        first = request_training(ctx, PID, "test")
        outcomes: list[str] = []

        def annotate_while_it_runs() -> None:
            deadline = time.monotonic() + 30
            while ctx.store.get_project(PID).running_job != first.job_id and time.monotonic() < deadline:
                time.sleep(0.01)
            outcomes.extend(request_training(ctx, PID, "test").outcome for _ in range(5))

        annotator = threading.Thread(target=annotate_while_it_runs)
        annotator.start()
        work(ctx)  # run 1 hangs on LS until its timeout and fails; the events cause exactly one rerun
        annotator.join()
    assert outcomes == ["deferred"] * 5
    failed = failed_ids(ctx)
    assert first.job_id in failed and len(failed) == 2
    state = ctx.store.get_project(PID)
    assert state.running_job is None and state.queued_job is None and not state.dirty
    assert ctx.queues.training.count == 0
    assert "timed out" in state.last_error


def test_stale_flags_from_lost_jobs_are_repaired(ctx):
    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    assert ctx.store.request_training(PID, "ghost-queued").outcome == "enqueue"  # never reached RQ
    req = request_training(ctx, PID, "test")
    assert req.outcome == "enqueue" and req.job_id != "ghost-queued"
    ctx.store.clear_job_field(PID, "queued_job", req.job_id)
    ctx.queues.training.empty()
    ctx.store.begin_training(PID, "ghost-running")  # a worker killed without its failure callback
    again = request_training(ctx, PID, "test")
    assert again.outcome == "enqueue"
    assert "ghost-running" in ctx.store.get_project(PID).last_error


def test_a_finisher_ready_to_enqueue_keeps_its_pipeline_running(ctx):
    """RQ 3 moves a dependent whose dependencies finished through READY_TO_ENQUEUE before QUEUED;
    the janitor (GET /projects/<id> runs it) must read that as live, not end the pipeline."""
    from backend.service.jobs.janitor import repair_stale_flags

    ready = getattr(JobStatus, "READY_TO_ENQUEUE", None)
    if ready is None:
        pytest.skip("this RQ has no READY_TO_ENQUEUE state")
    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    ctx.store.begin_training(PID, "p")
    finisher = ctx.queues.scoring.enqueue_call(time.sleep, args=(0,), job_id="p-finish")
    finisher.set_status(ready)
    ctx.store.set_stage_job(PID, "p", finisher.id)
    repair_stale_flags(ctx, PID)
    state = ctx.store.get_project(PID)
    assert state.running_job == "p" and not state.last_error


def test_a_failed_chunk_cancels_the_finisher_and_releases_the_project(ctx):
    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    req = request_training(ctx, PID, "test")
    ctx.queues.training.remove(req.job_id)  # run the later stages by hand: the checkpoint does not exist
    ctx.store.begin_training(PID, req.job_id)
    ctx.store.pool_replace(PID, {1: "a", 2: "b"}, "text", 1)
    ctx.store.start_iteration(PID, IterationInfo(iteration=1, version="acq-1-missing", value_key="text",
                                                 pipeline=req.job_id), [1, 2])
    chunk_jobs, finisher = enqueue_scoring(ctx, PID, req.job_id, "acq-1-missing", [1, 2])
    ctx.store.set_stage_job(PID, req.job_id, finisher.id)
    work(ctx)
    assert chunk_jobs[0].get_status() == JobStatus.FAILED
    assert finisher.get_status() == JobStatus.CANCELED
    state = ctx.store.get_project(PID)
    assert state.running_job is None and state.version == "untrained"
    assert "CheckpointMissingError" in state.last_error and "MODEL_DIR" in state.last_error
    assert describe_job(ctx, req.job_id)["pipeline_status"] == "failed"


def test_a_stale_score_entry_round_trips_through_the_finisher_format():
    entry = ScoreEntry([{"value": {"choices": ["Positive"]}}], 0.75, 0.25)
    assert ScoreEntry.from_json(entry.to_json()) == entry


def test_new_versions_are_unique_and_name_the_iteration():
    versions = {new_version(3) for _ in range(50)}
    assert len(versions) == 50 and all(v.startswith("acq-3-") for v in versions)


def test_worker_command_runs_in_burst_mode(redis_url, tmp_path):
    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": "cli-test", "MODEL_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "backend.cli", "worker", "--burst"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cli-test-scoring" in done.stderr


# ------------------------------------------------------------------ dead workers (the janitor)


def start_and_abandon(ctx: JobContext, queue, job_id: str, ttl: int = 3) -> str:
    """What a worker does before it runs a job, and nothing after: as if it were killed -9.
    Returns the worker's name."""
    from backend.service.jobs.worker import ResilientSimpleWorker

    worker = ResilientSimpleWorker([queue], connection=ctx.queues.connection, name=f"doomed-{job_id[-6:]}")
    worker.heartbeat_ttl = ttl
    job = ctx.queues.fetch(job_id)
    queue.remove(job)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return worker.name


def reap_after_confirmation(ctx: JobContext) -> int:
    """Two janitor passes, `confirmation_delay` apart: the first only notes what expired."""
    from backend.service.jobs.janitor import confirmation_delay, reap_dead_jobs

    assert reap_dead_jobs(ctx) == 0
    time.sleep(confirmation_delay(ctx.settings) + 0.1)
    return reap_dead_jobs(ctx)


def test_a_training_whose_worker_died_is_declared_dead_after_the_heartbeat_ttl(ctx):
    from backend.service.jobs.janitor import reap_dead_jobs

    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    req = request_training(ctx, PID, "test")
    ctx.store.begin_training(PID, req.job_id)
    ctx.store.update_status(req.job_id, stage="train", status="running")
    name = start_and_abandon(ctx, ctx.queues.training, req.job_id, ttl=3)
    assert reap_dead_jobs(ctx) == 0  # heartbeat still fresh
    assert request_training(ctx, PID, "test").outcome == "deferred"
    time.sleep(3.5)
    assert reap_after_confirmation(ctx) == 1
    state = ctx.store.get_project(PID)
    assert state.running_job is None and state.last_error_job == req.job_id
    assert state.last_error.startswith(f"worker {name} stopped during stage train")
    described = describe_job(ctx, req.job_id)
    assert described["status"] == "failed" and described["error"] == state.last_error
    # the deferred request above marked the project dirty: the rerun is already queued
    assert ctx.queues.training.count == 1 and state.queued_job


def test_a_heartbeat_renewed_after_a_redis_freeze_is_not_declared_dead(ctx):
    """After Redis froze past the TTL every heartbeat reads expired when it answers again; a janitor
    that runs first (the web process's, on GET /projects/<id>) must leave the live worker's job alone
    once the worker renews its heartbeat, so the job ends with its own error, not "worker stopped"."""
    from backend.service.jobs.janitor import confirmation_delay, reap_dead_jobs

    ctx.store.register_project(PID, "<View/>", "c", "text", "classification")
    req = request_training(ctx, PID, "test")
    ctx.store.begin_training(PID, req.job_id)
    start_and_abandon(ctx, ctx.queues.training, req.job_id, ttl=1)
    time.sleep(1.5)  # the "freeze": no heartbeat past the TTL
    assert reap_dead_jobs(ctx) == 0  # first sighting
    registry, conn = ctx.queues.training.started_job_registry, ctx.queues.connection
    # the worker's heartbeat thread renews it (as `maintain_heartbeats` does: the execution's score moves on)
    conn.zadd(registry.key, {member: time.time() + 30 for member in conn.zrange(registry.key, 0, -1)}, xx=True)
    time.sleep(confirmation_delay(ctx.settings) + 0.1)
    assert reap_dead_jobs(ctx) == 0
    assert ctx.queues.fetch(req.job_id).get_status() == JobStatus.STARTED
    assert ctx.store.get_project(PID).running_job == req.job_id and not ctx.store.get_project(PID).last_error
    assert not ctx.queues.connection.hgetall(ctx.store.janitor_sightings_key())  # the sighting is forgotten


def test_a_scoring_chunk_whose_worker_died_runs_again_and_the_pipeline_goes_on(ctx):
    publish_checkpoint(ctx.settings, ctx.store, PID, "acq-1-a")
    tasks = sentiment_tasks(6, start_id=1)
    ctx.store.pool_replace(PID, {t["id"]: t["data"]["text"] for t in tasks}, "text", 1)
    ctx.store.start_iteration(PID, IterationInfo(iteration=2, version="acq-1-a", value_key="text", subset_size=6,
                                                 pipeline="p", chunks=2), [t["id"] for t in tasks])
    ctx.store.begin_training(PID, "p")
    chunk_jobs, finisher = enqueue_scoring(ctx, PID, "p", "acq-1-a", [1, 2, 3, 4, 5, 6])
    ctx.store.set_stage_job(PID, "p", finisher.id)
    start_and_abandon(ctx, ctx.queues.scoring, chunk_jobs[0].id, ttl=3)
    time.sleep(3.5)
    assert reap_after_confirmation(ctx) == 1
    assert chunk_jobs[0].get_status() == JobStatus.QUEUED  # retried, not failed
    assert ctx.store.get_project(PID).running_job == "p" and not ctx.store.get_project(PID).last_error
    for job in chunk_jobs:
        ctx.queues.fetch(job.id).perform()
    assert ctx.store.iteration_info(PID, "acq-1-a").scored == 6
