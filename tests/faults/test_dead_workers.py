"""``kill -9`` of `feasible-al worker` during the train stage and during a scoring chunk, against
real processes: the dead job is declared dead within HEARTBEAT_TTL + JANITOR_INTERVAL (a few
seconds here, under a minute with the defaults), the error names the worker and the stage, the
old version keeps serving, the next training uses every annotation Label Studio holds, and a dead
scoring chunk runs again on another worker so the iteration completes."""
from __future__ import annotations

import signal
import time

import pytest
import redis
from rq.registry import StartedJobRegistry

from tests.faults.worker_stack import (  # noqa: F401 - fixtures
    HEARTBEAT_TTL,
    JANITOR_INTERVAL,
    annotate,
    fault_stack,
    ls,
    make_project,
)

pytestmark = pytest.mark.integration


def train(stack, ls, project) -> dict:
    before = stack.project(project.id)["iteration"]
    ls.start_training(project.backend_id)
    state = stack.wait_idle(project.id)
    assert state["iteration"] == before + 1 and not state["last_error"], f"{state}\n{stack.log_tail()}"
    return state


def test_a_worker_killed_during_training_is_declared_dead_and_the_next_training_runs(fault_stack, ls):
    stack = fault_stack
    project = make_project(ls, stack, pool=30, labeled=8)
    fast = stack.start_worker()
    v1 = train(stack, ls, project)["version"]
    stack.stop_workers()
    assert not fast.alive

    annotate(ls, project, 2)
    slow = stack.start_worker(EPOCHS="3000")  # stays in the train stage until killed
    ls.start_training(project.backend_id)
    job = stack.wait_stage(project.id, {"train"})
    time.sleep(1.0)  # a heartbeat or two
    slow.signal(signal.SIGKILL)
    killed = time.monotonic()
    stack.start_worker()  # a replacement (what a supervisor does)

    def declared():
        state = stack.project(project.id)
        return state if state["last_error"] and not state["running_job"] else None

    state = stack.wait("the dead training declared dead", declared, timeout=60, every=0.2)
    detect = time.monotonic() - killed
    print(f"\nkilled worker detected in {detect:.1f} s (HEARTBEAT_TTL={HEARTBEAT_TTL}, "
          f"JANITOR_INTERVAL={JANITOR_INTERVAL})")
    assert detect < HEARTBEAT_TTL + 2 * JANITOR_INTERVAL + 5
    assert f"worker {slow.name} stopped during stage train" in state["last_error"]
    assert state["last_error_job"] == job["id"] and state["version"] == v1  # the old version serves
    described = stack.get(f"/jobs/{job['id']}").json()
    assert described["status"] == "failed" and described["error"] == state["last_error"]
    assert stack.post("/setup", json={"project": f"{project.id}.0", "schema": ls.get_project(project.id)[
        "label_config"]}).json() == {"model_version": v1}

    second = train(stack, ls, project)  # the next Start training proceeds at once
    assert second["version"] != v1 and second["last_iteration"]["labeled"] == project.labeled == 10
    stack.stop_workers()


def _holds_a_chunk(stack, worker) -> bool:
    """Whether `worker` is running a scoring chunk (RQ's started registry, read directly)."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        key = StartedJobRegistry(f"{stack.env['KEY_PREFIX']}-scoring", connection=client).key
        ids = [m.decode().split(":", 1)[0] for m in client.zrange(key, 0, -1)]
        return any((client.hget(f"rq:job:{i}", "worker_name") or b"").decode() == worker.name for i in ids)
    finally:
        client.close()


def test_a_scoring_chunk_whose_worker_died_runs_again_and_the_iteration_completes(fault_stack, ls):
    stack = fault_stack
    project = make_project(ls, stack, pool=200, labeled=8)
    trainer = stack.start_worker("training")
    scorer = stack.start_worker("scoring", INFERENCE_BATCH_SIZE="1", SCORE_CHUNK_SIZE="8")
    ls.start_training(project.backend_id)
    stack.wait_stage(project.id, {"score"})
    deadline = time.monotonic() + 60
    while True:  # freeze the scorer; kill it once it is caught inside a chunk
        scorer.signal(signal.SIGSTOP)
        if _holds_a_chunk(stack, scorer):
            break
        scorer.signal(signal.SIGCONT)
        assert time.monotonic() < deadline, f"the scorer never held a chunk\n{stack.log_tail()}"
        time.sleep(0.05)
    scorer.signal(signal.SIGKILL)
    stack.start_worker("scoring")
    state = stack.wait_idle(project.id)
    record = state["last_iteration"]
    assert not state["last_error"] and state["iteration"] == 1, f"{state}\n{stack.log_tail()}"
    assert record["scored_by_model"] == record["subset_size"] == record["pool_size"] == 192
    assert record["pushed"] == 192 and trainer.alive
    stack.stop_workers()


def test_a_job_whose_worker_was_killed_reads_as_dead_while_no_worker_is_alive(fault_stack, ls):
    """No replacement worker: the janitor runs on GET /projects/<id> itself, so the page and the
    JSON say failed (not running) within HEARTBEAT_TTL plus a request, and that no worker serves
    the queues."""
    stack = fault_stack
    project = make_project(ls, stack, pool=30, labeled=8)
    slow = stack.start_worker(EPOCHS="3000")
    ls.start_training(project.backend_id)
    job = stack.wait_stage(project.id, {"train"})
    assert stack.project(project.id)["workers"]["alive"] >= 1
    slow.signal(signal.SIGKILL)
    killed = time.monotonic()

    def declared():
        state = stack.project(project.id)
        return state if state["last_error"] and not state["running_job"] else None

    def none_alive():  # an earlier test's stopped worker reads alive until its heartbeat expires
        state = stack.project(project.id)
        return state if state["workers"]["alive"] == 0 else None

    state = stack.wait("the dead training declared dead without any worker", declared, timeout=60, every=0.5)
    print(f"\nkilled worker, none alive: declared dead in {time.monotonic() - killed:.1f} s")
    assert state["last_error_job"] == job["id"] and f"worker {slow.name}" in state["last_error"]
    workers = stack.wait("no worker alive", none_alive, timeout=30, every=0.5)["workers"]
    assert set(workers["unserved_queues"]) == {"fast", "scoring", "training", "successor"}
    assert stack.get(f"/jobs/{job['id']}").json()["status"] == "failed"
