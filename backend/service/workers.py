"""Which RQ workers are alive and which of the backend's queues they serve, for ``GET
/projects/<id>`` and the project manager's page: a job queued on a queue no live worker serves
waits forever, and the page says so."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rq import Worker

from backend.service.runtime import QUEUE_KINDS, JobQueues


@dataclass(frozen=True)
class WorkerView:
    name: str
    queues: tuple[str, ...]  # the backend's queue kinds it serves ("fast", "scoring", ...)
    state: str  # RQ's: "busy", "idle", "suspended", ...
    current_job: str | None
    seconds_since_heartbeat: float | None


@dataclass(frozen=True)
class WorkersView:
    alive: tuple[WorkerView, ...]
    unserved: tuple[str, ...]  # queue kinds no live worker serves
    queued: dict[str, int]  # jobs waiting per queue kind

    def to_dict(self) -> dict[str, Any]:
        return {"alive": len(self.alive), "workers": [asdict(w) for w in self.alive],
                "unserved_queues": list(self.unserved), "queued": self.queued}


def workers_view(queues: JobQueues, stale_after: float) -> WorkersView:
    """The workers serving our queues whose last heartbeat is at most `stale_after` seconds old
    (HEARTBEAT_TTL: the backend's workers beat every third of it, busy or idle; RQ itself keeps a
    killed worker's record for minutes)."""
    kind_of = {q.name: kind for kind, q in zip(QUEUE_KINDS, queues.all(), strict=True)}
    alive = []
    now = datetime.now(UTC)
    for worker in Worker.all(connection=queues.connection):
        kinds = tuple(kind_of[name] for name in worker.queue_names() if name in kind_of)
        beat = worker.last_heartbeat
        age = (now - beat.replace(tzinfo=beat.tzinfo or UTC)).total_seconds() if beat is not None else None
        if kinds and age is not None and age <= stale_after:
            alive.append(WorkerView(worker.name, kinds, str(worker.get_state()), worker.get_current_job_id(),
                                    round(age, 1)))
    served = {kind for w in alive for kind in w.queues}
    return WorkersView(tuple(alive), tuple(k for k in QUEUE_KINDS if k not in served),
                       {kind: q.count for kind, q in zip(QUEUE_KINDS, queues.all(), strict=True)})
