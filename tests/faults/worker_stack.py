"""Fixtures for the worker-fault tests: a private redis-server (the tests stop, freeze and restart
it), the session's real Label Studio, gunicorn, and `feasible-al worker` processes the tests start,
``kill -9``, SIGSTOP and restart themselves. Short HEARTBEAT_TTL / JANITOR_INTERVAL keep the run short.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from backend.harness.processes import REPO_ROOT, BackendProcesses, RedisServer, stop_process_group, tail
from tests.helpers.backend import CLASSIFICATION_XML, SENTIMENT
from tests.helpers.ls_admin import LabelStudioTestClient
from tests.helpers.polling import poll_until
from tests.helpers.toy_data import toy_classification

HEARTBEAT_TTL = int(os.environ.get("FAULTS_HEARTBEAT_TTL", "5"))
JANITOR_INTERVAL = float(os.environ.get("FAULTS_JANITOR_INTERVAL", "2"))


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def log_tail(self) -> str:
        return tail(self.log, 3000)


@dataclass
class FaultStack:
    """gunicorn on `url`, the Redis it uses, and the workers a test starts."""

    url: str
    env: dict[str, str]
    redis: RedisServer
    web: BackendProcesses
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def get(self, path: str, **kw) -> requests.Response:
        r = requests.get(f"{self.url}{path}", timeout=30, **kw)
        assert r.status_code < 500, f"GET {path}: {r.status_code} {r.text}"
        return r

    def post(self, path: str, **kw) -> requests.Response:
        r = requests.post(f"{self.url}{path}", timeout=60, **kw)
        assert r.status_code < 500, f"POST {path}: {r.status_code} {r.text}"
        return r

    def start_worker(self, *queues: str, **env: str) -> WorkerProcess:
        name = f"faults-{secrets.token_hex(3)}"
        log = self.log_dir / f"{name}.log"
        args = [sys.executable, "-m", "backend.cli", "worker", "--name", name]
        if queues:
            args += ["--queues", *queues]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=REPO_ROOT, env={**self.env, **env}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(name, proc, log)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            stop_process_group(worker.proc, grace=10)
        self.workers = []

    def log_tail(self) -> str:
        return self.web.log_tail(2000) + "".join(f"\n--- {w.name}\n{w.log_tail()}" for w in self.workers)

    def project(self, pid: int) -> dict:
        return self.get(f"/projects/{pid}").json()

    def wait(self, what: str, check, timeout: float = 180, every: float = 0.3):
        return poll_until(check, timeout, what, self.log_tail, every)

    def wait_idle(self, pid: int, timeout: float = 240) -> dict:
        def idle():
            state = self.project(pid)
            return state if not state["running_job"] and not state["queued_job"] else None
        return self.wait(f"project {pid} idle", idle, timeout)

    def wait_stage(self, pid: int, stages: set[str], timeout: float = 180) -> dict:
        def at_stage():
            job_id = self.project(pid)["running_job"]
            if job_id:
                job = self.get(f"/jobs/{job_id}").json()
                return job if job.get("stage") in stages else None
            return None
        return self.wait(f"project {pid} at stage {stages}", at_stage, timeout, every=0.1)


@pytest.fixture(scope="module")
def fault_stack(label_studio, tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-workers")
    with RedisServer() as redis_server:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token,
            "LABEL_STUDIO_TIMEOUT": "10",
            "REDIS_URL": redis_server.url, "KEY_PREFIX": f"faults-{secrets.token_hex(3)}",
            "MODEL_DIR": str(root / "models"), "ACQUISITION_MODEL": str(tiny_bert), "DEVICE": "cpu",
            "EPOCHS": "2", "LEARNING_RATE": "0.001", "TRAIN_EVERY_N": "0", "FULL_RESCORE_ITERATIONS": "1",
            "SCORE_CHUNK_SIZE": "8", "WORKERS": "1", "THREADS": "4", "TORCH_THREADS": "1",
            "HEARTBEAT_TTL": str(HEARTBEAT_TTL), "JANITOR_INTERVAL": str(JANITOR_INTERVAL),
            # these faults hit the full pipeline and assert which version serves after it fails;
            # the fast path's own failures are tests/unit/service/test_fast_path.py's
            "FAST_PATH": "off",
        }
        web = BackendProcesses(env, root, startup_timeout=120)
        web.start()
        stop_process_group(web._procs[1])  # the stack's own worker: the tests start theirs
        stack = FaultStack(web.url, env, redis_server, web, root)
        try:
            yield stack
        finally:
            stack.stop_workers()
            web.stop()


@pytest.fixture(scope="module")
def ls(label_studio):
    return LabelStudioTestClient(label_studio.url, label_studio.token)


@dataclass
class Project:
    id: int
    backend_id: int
    task_ids: list[int]
    results: list[list[dict]]
    labeled: int = 0


def make_project(ls: LabelStudioTestClient, stack: FaultStack, pool: int, labeled: int) -> Project:
    examples = toy_classification(pool, seed=5)
    results = [[{"from_name": "sentiment", "to_name": "text", "type": "choices",
                 "value": {"choices": [SENTIMENT[ex.labels[0]]]}}] for ex in examples]
    pid = ls.create_project(f"faults-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    ids = ls.import_tasks(pid, [{"text": ex.text} for ex in examples])
    backend = ls.connect_ml_backend(pid, stack.url, "feasible-al")
    project = Project(pid, backend.id, ids, results)
    annotate(ls, project, labeled)
    return project


def annotate(ls: LabelStudioTestClient, project: Project, n: int) -> None:
    for i in range(project.labeled, project.labeled + n):
        ls.create_annotation(project.task_ids[i], project.results[i])
    project.labeled += n
