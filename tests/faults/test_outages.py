"""Workers that outlive Redis outages: Redis killed and restarted (empty: no persistence) or
frozen (SIGSTOP/SIGCONT) during a pipeline and while idle. The worker process stays alive,
reconnects with backoff and takes the next job; a job the outage interrupted ends failed with an
error (or is retried), never left "running"."""
from __future__ import annotations

import signal
import time

import pytest

from tests.faults.worker_stack import annotate, fault_stack, ls, make_project  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def train(stack, ls, project) -> dict:
    before = stack.project(project.id)
    ls.start_training(project.backend_id)
    state = stack.wait_idle(project.id)
    assert state["iteration"] == before["iteration"] + 1 and not state["last_error"], f"{state}\n{stack.log_tail()}"
    return state


def settled(stack, project, job_id: str) -> dict:
    """The interrupted pipeline ended (finished or failed, never left running); the job."""
    def done():
        job = stack.get(f"/jobs/{job_id}").json()
        state = stack.project(project.id)
        if job.get("status") in ("finished", "failed") and not state["running_job"]:
            return job
        return None
    return stack.wait(f"job {job_id} settled", done, timeout=120)


def test_worker_survives_redis_restarts_during_a_pipeline_and_while_idle(fault_stack, ls):
    stack = fault_stack
    worker = stack.start_worker(EPOCHS="400")
    project = make_project(ls, stack, pool=30, labeled=8)
    ls.start_training(project.backend_id)
    stack.wait_stage(project.id, {"train"})
    stack.redis.restart()  # during the pipeline: Redis comes back empty
    time.sleep(3)
    assert worker.alive, worker.log_tail()
    stack.redis.restart()  # while idle (the job was lost with the data)
    time.sleep(3)
    assert worker.alive, worker.log_tail()
    stack.stop_workers()
    # Redis came back empty: Label Studio's next /setup (it calls it on every project page) registers it again
    xml = ls.get_project(project.id)["label_config"]
    assert stack.post("/setup", json={"project": f"{project.id}.0", "schema": xml}).status_code == 200
    fast = stack.start_worker()
    state = train(stack, ls, project)
    assert state["last_iteration"]["labeled"] == project.labeled and fast.alive
    stack.stop_workers()


def test_worker_survives_a_frozen_redis_during_a_pipeline_and_while_idle(fault_stack, ls):
    stack = fault_stack
    worker = stack.start_worker(EPOCHS="400")  # the training outlasts the freeze
    project = make_project(ls, stack, pool=30, labeled=8)
    ls.start_training(project.backend_id)
    job = stack.wait_stage(project.id, {"train"})
    stack.redis._proc.send_signal(signal.SIGSTOP)  # frozen past the worker's 10 s socket timeout
    time.sleep(12)
    stack.redis._proc.send_signal(signal.SIGCONT)
    # The training writes its progress every second (the worker's Redis client does not retry): the
    # first write after the freeze starts waits out the 10 s socket timeout while Redis is still
    # frozen, so the training fails in its stage, with the error recorded (the heartbeat thread renews
    # the job's heartbeat before it reaps, so the janitor does not declare it lost first).
    job = settled(stack, project, job["id"])
    assert job["status"] == "failed" and job["stage"] == "train", job
    assert job["error"].startswith("train failed: TimeoutError"), job
    assert worker.alive, worker.log_tail()
    stack.redis._proc.send_signal(signal.SIGSTOP)  # while idle
    time.sleep(6)
    stack.redis._proc.send_signal(signal.SIGCONT)
    time.sleep(2)
    assert worker.alive, worker.log_tail()
    stack.stop_workers()
    stack.start_worker()
    annotate(ls, project, 2)
    state = train(stack, ls, project)
    assert state["last_iteration"]["labeled"] == project.labeled
    stack.stop_workers()
