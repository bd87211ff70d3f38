"""What a fast update leaves for the "scoring" queue, off the path that makes the new order visible:

    extend_fast_version   the rest of the top K's predictions, after LS switched to the version
    cross_validate_job    the proxy head's CV estimate when due (up to 5 fits)
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import redis
from rq import get_current_job
from rq.job import Job

from backend.engine.errors import NotEnoughLabelsError
from backend.engine.proxy import HeadEstimate, ProxyHead
from backend.engine.selection import ModelEstimate
from backend.labeling import parse_label_config
from backend.service.jobs.common import META_PROJECT, enqueue
from backend.service.jobs.signals import classification_quality, classification_suspects
from backend.service.ls_errors import LabelStudioError
from backend.service.runtime import JobContext, context

log = logging.getLogger(__name__)

FOLLOWUP_JOB_TIMEOUT = 600
CV_REFRESH_GROWTH = 1.2  # the CV reruns once the labels grew by 20% (cheap early, rare later)


# ------------------------------------------------------------------------------ the rest of the top-K


def request_extend(ctx: JobContext, project_id: int, version: str, predictions: list[dict[str, Any]]) -> None:
    """Queue the creation of a fast version's predictions past the first pushed (queue "scoring")."""
    enqueue(ctx.queues.scoring, extend_fast_version, (int(project_id), version, predictions),
            timeout=FOLLOWUP_JOB_TIMEOUT, meta={META_PROJECT: int(project_id)}, on_failure=on_extend_failure,
            description=f"{len(predictions)} more predictions of {version}, project {project_id}")


def extend_fast_version(project_id: int, version: str, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Create them while `version` still serves (Uncertainty sampling then has FAST_TOP_K tasks
    to hand out); once a newer version serves they are moot and skipped."""
    ctx = context()
    state = ctx.store.get_project(project_id)
    if state is None or state.version != version:
        return {"created": 0, "skipped": f"{version} no longer serves"}
    try:
        # one at a time: LS serves requests one by one, so /next waits behind at most one of these
        return {"created": ctx.ls.create_predictions(predictions, workers=1)}
    except LabelStudioError as exc:  # the first ones serve meanwhile; the next update pushes anew
        log.warning("project %s: the rest of %s not pushed: %s", project_id, version, exc)
        return {"created": 0, "error": str(exc)[:500]}


def on_extend_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    log.warning("project %s: %s failed: %s", job.meta.get(META_PROJECT), job.description, exc_value)


# ------------------------------------------------------------------------------ the proxy head's CV


@dataclass(frozen=True)
class CvPlan:
    """The last CV's estimate (None before the first) and whether a new CV is due."""

    last: HeadEstimate | None
    due: bool


def cv_plan(ctx: JobContext, project_id: int, y: list[list[str]], feature_key: str) -> CvPlan:
    """Due when there is none, the classes seen or the features changed, or the labels grew by
    CV_REFRESH_GROWTH since; between, the fast versions report the last one's estimate."""
    prev = ctx.store.fast_cv(project_id)
    last = HeadEstimate(prev.get("cv_accuracy"), int(prev.get("folds", 0)), float(prev["c"])) \
        if prev and prev.get("c") is not None else None
    classes = sorted({label for row in y for label in row})
    if last is None or prev is None or prev.get("classes") != classes \
            or prev.get("feature_key", feature_key) != feature_key:
        return CvPlan(last, True)
    return CvPlan(last, len(y) >= CV_REFRESH_GROWTH * int(prev.get("labeled", 0)))


def request_cv(ctx: JobContext, project_id: int, feature_key: str, task_ids: list[int], y: list[list[str]]) -> None:
    """Queue the CV estimate (queue "scoring"; at most one queued per project): up to 5 fits, which
    on a loaded 2-core machine would otherwise hold up the next fast update."""
    job_id = f"cv-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    if ctx.store.claim(project_id, "cv-queued", job_id, FOLLOWUP_JOB_TIMEOUT) is None:
        enqueue(ctx.queues.scoring, cross_validate_job, (int(project_id), feature_key, task_ids, y), job_id=job_id,
                timeout=FOLLOWUP_JOB_TIMEOUT, meta={META_PROJECT: int(project_id)}, on_failure=on_cv_failure,
                description=f"proxy head CV on {len(y)} labels, project {project_id}")


def cross_validate_job(project_id: int, feature_key: str, task_ids: list[int], y: list[list[str]]) -> dict[str, Any]:
    """The proxy head's CV accuracy on these labels: recorded as the estimate later fast updates
    report, and as the proxy's estimate in the serving decision while the proxy serves; then the
    audit-based quality estimate and the suspect labels (`signals`)."""
    ctx = context()
    job = get_current_job()
    if job is not None:
        ctx.store.release(project_id, "cv-queued", job.id)
    state = ctx.store.get_project(project_id)
    if state is None:
        return {"skipped": "unknown project"}
    config = parse_label_config(state.label_config, state.control_name or None)
    feature_set = ctx.features.load(project_id, feature_key)
    rows, found = feature_set.rows(task_ids)
    labels = [y[i] for i in np.flatnonzero(found)]
    try:
        estimate = ProxyHead(config.schema, ctx.settings.seed).cross_validate(feature_set.matrix[rows[found]], labels)
    except (NotEnoughLabelsError, ValueError) as exc:
        return {"skipped": str(exc)[:300]}
    record = {**estimate.to_dict(), "labeled": len(labels), "classes": sorted({lab for row in labels for lab in row}),
              "feature_key": feature_key}
    ctx.store.set_fast_cv(project_id, record)
    labeled_ids = [task_ids[i] for i in np.flatnonzero(found)]
    labeled_features = feature_set.matrix[rows[found]]
    pool_rows, in_pool = feature_set.rows(ctx.store.pool_ids(project_id))
    classification_quality(ctx, project_id, config.schema, labeled_features, labels, labeled_ids,
                           feature_set.matrix[pool_rows[in_pool]])
    classification_suspects(ctx, project_id, config, labeled_features, labels, labeled_ids)
    state = ctx.store.get_project(project_id)
    if state is not None and state.serving_model == "proxy" and state.serving_reason is not None:
        proxy = ModelEstimate(accuracy=estimate.accuracy, labels=len(labels), folds=estimate.folds, c=estimate.c)
        ctx.store.set_fields(project_id, serving_reason=replace(state.serving_reason, proxy=proxy))
    return record


def on_cv_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    context().store.release(int(job.meta[META_PROJECT]), "cv-queued", job.id)
