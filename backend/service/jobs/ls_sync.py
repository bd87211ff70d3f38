"""Label Studio's side of the project kept in step with the backend: the unlabeled pool cached in
Redis, one prediction per unlabeled task pushed in bulk when a fine-tune serves, and superseded
versions' predictions deleted off the path that makes a new order visible (LS deletes ~2.4 ms per
prediction)."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from rq.job import Job

from backend.labeling import LabelConfig, MissingTextFieldError, task_text
from backend.service.checkpoints import FAST_PREFIX, checkpoint_dir, prune_checkpoints
from backend.service.jobs.common import META_PROJECT, enqueue
from backend.service.ls_errors import LabelStudioError
from backend.service.records import ProjectState, ScoreEntry
from backend.service.runtime import JobContext, context

log = logging.getLogger(__name__)

PRUNE_JOB_TIMEOUT = 3600


def text_or_empty(task: dict[str, Any], config: LabelConfig) -> str:
    """The task's text, or "" when it has none (scored as "no text": it sorts last)."""
    try:
        return task_text(task, config)
    except MissingTextFieldError:
        return ""


def _stale_pool_reason(ctx: JobContext, state: ProjectState, config: LabelConfig, iteration: int) -> str | None:
    if not ctx.store.pool_exists(state.project_id):
        return "no cached pool"
    if state.pool_stale:
        return "events made the cached pool stale"
    if state.pool_value_key != config.value_key:
        return "the label config reads another task field"
    if iteration - state.pool_refreshed_iteration >= ctx.settings.pool_refresh_every:
        return "periodic refresh"
    return None


def sync_pool(
    ctx: JobContext, project_id: int, config: LabelConfig, labeled_ids: set[int], iteration: int
) -> tuple[list[int], bool]:
    """The unlabeled pool's ids (sorted), from the Redis cache when it can be trusted, else listed
    from Label Studio (listing 10k tasks takes seconds; the cache keeps it off most iterations).
    Returns (ids, whether it was listed anew)."""
    store = ctx.store
    state = store.get_project(project_id)
    assert state is not None
    reason = _stale_pool_reason(ctx, state, config, iteration)
    if reason is None:
        store.pool_remove(project_id, labeled_ids)
        ids = store.pool_ids(project_id)
        total = ctx.ls.count_tasks(project_id)
        if total == len(ids) + len(labeled_ids):
            return ids, False
        reason = f"Label Studio holds {total} tasks, the cache knows {len(ids)} unlabeled + {len(labeled_ids)} labeled"
    log.info("project %s: listing the unlabeled pool (%s)", project_id, reason)
    texts = {int(t["id"]): text_or_empty(t, config) for t in ctx.ls.unlabeled_tasks(project_id)
             if int(t["id"]) not in labeled_ids}
    store.pool_replace(project_id, texts, config.value_key, iteration)
    return sorted(texts), True


def push_predictions(ctx: JobContext, project_id: int, version: str, pool: list[int],
                     by_task: dict[int, str]) -> int:
    """One prediction per unlabeled task, in bulk; then LS's model_version. Returns how many were pushed."""
    predictions = []
    for task_id in pool:
        entry = ScoreEntry.from_json(by_task[task_id])
        predictions.append({"task": task_id, "result": entry.result, "score": entry.score, "model_version": version})
    batch = ctx.settings.push_batch_size
    pushed = ctx.ls.import_predictions(project_id, predictions, batch_size=batch) if predictions else 0
    ctx.ls.set_model_version(project_id, version)
    return int(pushed)


def prune_ls_versions(ctx: JobContext, project_id: int, keep: set[str]) -> dict[str, Any]:
    """Delete, in bulk, LS's predictions of the versions this backend published before `keep`
    (the serving one and the previous: a /predict racing the switch may still store the latter).
    Predictions of versions the backend never published (imported by hand, another backend) stay.
    Run after the new order is visible; never raises for LS errors (the iteration is done): the
    outcome is returned for the pipeline status and the log."""
    t0 = time.perf_counter()
    # never the serving or the previously serving version, whatever the caller kept; versions
    # published while this runs are not in the snapshot of ours, so they are never deleted
    keep = set(keep) | set(ctx.store.served_versions(project_id)[-2:]) | {ctx.store.current_version(project_id)}
    deleted: dict[str, int] = {}
    outcome: dict[str, Any] = {"deleted": deleted, "kept": sorted(keep)}
    try:
        ours = set(ctx.store.versions(project_id))
        for version in ctx.ls.model_versions(project_id):
            if version in ours and version not in keep:
                deleted[version] = ctx.ls.delete_model_version(project_id, version)
    except LabelStudioError as exc:
        outcome["error"] = str(exc)[:500]
        log.warning("project %s: could not delete superseded predictions in Label Studio: %s", project_id, exc)
    outcome["seconds"] = round(time.perf_counter() - t0, 3)
    return outcome


def request_prune(ctx: JobContext, project_id: int) -> None:
    """Queue one deletion of superseded predictions in LS (queue "scoring": off the fast path)."""
    job_id = f"prune-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    if ctx.store.claim(project_id, "prune-queued", job_id, PRUNE_JOB_TIMEOUT) is None:
        enqueue(ctx.queues.scoring, prune_ls_job, (int(project_id), job_id), job_id=job_id, timeout=PRUNE_JOB_TIMEOUT,
                meta={META_PROJECT: int(project_id)}, on_failure=on_prune_failure,
                description=f"delete superseded predictions, project {project_id}")


def prune_ls_job(project_id: int, job_id: str) -> dict[str, Any]:
    ctx = context()
    ctx.store.release(project_id, "prune-queued", job_id)
    outcome = prune_ls_versions(ctx, project_id, keep=set())
    # fast versions only: a fine-tune's folder may belong to an iteration still scoring the pool
    # (not yet published, so not in checkpoints_to_keep); publishing an iteration prunes those
    root = checkpoint_dir(ctx.settings.model_dir, project_id, "x").parent
    others = {p.name for p in root.iterdir() if not p.name.startswith(FAST_PREFIX)} if root.is_dir() else set()
    state = ctx.store.get_project(project_id)
    prune_checkpoints(ctx.settings.model_dir, project_id,
                      keep=ctx.store.checkpoints_to_keep(project_id, ctx.settings.keep_versions) | others,
                      published_fast_seq=state.fast_published_seq if state else 0)
    return outcome


def on_prune_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    context().store.release(int(job.meta[META_PROJECT]), "prune-queued", job.id)
