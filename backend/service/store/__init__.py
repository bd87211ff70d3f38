"""Per-project state in Redis: label config, serving version, cached scores, the unlabeled pool,
training-queue flags, iteration records, pipeline status, claims and locks. Survives a backend
restart; Label Studio stays the source of truth for annotations, so losing this state costs a
re-score, never a label.

Callers use one object, `ProjectStore`; it is assembled from one module per concern:

- `keys`: the complete key layout and project-hash fields (the table to read first), key builders
- `connection`: `connect_redis`, `REDIS_ERRORS`, `StoreUnavailableError`
- `scripts`: the Lua scripts (training flags, annotation counting, compare-and-delete / -set)
- `state`: registering a project's label config, the typed `ProjectState`, errors
- `training`: training dedupe flags and the annotation counter
- `versions`: iteration progress, publishing, iteration records, trained-on sets, checkpoints to keep
- `locks`: claims, the LS switch lock, the successor lock; `compare_and_delete` for every release
- `fastpath`: the fast update's claim, sequence numbers and its fields on the project hash
- `status`: pipeline status records
- `pool`: the cached pool and per-version scores
- `history`: what each published version measured (the learning curve)
- `signals`: audits, the stopping signal's state, the quality estimate, suspect labels
"""
from backend.service.records import RESULT_TTL, UNTRAINED, ProjectState, ScoreEntry, TrainingRequest
from backend.service.store.connection import REDIS_ERRORS, StoreUnavailableError, connect_redis
from backend.service.store.facade import ProjectStore
from backend.service.store.locks import compare_and_delete
from backend.service.store.pool import PoolAndScores
from backend.service.store.scripts import EVENT_TTL
from backend.service.store.versions import FAST_PREFIX, MAX_ITERATION_RECORDS, MAX_VERSIONS

__all__ = [
    "EVENT_TTL",
    "FAST_PREFIX",
    "MAX_ITERATION_RECORDS",
    "MAX_VERSIONS",
    "REDIS_ERRORS",
    "RESULT_TTL",
    "UNTRAINED",
    "PoolAndScores",
    "ProjectState",
    "ProjectStore",
    "ScoreEntry",
    "StoreUnavailableError",
    "TrainingRequest",
    "compare_and_delete",
    "connect_redis",
]
