"""The named steps of one active-learning iteration, in the order `train_acquisition` and
`finish_iteration` (`backend.service.jobs.iteration`) run them: fetch + convert the labels, sync
the pool cache, fit + save the checkpoint with its strategy, draw the UPS subset, record the
iteration; then, once the chunks scored, carry the stale scores over, push, publish."""
from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass

import numpy as np

from backend.engine.acquisition.sampling import UPS
from backend.engine.acquisition.strategies import MahalanobisDistance, QueryStrategy, make_strategy
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.models.transformer import FitReport, TransformerModel
from backend.labeling import ConversionReport, LabelConfig, MissingTextFieldError, task_text, tasks_to_examples
from backend.service.checkpoints import NO_TEXT_ENTRY, checkpoint_dir, prune_checkpoints, write_checkpoint_extras
from backend.service.jobs.common import Throttle
from backend.service.ls_errors import LabelStudioError
from backend.service.records import UNTRAINED, IterationInfo, IterationRecord, ProjectState, ScoreEntry
from backend.service.runtime import JobContext

log = logging.getLogger(__name__)

MAX_LOGGED_WARNINGS = 5


@dataclass
class TrainingData:
    """What the training job works from: the project's config, the converted labels, its state."""

    config: LabelConfig
    label_config_xml: str
    report: ConversionReport
    labeled_ids: set[int]
    state: ProjectState

    @property
    def iteration(self) -> int:
        return self.state.iteration + 1


@dataclass
class TrainedCheckpoint:
    version: str
    fit: FitReport
    train_seconds: float


@dataclass
class Draw:
    """The UPS draw: the pool tasks to re-score, and what it was drawn from."""

    subset: list[int]
    never_scored: int
    full_rescore: bool


def new_version(iteration: int) -> str:
    """Unique, readable and sortable per project: ``acq-<iteration>-<UTC time>``."""
    return f"acq-{iteration}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def log_conversion(project_id: int, what: str, report: ConversionReport) -> None:
    """Tell the worker log which tasks conversion left out and why (the counts and first warnings)."""
    if report.skipped or report.warnings:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
        log.warning("project %s: %s data: %d examples, skipped %s, %d warnings%s", project_id, what,
                    len(report.examples), skipped, len(report.warnings),
                    "".join(f"\n  {w}" for w in report.warnings[:MAX_LOGGED_WARNINGS]))


def fetch_training_data(ctx: JobContext, project_id: int) -> TrainingData:
    """Fetch the label config and the annotated tasks from Label Studio, register the config,
    convert the tasks; raises `NotEnoughLabelsError` when none is usable."""
    project = ctx.ls.get_project(project_id)
    xml = project["label_config"]
    config = ctx.store.register_label_config(project_id, xml, ctx.settings.label_control_name)
    labeled = ctx.ls.labeled_tasks(project_id)
    report = tasks_to_examples(labeled, config)
    if not report.examples:
        log_conversion(project_id, "training", report)
        raise NotEnoughLabelsError(
            f"project {project_id} has no usable annotated task yet ({report.summary()}); annotate some first"
        )
    state = ctx.store.get_project(project_id)
    assert state is not None  # registered above
    return TrainingData(config, xml, report, {int(t["id"]) for t in labeled}, state)


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
    from Label Studio (listing 10k tasks takes seconds; the cache keeps it off most iterations)."""
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
    texts = {int(t["id"]): _text_or_empty(t, config) for t in ctx.ls.unlabeled_tasks(project_id)
             if int(t["id"]) not in labeled_ids}
    store.pool_replace(project_id, texts, config.value_key, iteration)
    return sorted(texts), True


def _text_or_empty(task: dict, config: LabelConfig) -> str:
    """The task's text, or "" when it has none (scored as `NO_TEXT_ENTRY`)."""
    try:
        return task_text(task, config)
    except MissingTextFieldError:
        return ""


def make_fitted_strategy(ctx: JobContext, model: TransformerModel, data: TrainingData) -> QueryStrategy:
    """The configured query strategy, fitted on the labeled embeddings where it needs them."""
    strategy = make_strategy(ctx.settings.strategy, data.config.task_type, seed=ctx.settings.seed)
    if isinstance(strategy, MahalanobisDistance):
        examples = data.report.examples
        embeddings = model.predict(examples, return_embeddings=True).embeddings
        strategy.fit(embeddings, np.array([ex.labels[0] for ex in examples]))  # type: ignore[union-attr]
    return strategy


def fit_and_save(ctx: JobContext, project_id: int, pipeline_id: str, data: TrainingData) -> TrainedCheckpoint:
    """Fine-tune the acquisition model on the labels and save it with its strategy as a new version."""
    settings = ctx.settings
    t1 = time.perf_counter()
    version = new_version(data.iteration)
    ctx.store.update_status(pipeline_id, stage="train", version=version)
    model = TransformerModel(settings.acquisition_model, data.config.schema, settings.training_config())
    throttle = Throttle(1.0)

    def progress(done: int, total: int) -> None:
        if throttle.due(done, total):
            ctx.store.update_status(pipeline_id, progress=round(done / max(total, 1), 4))

    fit = model.fit(data.report.examples, progress=progress)
    directory = checkpoint_dir(settings.model_dir, project_id, version)
    model.save(directory)
    write_checkpoint_extras(directory, data.config, data.label_config_xml, make_fitted_strategy(ctx, model, data), {
        "project": project_id, "version": version, "iteration": data.iteration, "base": settings.acquisition_model,
        "labeled": len(data.report.examples), "pipeline": pipeline_id,
    })
    return TrainedCheckpoint(version, fit, time.perf_counter() - t1)


def draw_subset(ctx: JobContext, project_id: int, data: TrainingData, pool_ids: list[int]) -> Draw:
    """UPS: which pool tasks the new version re-scores (all that were never scored, plus a draw)."""
    settings = ctx.settings
    stale = ctx.store.uncertainties(project_id, data.state.acq_version, pool_ids)  # the fine-tuned lineage
    sampler = UPS(settings.ups_gamma, settings.ups_temperature, settings.full_rescore_iterations)
    rng = np.random.default_rng([settings.seed, int(project_id), data.iteration])
    mask = sampler.select(stale, data.iteration, rng) if pool_ids else np.zeros(0, dtype=bool)
    return Draw([pool_ids[i] for i in np.flatnonzero(mask)], int(np.isnan(stale).sum()),
                bool(mask.all()) if len(mask) else True)


def start_iteration(
    ctx: JobContext, project_id: int, pipeline_id: str, data: TrainingData, trained: TrainedCheckpoint,
    draw: Draw, refreshed: bool, *, started: float, fetch_seconds: float, pool_ids: list[int],
    selection: dict | None = None,
) -> IterationInfo:
    """Record the iteration the scoring chunks and the finisher work on."""
    info = IterationInfo(
        iteration=data.iteration, version=trained.version, prev_version=data.state.acq_version, pipeline=pipeline_id,
        value_key=data.config.value_key, pool_size=len(pool_ids), subset_size=len(draw.subset),
        never_scored=draw.never_scored, full_rescore=draw.full_rescore, pool_refreshed=refreshed,
        labeled=len(data.report.examples), conversion=data.report.as_dict(),
        chunks=math.ceil(len(draw.subset) / ctx.settings.score_chunk_size), started_at=started,
        fetch_seconds=fetch_seconds, train_seconds=trained.train_seconds, fit_steps=trained.fit.steps,
        fit_loss=trained.fit.final_loss, scoring_started=time.time(), selection=selection or {},
    )
    ctx.store.start_iteration(project_id, info, pool_ids)
    return info


def carry_stale_scores(ctx: JobContext, project_id: int, info: IterationInfo, pool: list[int]) -> tuple[dict, int, int]:
    """Give the new version the previous version's entries for the tasks UPS did not draw.
    Returns (raw entry per pool task, tasks kept stale, tasks with no entry at all)."""
    store = ctx.store
    raw = store.get_raw_scores(project_id, info.version, pool)
    missing = [t for t, r in zip(pool, raw) if r is None]
    prev = info.prev_version
    kept = store.get_raw_scores(project_id, prev, missing) if prev != UNTRAINED else [None] * len(missing)
    fill: dict[int, str] = {}
    unscored = 0
    for task_id, old in zip(missing, kept):
        if old is None:  # cannot happen for a consistent pool (never-scored tasks are always drawn)
            unscored += 1
            old = NO_TEXT_ENTRY.to_json()
        fill[task_id] = old
    store.put_scores(project_id, info.version, fill)
    by_task = dict(zip(pool, raw))
    by_task.update(fill)
    return by_task, len(missing) - unscored, unscored


def push_predictions(ctx: JobContext, project_id: int, version: str, pool: list[int], by_task: dict) -> int:
    """One prediction per unlabeled task, in bulk; then LS's model_version. Returns how many were pushed."""
    predictions = []
    for task_id in pool:
        entry = ScoreEntry.from_json(by_task[task_id])
        predictions.append({"task": task_id, "result": entry.result, "score": entry.score, "model_version": version})
    batch = ctx.settings.push_batch_size
    pushed = ctx.ls.import_predictions(project_id, predictions, batch_size=batch) if predictions else 0
    ctx.ls.set_model_version(project_id, version)
    return int(pushed)


def publish_iteration(ctx: JobContext, project_id: int, info: IterationInfo) -> IterationRecord:
    """Carry stale scores over; then either the fine-tuned model serves (push one prediction per
    pool task, switch LS) or, when the proxy head measured better, the version only joins the
    acquisition lineage and a fast update orders LS; publish, prune old checkpoints."""
    from backend.service.jobs.fast import SUPERSEDED, run_fast_update, use_base_features

    settings, store = ctx.settings, ctx.store
    pool = store.iteration_pool(project_id, info.version)
    scoring_wall = time.time() - info.scoring_started
    by_task, kept, unscored = carry_stale_scores(ctx, project_id, info, pool)
    selection = dict(info.selection or {})
    t0 = time.perf_counter()
    pushed, served = 0, "finetuned"
    record = IterationRecord(
        iteration=info.iteration, version=info.version, previous_version=info.prev_version, pipeline=info.pipeline,
        labeled=info.labeled, pool_size=len(pool), subset_size=info.subset_size, scored_by_model=info.scored,
        kept_stale=kept, unscored=unscored, rescored_share=(info.subset_size / len(pool)) if pool else 0.0,
        full_rescore=info.full_rescore, pool_refreshed=info.pool_refreshed, chunks=info.chunks, pushed=0,
        seconds={}, started_at=info.started_at, finished_at=0.0, conversion=info.conversion, selection=selection,
    )
    if selection.get("serve") == "proxy":
        # join the lineage first (UPS's next draw reads its scores), then let the proxy order LS
        record.served = "proxy"
        record.seconds = {"fetch": info.fetch_seconds, "train": info.train_seconds,
                          "inference": info.inference_seconds, "scoring_wall": scoring_wall}
        record.finished_at = time.time()
        store.publish_version(project_id, info.version, info.iteration, record, serve=False)
        # an earlier fine-tune's win is over (else it would block the proxy's update below, leaving
        # that fine-tune serving with the fast path off); the head works on the features its
        # estimate was measured on
        store.set_fields(project_id, finetune_won=False)
        use_base_features(ctx, project_id)
        outcome = run_fast_update(ctx, project_id, f"iteration {info.iteration}: the proxy head measured better",
                                  selection=selection)
        selection["fast_update"] = {k: outcome.get(k) for k in ("status", "version", "message")}
        if outcome.get("status") in ("published", SUPERSEDED):  # superseded: a newer proxy version serves
            served = "proxy"
        else:  # the proxy could not publish (e.g. features missing): the fine-tuned model serves
            selection["serve"] = "finetuned"
            selection["why_serve"] = f"the proxy could not publish ({outcome.get('message')}); the fine-tuned model serves"
    if served == "finetuned":
        with store.ls_switch_lock(project_id):
            pushed = push_predictions(ctx, project_id, info.version, pool, by_task)
            record.served, record.pushed, record.selection = "finetuned", pushed, selection
            record.seconds = {"fetch": info.fetch_seconds, "train": info.train_seconds,
                              "inference": info.inference_seconds, "scoring_wall": scoring_wall,
                              "push": time.perf_counter() - t0, "total": time.time() - info.started_at}
            record.finished_at = time.time()
            state = store.get_project(project_id)
            already = state is not None and state.acq_version == info.version
            store.publish_version(project_id, info.version, None if already else info.iteration,
                                  None if already else record, serve=True)
            store.set_fields(project_id, serving_model="finetuned",
                             finetune_won=bool(selection.get("finetune_won")), serving_reason=selection or None)
            if info.full_rescore:  # no fast update on older features until this fine-tune's are complete
                use_base_features(ctx, project_id)
            if already:  # published into the lineage above; record the served outcome
                store.r.lset(store.key(project_id, "iterations"), -1, json.dumps(record.to_dict()))
    else:
        record.seconds["push"] = time.perf_counter() - t0
        record.seconds["total"] = time.time() - info.started_at
        store.r.lset(store.key(project_id, "iterations"), -1, json.dumps(record.to_dict()))
        store.set_fields(project_id, finetune_won=False)
    store.clear_error(project_id)
    prune_checkpoints(settings.model_dir, project_id, keep=store.checkpoints_to_keep(project_id, settings.keep_versions))
    return record


def prune_ls_versions(ctx: JobContext, project_id: int, keep: set[str]) -> dict:
    """Delete, in bulk, LS's predictions of the versions this backend published before `keep`
    (the serving one and the previous: a /predict racing the switch may still store the latter).
    Predictions of versions the backend never published (imported by hand, another backend) stay.
    Run after the new order is visible; never raises for LS errors (the iteration is done): the
    outcome is returned for the pipeline status and the log."""
    t0 = time.perf_counter()
    # never the serving or the previously serving version, whatever the caller kept; versions
    # published while this runs are not in the snapshot of ours, so they are never deleted
    keep = set(keep) | set(ctx.store.served_versions(project_id)[-2:]) | {ctx.store.current_version(project_id)}
    outcome: dict = {"deleted": {}, "kept": sorted(keep)}
    try:
        ours = set(ctx.store.versions(project_id))
        for version in ctx.ls.model_versions(project_id):
            if version in ours and version not in keep:
                outcome["deleted"][version] = ctx.ls.delete_model_version(project_id, version)
    except LabelStudioError as exc:
        outcome["error"] = str(exc)[:500]
        log.warning("project %s: could not delete superseded predictions in Label Studio: %s", project_id, exc)
    outcome["seconds"] = round(time.perf_counter() - t0, 3)
    return outcome
