"""RQ jobs: one active-learning iteration per project, split so several workers share the pool.

A training request becomes a *pipeline* of jobs, identified by the training job's id::

    train_acquisition  (queue "training")   fetch labels, fit, save the checkpoint, draw the UPS
                                            subset, enqueue the chunks and the finisher
    score_chunk x N    (queue "scoring")    score SCORE_CHUNK_SIZE pool tasks each, store results
                                            (on a full rescore also the fast path's aligned features)
    finish_iteration   (queue "scoring",    keep the stale scores of the rest, push one prediction
                        depends on chunks)  per unlabeled task, set LS's model_version, publish

At most one pipeline runs and one waits per project (`ProjectStore` flags). Every stage writes the
pipeline's `PipelineStatus` (what ``GET /jobs/<id>`` shows). Any failure (an exception, a
timeout, a worker that died) runs `on_pipeline_failure`: the error is recorded, the serving
version stays as it was, and a rerun follows if annotations arrived meanwhile.
"""
from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import replace
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job, JobStatus

from backend.engine.device import quiet_transformers
from backend.engine.types import TaskType
from backend.service.checkpoints import checkpoint_dir
from backend.service.features import finetuned_key
from backend.service.jobs.common import (
    META_PIPELINE,
    META_PROJECT,
    after_all,
    enqueue,
    failure_reason,
)
from backend.service.jobs.fast_update import run_fast_update
from backend.service.jobs.gate import aligned_features_wanted
from backend.service.jobs.janitor import reap_dead_jobs, repair_stale_flags
from backend.service.jobs.ls_sync import prune_ls_versions, sync_pool
from backend.service.jobs.serving import drop_unused_features, follow_serving_model, measure_serving
from backend.service.jobs.stages import (
    carry_stale_scores,
    close_iteration,
    draw_subset,
    fetch_training_data,
    fit_and_save,
    iteration_record,
    join_lineage,
    log_conversion,
    proxy_published,
    publish_finetuned,
    record_iteration_point,
    start_iteration,
)
from backend.service.records import FastStatus, IterationInfo, IterationRecord, PipelineStatus, TrainingRequest
from backend.service.runtime import JobContext, context

log = logging.getLogger(__name__)

SCORE_JOB_TIMEOUT = 3600


# ---------------------------------------------------------------------------------- requests


def request_training(ctx: JobContext, project_id: int, reason: str) -> TrainingRequest:
    """Queue a retrain unless one is waiting (it will see the new labels) or running (it runs
    once more afterwards). Never trains here: callers are HTTP requests with a 1 s budget."""
    ctx.require_label_studio()
    reap_dead_jobs(ctx, [project_id])
    repair_stale_flags(ctx, project_id)
    job_id = f"train-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    req = ctx.store.request_training(project_id, job_id)
    if req.outcome != "enqueue":
        return req
    try:
        ctx.store.put_status(job_id, PipelineStatus(project=int(project_id), pipeline=job_id, stage="queued",
                                                    progress=0.0))
        enqueue(ctx.queues.training, train_acquisition, (int(project_id),), job_id=job_id,
                timeout=ctx.settings.job_timeout,
                meta={META_PROJECT: int(project_id), META_PIPELINE: job_id, "reason": reason},
                on_failure=on_pipeline_failure, description=f"train acquisition model, project {project_id} ({reason})")
    except redis.exceptions.RedisError:
        ctx.store.clear_job_field(project_id, "queued_job", job_id)
        raise
    ctx.metrics.count_job("train_acquisition", "enqueued")
    return req


# ---------------------------------------------------------------------------------- the jobs


def train_acquisition(project_id: int) -> dict[str, Any]:
    """Stage 1 of an iteration: fit from the pretrained checkpoint, then fan out the scoring."""
    ctx = context()
    store = ctx.store
    quiet_transformers()
    job = get_current_job()
    pipeline_id = job.id if job is not None else f"inline-{uuid.uuid4().hex[:12]}"
    if not store.begin_training(project_id, pipeline_id):
        store.update_status(pipeline_id, stage="skipped", status="skipped")
        return {"skipped": "another training of this project is running; it will run once more"}
    started = time.time()
    t0 = time.perf_counter()
    store.update_status(pipeline_id, project=int(project_id), pipeline=pipeline_id, stage="fetch", progress=0.0,
                        status="running")
    data = fetch_training_data(ctx, project_id)
    log_conversion(project_id, "training", data.report)
    pool_ids, refreshed = sync_pool(ctx, project_id, data.config, data.labeled_ids, data.iteration)
    fetch_seconds = time.perf_counter() - t0

    trained = fit_and_save(ctx, project_id, pipeline_id, data)
    store.remember_labeled(project_id, trained.version, [int(t) for t in data.report.task_ids])
    _still_running(ctx, project_id, pipeline_id)
    store.update_status(pipeline_id, stage="select", progress=0.0)
    draw = draw_subset(ctx, project_id, data, pool_ids)
    if draw.full_rescore and aligned_features_wanted(ctx, data.state):
        drop_unused_features(ctx, data.state)
    selection = measure_serving(ctx, project_id, data.state, data.report, data.config)
    info = start_iteration(ctx, project_id, pipeline_id, data, trained, draw, refreshed,
                           started=started, fetch_seconds=fetch_seconds, pool_ids=pool_ids, selection=selection)
    chunk_jobs, finisher = enqueue_scoring(ctx, project_id, pipeline_id, trained.version, draw.subset)
    store.set_stage_job(project_id, pipeline_id, finisher.id)
    ctx.metrics.count_job("train_acquisition", "finished")
    log.info("project %s: trained %s on %d examples in %.1fs; scoring %d of %d pool tasks in %d chunks",
             project_id, trained.version, len(data.report.examples), info.train_seconds, len(draw.subset),
             len(pool_ids), len(chunk_jobs))
    return {"version": trained.version, "iteration": data.iteration, "labeled": len(data.report.examples),
            "pool_size": len(pool_ids), "subset_size": len(draw.subset), "train_seconds": info.train_seconds}


class PipelineAbandonedError(RuntimeError):
    """This pipeline was declared dead (e.g. its worker froze past the heartbeat TTL) and its
    project released; its remaining stages must not run or publish."""


def _still_running(ctx: JobContext, project_id: int, pipeline_id: str) -> None:
    state = ctx.store.get_project(project_id)
    if state is None or state.running_job != pipeline_id:
        raise PipelineAbandonedError(f"pipeline {pipeline_id} was declared dead meanwhile; not publishing")


def enqueue_scoring(
    ctx: JobContext, project_id: int, pipeline_id: str, version: str, subset: list[int]
) -> tuple[list[Job], Job]:
    """Chunk jobs over the UPS subset and the finisher that waits for all of them."""
    size = ctx.settings.score_chunk_size
    meta = {META_PROJECT: int(project_id), META_PIPELINE: pipeline_id}
    chunk_jobs = [
        enqueue(ctx.queues.scoring, score_chunk, (int(project_id), version, subset[i : i + size]),
                timeout=SCORE_JOB_TIMEOUT, meta=meta, on_failure=on_pipeline_failure,
                retries=ctx.settings.chunk_retries,
                description=f"score {len(subset[i : i + size])} pool tasks, project {project_id} {version}")
        for i in range(0, len(subset), size)
    ]
    ctx.store.update_status(pipeline_id, stage="score", version=version, subset_size=len(subset),
                            chunks=len(chunk_jobs), scored=0, chunks_done=0)
    finisher = enqueue(
        ctx.queues.scoring, finish_iteration, (int(project_id), version), job_id=finisher_id(pipeline_id),
        timeout=ctx.settings.job_timeout, meta=meta, on_failure=on_pipeline_failure,
        depends_on=after_all(chunk_jobs), description=f"push predictions, project {project_id} {version}",
    )
    return chunk_jobs, finisher


def finisher_id(pipeline_id: str) -> str:
    """The finisher's job id, derived so a failing chunk can cancel it without a lookup."""
    return f"{pipeline_id}-finish"


def score_chunk(project_id: int, version: str, task_ids: list[int]) -> dict[str, Any]:
    """Score one chunk of the UPS subset with the new checkpoint; results go to the store."""
    ctx = context()
    store = ctx.store
    t0 = time.perf_counter()
    info = store.iteration_info(project_id, version)
    checkpoint = ctx.checkpoints.get_finetuned(project_id, version)
    state = store.get_project(project_id)
    # a classifier's pool features come from this pass; a tagger's per-word ones from a build once it wins
    aligned = (info.full_rescore and aligned_features_wanted(ctx, state)
               and state is not None and state.task_type is not TaskType.TAGGING)
    entries, ran, features = checkpoint.score_and_encode(store.pool_texts(project_id, task_ids), with_features=aligned)
    store.put_scores(project_id, version, dict(zip(task_ids, entries)))
    if features is not None:  # the fast path's features aligned with this fine-tune (used if it wins)
        ctx.features.write(project_id, finetuned_key(version), task_ids, features)
    seconds = time.perf_counter() - t0
    _, chunks_done = store.add_iteration_progress(project_id, version, ran, seconds, info.pipeline)
    ctx.metrics.count_job("score_chunk", "finished")
    return {"tasks": len(task_ids), "model_scored": ran, "seconds": seconds, "chunks_done": chunks_done}


def finish_iteration(project_id: int, version: str) -> dict[str, Any]:
    """Keep stale scores for tasks UPS did not draw, push one prediction per unlabeled task with
    the new version in bulk, set the project's model_version, publish the version."""
    ctx = context()
    info = ctx.store.iteration_info(project_id, version)
    _still_running(ctx, project_id, info.pipeline)
    ctx.store.update_status(info.pipeline, stage="push")
    record = publish_iteration(ctx, project_id, info)
    ctx.store.update_status(info.pipeline, stage="done", progress=1.0, status="finished", iteration=record.to_dict())
    ctx.metrics.count_job("finish_iteration", "finished")
    rerun = ctx.store.end_pipeline(project_id, info.pipeline)
    if rerun:
        request_training(ctx, project_id, "annotations arrived during the previous run")
    log.info("project %s: published %s (scored %d of %d, pushed %d in %.1fs; serving: %s)", project_id, version,
             record.scored_by_model, record.pool_size, record.pushed, record.seconds.get("push", 0.0), record.served)
    follow_serving_model(ctx, project_id, version, record.served, info.full_rescore)
    # Last, once the new order is visible: LS deletes ~2.4 ms per prediction.
    pruned = prune_ls_versions(ctx, project_id, keep={version, info.prev_version})
    ctx.store.update_status(info.pipeline, ls_pruned=pruned)
    log.info("project %s: deleted superseded predictions in Label Studio: %s", project_id, pruned)
    return record.to_dict()


def publish_iteration(ctx: JobContext, project_id: int, info: IterationInfo) -> IterationRecord:
    """Carry stale scores over; then, when the proxy head measured better, the fine-tune joins the
    lineage and a fast update orders LS (falling back to the fine-tune when the proxy cannot
    publish); else the fine-tuned model serves. Old checkpoints are pruned last."""
    pool = ctx.store.iteration_pool(project_id, info.version)
    by_task, kept, unscored = carry_stale_scores(ctx, project_id, info, pool)
    record = iteration_record(info, pool, kept, unscored)
    decision, t0 = info.selection, time.perf_counter()
    if decision is not None and decision.serve == "proxy":
        join_lineage(ctx, project_id, info, record)
        outcome = run_fast_update(ctx, project_id, f"iteration {info.iteration}: the proxy head measured better",
                                  decision=decision)
        if outcome.status in (FastStatus.PUBLISHED, FastStatus.SUPERSEDED):  # superseded: a newer proxy version
            proxy_published(ctx, project_id, info, record, outcome.version, t0)
            record_iteration_point(ctx, project_id, record, _task_type(ctx, project_id))
            close_iteration(ctx, project_id)
            return record
        decision = replace(decision, serve="finetuned",
                           why=f"the proxy could not publish ({outcome.message}); the fine-tuned model serves")
    publish_finetuned(ctx, project_id, info, record, pool, by_task, decision, t0)
    record_iteration_point(ctx, project_id, record, _task_type(ctx, project_id))
    close_iteration(ctx, project_id)
    return record


def _task_type(ctx: JobContext, project_id: int) -> TaskType | None:
    state = ctx.store.get_project(project_id)
    return state.task_type if state is not None else None


def on_pipeline_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """Any stage failed: record why, keep the serving version, release the project's flag, cancel
    the finisher still waiting on a failed chunk, and rerun if annotations arrived meanwhile."""
    ctx = context()
    project_id = int(job.meta[META_PROJECT])
    pipeline_id = job.meta.get(META_PIPELINE, job.id)
    status = ctx.store.get_status(pipeline_id)
    version = status.version if status else None
    function = (job.func_name or "").rsplit(".", 1)[-1]
    stage = (status.stage if status else None) or function
    message = failure_reason(job, exc_type, exc_value, stage, ctx.settings.heartbeat_ttl)[:2000]
    if job.should_retry:  # RQ runs it again (a scoring chunk whose worker died): not a pipeline failure
        log.warning("project %s pipeline %s: %s; running job %s again", project_id, pipeline_id, message, job.id)
        return
    log.error("project %s pipeline %s: %s", project_id, pipeline_id, message)
    ctx.metrics.count_job(function, "failed")
    if status is None or status.status != "failed":  # the first failure is the cause; keep it
        ctx.store.update_status(pipeline_id, status="failed", error=message)
    if job.id != finisher_id(pipeline_id):
        waiting = ctx.queues.fetch(finisher_id(pipeline_id))
        if waiting is not None and waiting.get_status(refresh=False) == JobStatus.DEFERRED:
            waiting.cancel()
    ended = ctx.store.end_pipeline(project_id, pipeline_id)
    if ended is None:  # another chunk of this pipeline already reported its failure
        return
    ctx.store.record_error(project_id, pipeline_id, message)
    if version and version != ctx.store.current_version(project_id):
        ctx.store.discard_iteration(project_id, version)
        shutil.rmtree(checkpoint_dir(ctx.settings.model_dir, project_id, version), ignore_errors=True)
    if ended:
        try:
            request_training(ctx, project_id, "annotations arrived during a failed run")
        except (redis.exceptions.RedisError, RuntimeError) as exc:  # the failure is recorded; a rerun is a bonus
            log.warning("project %s: could not queue the rerun: %s", project_id, exc)
