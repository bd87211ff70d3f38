"""PLASM: Pseudo-Labeling for Acquisition-Successor Mismatch (paper section 3.3; DESIGN.md §2).

After active learning with a small acquisition model, build the final model of any architecture:

1. split the gold labels, holding out `dev_share` (10%) as a dev split;
2. fine-tune the **teacher** (the model the acquisition model was distilled from) on the rest;
   with `teachers` > 1, one teacher per disjoint dev fold (an ensemble: on a few hundred labels a
   single fine-tune is noisy, and so is a dev score over a few dozen labels);
3. pseudo-label the unlabeled pool with it (with the ensemble's averaged probabilities);
4. filter: drop the share `1 - dev_score` of the pseudo-labels (the teacher's dev score; not the
   inverted 'adaptive' threshold of the paper's first repository), first the least confident
   ones, then the highest TracIn self-influence ones (`backend.engine.plasm.tracin`: exact last-layer form
   over checkpoints of a successor trained on gold + the remaining pseudo-labels);
5. train the **successor** (any `AutoModelFor...` checkpoint, or the classical CNN / BiLSTM-CRF)
   on gold + kept pseudo-labels, and the same successor on gold only;
6. evaluate teacher and both successors on the dev split, keep the better successor.

`run_plasm` runs it all with progress `(stage, done, total)` and a cancel check, and touches no
disk; `backend.engine.plasm.export` writes the kept successor to disk. Nothing here knows about
Flask, Redis or Label Studio: the RQ job wraps `export.build_and_export`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from backend.engine.acquisition.strategies import make_strategy
from backend.engine.callbacks import CancelCheck, Progress, StageProgress, Stages
from backend.engine.metrics import evaluate
from backend.engine.models.transformer import TransformerModel
from backend.engine.plasm.options import (
    FILTERS,
    GOLD_ONLY,
    PLASM,
    STAGES,
    Chosen,
    FilterMode,
    FilterPlan,
    PlasmOptions,
    filter_plan,
)
from backend.engine.plasm.pseudo import (
    average_predictions,
    concat_predictions,
    pseudo_examples,
    split_folds,
    split_gold,
    strip_labels,
)
from backend.engine.plasm.records import FilterReport, PlasmResult, PlasmSizes, PseudoLabels, TracInReport
from backend.engine.plasm.tracin import FORM as TRACIN_FORM
from backend.engine.plasm.tracin import TracInCheckpoints
from backend.engine.types import Example, FloatArray, IndexArray, LabelSchema, Predictions

# the names callers have always imported from here
__all__ = [
    "FILTERS", "GOLD_ONLY", "PLASM", "STAGES", "Chosen", "FilterMode", "FilterPlan", "FilterReport", "PlasmOptions",
    "PlasmResult", "PlasmSizes", "Predictor", "PseudoLabels", "TracInReport", "average_predictions",
    "build_successor", "concat_predictions", "filter_plan", "pseudo_examples", "pseudo_label", "run_plasm",
    "split_folds", "split_gold", "strip_labels",
]

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """Anything trained that predicts examples (an extra teacher: e.g. the acquisition model)."""

    def predict(self, examples: Sequence[Example], *, progress: Progress | None = None) -> Predictions: ...


def pseudo_label(
    gold: Sequence[Example],
    unlabeled: Sequence[Example],
    schema: LabelSchema,
    options: PlasmOptions,
    stages: Stages | None = None,
    extra_teachers: Sequence[Predictor] = (),
) -> PseudoLabels:
    """Stages 1-3: split the gold labels, fine-tune the teacher(s), pseudo-label the pool.
    `extra_teachers`: models already trained on these labels (the acquisition model, trained on all
    of them) whose pool probabilities join the average; having seen every dev fold, they are left
    out of the dev score that sets the filter's share."""
    stages = stages or Stages()
    with stages.stage("split"):
        options.successor_factory(schema).new()  # fail fast on a bad successor
        folds = split_folds(gold, options.dev_share, options.seed, options.teachers)
        gold_train, dev = folds[0]
        indices: IndexArray = np.arange(len(unlabeled))
        if options.max_pool is not None and len(unlabeled) > options.max_pool:
            rng = np.random.default_rng([options.seed, 1])
            indices = np.sort(rng.choice(len(unlabeled), options.max_pool, replace=False))
        pool = [unlabeled[int(i)] for i in indices]
    with stages.stage("teacher"):
        teachers: list[TransformerModel] = []
        dev_predictions: list[Predictions] = []
        for j, (train_j, dev_j) in enumerate(folds):
            teachers.append(options.teacher_factory(schema).new(options.seed + j))
            teachers[-1].fit(train_j, progress=_member(stages.report, j, len(folds)))
            dev_predictions.append(teachers[-1].predict(dev_j))
        dev_all = [ex for _, dev_j in folds for ex in dev_j]
        teacher_dev = evaluate(concat_predictions(dev_predictions), dev_all, schema)
    with stages.stage("pseudo_label"):
        if pool:
            members: list[Predictor] = [*teachers, *extra_teachers]
            predictions = average_predictions([
                t.predict(pool, progress=_member(stages.report, j, len(members))) for j, t in enumerate(members)])
            labeled = pseudo_examples(predictions, pool, schema)
            confidence: FloatArray = make_strategy("auto", schema.task_type).score(predictions).confidence
        else:
            labeled, confidence = [], np.zeros(0)
    return PseudoLabels(
        schema=schema, gold_train=gold_train, dev=dev, teacher=teachers[0], teacher_dev=teacher_dev, pool=labeled,
        confidence=np.asarray(confidence), pool_indices=indices, stage_seconds=dict(stages.seconds),
        unlabeled_total=len(unlabeled), teachers=len(teachers), teacher_dev_size=len(dev_all),
        extra_teachers=len(extra_teachers),
    )


def _member(report: Callable[[int, int], None], j: int, k: int) -> Callable[[int, int], None]:
    """Progress of member `j` of `k` runs of the same work, as progress over all of them."""
    if k == 1:
        return report
    return lambda done, total: report(j * total + done, k * total)


def _drop_least_confident(labels: PseudoLabels, keep: IndexArray, count: int) -> IndexArray:
    if not count:
        return keep
    # least confident first; a stable sort keeps the pool order among ties
    order = np.argsort(labels.confidence, kind="stable")
    return np.sort(order[count:])


def _drop_most_influential(
    labels: PseudoLabels, keep: IndexArray, count: int, options: PlasmOptions, stages: Stages
) -> tuple[IndexArray, TracInReport | None]:
    """Train a successor probe on gold + candidates and drop the `count` highest TracIn self-influences."""
    if not count or not len(keep):
        return keep, None
    candidates = [labels.pool[int(i)] for i in keep]
    probe = options.successor_factory(labels.schema).new(options.seed)
    tracker = TracInCheckpoints(probe, candidates, options.tracin_checkpoints, stages.report,
                                training_size=len(labels.gold_train) + len(candidates))
    probe.fit(labels.gold_train + candidates, progress=tracker.progress)
    ranked = np.argsort(-tracker.scores, kind="stable")  # highest self-influence first
    report = TracInReport(form=TRACIN_FORM, checkpoint_steps=tracker.steps, learning_rate_weights=tracker.weights,
                          scoring_seconds=round(tracker.seconds, 3))
    return np.sort(keep[ranked[min(count, len(keep)) :]]), report


def _train_successors(
    labels: PseudoLabels, kept: list[Example], options: PlasmOptions, stages: Stages
) -> dict[str, TransformerModel]:
    factory = options.successor_factory(labels.schema)
    successors: dict[str, TransformerModel] = {}
    if options.compare_gold_only:
        with stages.stage("successor_gold_only"):
            successors[GOLD_ONLY] = factory.new(options.seed)
            successors[GOLD_ONLY].fit(labels.gold_train, progress=stages.report)
    with stages.stage("successor_plasm"):
        gold = labels.gold_train + labels.dev if options.successor_all_gold else labels.gold_train
        successors[PLASM] = factory.new(options.seed)
        successors[PLASM].fit(gold + kept, progress=stages.report)
    return successors


def _evaluate(labels: PseudoLabels, successors: dict[str, TransformerModel], options: PlasmOptions
              ) -> tuple[dict[str, dict[str, float]], Chosen]:
    metrics = {"teacher": labels.teacher_dev}
    if options.successor_all_gold:  # it trained on the dev split: no score there
        return metrics, "plasm"
    for name, model in successors.items():
        metrics[f"successor_{name}"] = evaluate(model.predict(labels.dev), labels.dev, labels.schema)
    chosen: Chosen = "plasm"
    if GOLD_ONLY in successors and metrics["successor_gold_only"]["main"] > metrics["successor_plasm"]["main"]:
        chosen = "gold_only"
    return metrics, chosen


def build_successor(labels: PseudoLabels, options: PlasmOptions, stages: Stages | None = None) -> PlasmResult:
    """Stages 4-6 on a teacher's pseudo-labels: filter, train the successors, evaluate, choose.
    Several filter settings can share one `PseudoLabels` (the simulation does)."""
    stages = stages or Stages()
    n = len(labels.pool)
    plan = filter_plan(n, labels.dev_score, options.filter, options.uncertainty_fraction)
    keep: IndexArray = np.arange(n)
    with stages.stage("filter_uncertainty"):
        keep = _drop_least_confident(labels, keep, plan.uncertainty)
    with stages.stage("filter_tracin"):
        keep, tracin = _drop_most_influential(labels, keep, plan.tracin, options, stages)
    kept = [labels.pool[int(i)] for i in keep]
    successors = _train_successors(labels, kept, options, stages)
    with stages.stage("evaluate"):
        metrics, chosen = _evaluate(labels, successors, options)
    gold_train = len(labels.gold_train) + (len(labels.dev) if options.successor_all_gold else 0)
    sizes = PlasmSizes(
        gold=len(labels.gold_train) + len(labels.dev), gold_train=gold_train, dev=len(labels.dev),
        unlabeled=labels.unlabeled_total, pool=n, pseudo_kept=len(kept), dropped_uncertainty=plan.uncertainty,
        dropped_tracin=n - len(kept) - plan.uncertainty, successor_train=gold_train + len(kept),
    )
    report = FilterReport(
        mode=options.filter, dev_score=labels.dev_score, share=plan.share, dropped=n - len(kept),
        dropped_share=(n - len(kept)) / n if n else 0.0, uncertainty_fraction=options.uncertainty_fraction,
        tracin=tracin, teachers=labels.teachers, dev_examples=labels.teacher_dev_size,
        extra_teachers=labels.extra_teachers,
    )
    return PlasmResult(
        schema=labels.schema, options=options, chosen=chosen, successors=successors, teacher=labels.teacher,
        metrics=metrics, sizes=sizes, filter=report, stage_seconds={**labels.stage_seconds, **stages.seconds},
        kept_indices=labels.pool_indices[keep],
    )


def run_plasm(
    gold: Sequence[Example],
    unlabeled: Sequence[Example],
    schema: LabelSchema,
    options: PlasmOptions,
    *,
    progress: StageProgress | None = None,
    cancel_check: CancelCheck | None = None,
    extra_teachers: Sequence[Predictor] = (),
) -> PlasmResult:
    """The whole PLASM job in memory. `progress(stage, done, total)` is called often (every
    training step); `cancel_check()` returning True stops it with `Cancelled`. A failing stage
    raises `StageError` naming it. Nothing is written: see `backend.engine.plasm.export`."""
    stages = Stages(progress, cancel_check)
    labels = pseudo_label(gold, unlabeled, schema, options, stages, extra_teachers)
    return build_successor(labels, options, stages)
