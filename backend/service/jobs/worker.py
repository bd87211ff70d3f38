"""The RQ worker process: ``feasible-al worker`` runs `run_worker` on the backend's queues."""
from __future__ import annotations

import os
import socket

from rq import SimpleWorker, Worker

from backend.engine.device import quiet_transformers
from backend.service.runtime import QUEUE_KINDS, JobContext, set_context
from backend.service.settings import Settings


def run_worker(
    settings: Settings, kinds: tuple[str, ...] = QUEUE_KINDS, *, burst: bool = False, fork: bool = False,
    name: str | None = None,
) -> bool:
    """Run an RQ worker on the backend's queues. By default jobs run in the worker process itself
    (no fork per job): loaded checkpoints stay cached between chunk jobs and a CUDA context
    survives, which a fork would break. ``fork=True`` isolates each job in a child process."""
    quiet_transformers()
    ctx = JobContext.from_settings(settings)
    set_context(ctx)
    ctx.store.ping()
    worker_class = Worker if fork else SimpleWorker
    worker = worker_class(
        ctx.queues.all(kinds), connection=ctx.queues.connection,
        name=name or f"feasible-al-{socket.gethostname()}-{os.getpid()}",
    )
    return worker.work(burst=burst, logging_level="INFO")
