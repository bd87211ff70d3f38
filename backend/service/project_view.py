"""What ``GET /projects/<id>`` and the project manager's page show: the project's state, with dead
jobs declared first (the janitor runs here too, so a job whose worker was killed reads as failed
within HEARTBEAT_TTL + a request even while no worker is alive), and the workers that serve it."""
from __future__ import annotations

import logging
from typing import Any

import redis

from backend.service.jobs.janitor import reap_dead_jobs
from backend.service.runtime import Backend
from backend.service.workers import workers_view

log = logging.getLogger(__name__)


def project_view(backend: Backend, project_id: int) -> dict[str, Any]:
    try:
        reap_dead_jobs(backend, [project_id])
    except redis.exceptions.RedisError as exc:  # the read below reports Redis being down
        log.warning("janitor on read: %s", exc)
    state = backend.store.get_project(project_id)
    store = backend.store
    out: dict[str, Any] = state.public() if state is not None else {"project": project_id}
    out["pool_size"] = store.pool_size(project_id)
    out["versions"] = store.versions(project_id)
    out["last_iteration"] = store.last_iteration(project_id)
    out["workers"] = workers_view(backend.queues, backend.settings.heartbeat_ttl).to_dict()
    # the project manager's signals (`backend.service.jobs.signals`)
    out["quality"] = store.quality_estimate(project_id)
    out["stopping"] = ((state.fast_status or {}).get("stopping") if state is not None else None) or None
    out["suspects"] = store.suspects(project_id)
    return out
