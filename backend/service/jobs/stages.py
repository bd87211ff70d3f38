"""The named steps of one active-learning iteration, in the order `train_acquisition` and
`finish_iteration` (`backend.service.jobs.iteration`) run them: fetch + convert the labels, sync
the pool cache (`ls_sync`), fit + save the checkpoint with its strategy, draw the UPS subset, record
the iteration; then, once the chunks scored, carry the stale scores over and either publish the
fine-tune (push, switch) or let it join the lineage while the proxy serves. Which of the two, and
in what order, `finish_iteration` decides."""
from __future__ import annotations

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
from backend.engine.selection import ServingDecision
from backend.engine.types import TaskType
from backend.labeling import ConversionReport, LabelConfig, tasks_to_examples
from backend.service.checkpoints import NO_TEXT_ENTRY, checkpoint_dir, prune_checkpoints, write_checkpoint_extras
from backend.service.jobs.common import Throttle
from backend.service.jobs.ls_sync import push_predictions
from backend.service.jobs.serving import use_base_features
from backend.service.records import UNTRAINED, HistoryPoint, IterationInfo, IterationRecord, ProjectState
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


def make_fitted_strategy(ctx: JobContext, model: TransformerModel, data: TrainingData) -> QueryStrategy:
    """The configured query strategy, fitted on the labeled embeddings where it needs them."""
    strategy = make_strategy(ctx.settings.strategy, data.config.task_type, seed=ctx.settings.seed)
    if isinstance(strategy, MahalanobisDistance):
        examples = data.report.examples
        embeddings = model.predict(examples, return_embeddings=True).embeddings
        assert embeddings is not None  # asked for, and the examples are not empty (checked when loaded)
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
    selection: ServingDecision | None = None,
) -> IterationInfo:
    """Record the iteration the scoring chunks and the finisher work on."""
    info = IterationInfo(
        iteration=data.iteration, version=trained.version, prev_version=data.state.acq_version, pipeline=pipeline_id,
        value_key=data.config.value_key, pool_size=len(pool_ids), subset_size=len(draw.subset),
        never_scored=draw.never_scored, full_rescore=draw.full_rescore, pool_refreshed=refreshed,
        labeled=len(data.report.examples), conversion=data.report.as_dict(),
        chunks=math.ceil(len(draw.subset) / ctx.settings.score_chunk_size), started_at=started,
        fetch_seconds=fetch_seconds, train_seconds=trained.train_seconds, fit_steps=trained.fit.steps,
        fit_loss=trained.fit.final_loss, scoring_started=time.time(), selection=selection,
    )
    ctx.store.start_iteration(project_id, info, pool_ids)
    return info


def carry_stale_scores(ctx: JobContext, project_id: int, info: IterationInfo,
                       pool: list[int]) -> tuple[dict[int, str], int, int]:
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
    by_task = {t: r if r is not None else fill[t] for t, r in zip(pool, raw)}
    return by_task, len(missing) - unscored, unscored


def iteration_record(info: IterationInfo, pool: list[int], kept: int, unscored: int) -> IterationRecord:
    """The finished iteration's record before it is published (push figures and who serves follow)."""
    return IterationRecord(
        iteration=info.iteration, version=info.version, previous_version=info.prev_version, pipeline=info.pipeline,
        labeled=info.labeled, pool_size=len(pool), subset_size=info.subset_size, scored_by_model=info.scored,
        kept_stale=kept, unscored=unscored, rescored_share=(info.subset_size / len(pool)) if pool else 0.0,
        full_rescore=info.full_rescore, pool_refreshed=info.pool_refreshed, chunks=info.chunks, pushed=0,
        seconds={"fetch": info.fetch_seconds, "train": info.train_seconds, "inference": info.inference_seconds,
                 "scoring_wall": time.time() - info.scoring_started},
        started_at=info.started_at, finished_at=0.0, conversion=info.conversion, selection=info.selection,
    )


def join_lineage(ctx: JobContext, project_id: int, info: IterationInfo, record: IterationRecord) -> None:
    """The proxy head measured better: the fine-tune only joins the acquisition lineage (UPS's next
    draw reads its scores) without serving. An earlier fine-tune's win is over (else it would block
    the proxy's fast update, leaving that fine-tune serving with the fast path off), and the head
    goes back to the features its estimate was measured on."""
    record.served, record.finished_at = "proxy", time.time()
    ctx.store.publish_version(project_id, info.version, info.iteration, record, serve=False)
    ctx.store.set_fields(project_id, finetune_won=False)
    use_base_features(ctx, project_id)


def proxy_published(ctx: JobContext, project_id: int, info: IterationInfo, record: IterationRecord,
                    fast_version: str | None, t0: float) -> None:
    """The proxy's fast update published (or a newer one did): record it on the iteration."""
    record.fast_version = fast_version or ""
    record.seconds.update(push=time.perf_counter() - t0, total=time.time() - info.started_at)
    ctx.store.replace_last_iteration_record(project_id, record)
    ctx.store.set_fields(project_id, finetune_won=False)


def publish_finetuned(ctx: JobContext, project_id: int, info: IterationInfo, record: IterationRecord,
                      pool: list[int], by_task: dict[int, str], decision: ServingDecision | None, t0: float) -> None:
    """The fine-tuned model serves: one prediction per pool task, LS switched, the version published."""
    store = ctx.store
    with store.ls_switch_lock(project_id):
        record.pushed = push_predictions(ctx, project_id, info.version, pool, by_task)
        record.served, record.selection = "finetuned", decision
        record.seconds.update(push=time.perf_counter() - t0, total=time.time() - info.started_at)
        record.finished_at = time.time()
        state = store.get_project(project_id)
        already = state is not None and state.acq_version == info.version  # joined the lineage first
        store.publish_version(project_id, info.version, None if already else info.iteration,
                              None if already else record, serve=True)
        store.set_fields(project_id, serving_model="finetuned", serving_reason=decision,
                         finetune_won=bool(decision and decision.finetune_won))
        if info.full_rescore:  # no fast update on older features until this fine-tune's are complete
            use_base_features(ctx, project_id)
        if already:
            store.replace_last_iteration_record(project_id, record)


def record_iteration_point(ctx: JobContext, project_id: int, record: IterationRecord,
                           task_type: TaskType | None) -> None:
    """The iteration on the project manager's curve: who serves and the estimates that chose it."""
    decision = record.selection
    ctx.store.append_history(project_id, HistoryPoint(
        at=time.time(), version=record.fast_version or record.version, kind="iteration", labeled=record.labeled,
        serving=record.served, metric="span F1" if task_type is TaskType.TAGGING else "accuracy",
        # a CV figure only (tagging's paired estimate is on the fine-tune's held-out sentences instead)
        cv=decision.proxy.accuracy if decision and decision.proxy.folds else None,
        heldout=decision.finetuned.accuracy if decision else None,
        seconds=record.seconds.get("total"), scored=record.scored_by_model, pool=record.pool_size))


def close_iteration(ctx: JobContext, project_id: int) -> None:
    """After publishing: the error is cleared and checkpoints past KEEP_VERSIONS are deleted."""
    ctx.store.clear_error(project_id)
    state = ctx.store.get_project(project_id)
    prune_checkpoints(ctx.settings.model_dir, project_id,
                      keep=ctx.store.checkpoints_to_keep(project_id, ctx.settings.keep_versions),
                      published_fast_seq=state.fast_published_seq if state else 0)
