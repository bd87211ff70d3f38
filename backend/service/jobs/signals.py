"""The project manager's signals, computed from what each update already has (engine rules in
`backend.engine.quality`, `stopping`, `suspects`; measured by `feasible-al bench-pm-signals`):

- audits: AUDIT_SHARE of the slots a fast update pushes go to tasks drawn uniformly from the pool,
  decided when shown and recorded (`ProjectStore.record_audits`); their labels are an unbiased
  sample of how the model does on the pool. An audit carries the score of the slot it takes, so
  Uncertainty sampling serves it in turn.
- the quality estimate: classification, `audit_estimate` (a head fitted on the other labels, its
  pool confidence corrected by its calibration gap on the held-out labels, with an interval) in the
  CV job; tagging, strict span F1 of a token head fitted on the other labels on the held-out
  sentences. Held out: the labeled audits, and the tasks the project marked as ground truth in
  Label Studio (taken as a fair sample of the pool, as the PM's reference labels).
- the stopping signal: Cohen's kappa between consecutive models' predictions on a fixed stop set
  of the pool (stabilizing predictions), updated by every fast update, kept in Redis.
- suspect labels (classification): labels a cross-validated head contradicts with confidence,
  listed on the page and written to Label Studio as predictions of model version
  `SUSPECT_VERSION`, which the Data Manager filters on ("Prediction model versions").
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from backend.engine.quality import AuditPicks, QualityEstimate, audit_estimate, audit_picks, audit_span_f1
from backend.engine.stopping import STOP_SET_SIZE, StabilizingPredictions
from backend.engine.suspects import suspect_labels
from backend.engine.types import BoolArray, FloatArray, IndexArray, LabelSchema
from backend.labeling import LabelConfig, classification_results
from backend.service.ls_errors import LabelStudioError
from backend.service.runtime import JobContext

log = logging.getLogger(__name__)

StopPredictions = Callable[[list[int]], IndexArray | None]  # a model's predictions on the stop set's tasks
SUSPECT_VERSION = "suspect-labels"  # LS model version of the suspects' predictions (Data Manager filter)
MAX_SUSPECTS = 50


def pick_audits(ctx: JobContext, project_id: int, seq: int, top: IndexArray, candidates: IndexArray) -> AuditPicks:
    """The slots to push: the order's `top`, with AUDIT_SHARE of them drawn uniformly from
    `candidates` (seeded by project and update, so a rerun draws the same)."""
    share = ctx.settings.audit_share
    if share <= 0 or not len(candidates):
        return AuditPicks(np.asarray(top, np.int64), np.zeros(len(top), bool))
    rng = np.random.default_rng([ctx.settings.seed, int(project_id), int(seq)])
    return audit_picks(top, candidates, share, rng)


def slot_scores(picks: AuditPicks, top: IndexArray, confidence: FloatArray) -> list[float]:
    """The LS score of each pushed slot: an item's own confidence, an audit the confidence of the
    item whose slot it took (so /next, lowest first, serves it in turn)."""
    top = np.asarray(top, np.int64)
    out = []
    for slot, (item, audit) in enumerate(zip(picks.items, picks.audit, strict=True)):
        source = top[min(slot, len(top) - 1)] if audit and len(top) else item
        out.append(float(confidence[source]))
    return out


def stop_set_ids(ctx: JobContext, project_id: int, pool_ids: Sequence[int]) -> list[int]:
    """The stopping signal's fixed sample of the pool (drawn once, kept by task id)."""
    ids = ctx.store.stop_set_ids(project_id)
    if ids is None:
        rng = np.random.default_rng([ctx.settings.seed, int(project_id)])
        chosen = rng.choice(np.asarray(pool_ids, np.int64), size=min(STOP_SET_SIZE, len(pool_ids)), replace=False)
        ids = sorted(int(t) for t in chosen)
        ctx.store.set_stop_set_ids(project_id, ids)
    return ids


def update_stop_signal(ctx: JobContext, project_id: int, labeled: int, predictions: StopPredictions,
                       pool_ids: Sequence[int]) -> dict[str, Any]:
    """Compare this model's predictions on the stop set with the last recorded model's;
    `predictions(stop_ids)` returns them (None: the stop set has no features yet)."""
    if not pool_ids and ctx.store.stop_set_ids(project_id) is None:
        return {}
    predicted = predictions(stop_set_ids(ctx, project_id, pool_ids))
    if predicted is None:
        return {}
    raw = ctx.store.stop_state(project_id)
    state = StabilizingPredictions.from_dict(raw) if raw else StabilizingPredictions()
    signal = state.update(predicted, labeled)
    ctx.store.set_stop_state(project_id, state.to_dict())
    out = signal.to_dict()
    out["history"] = out["history"][-10:]
    return out


def held_out(ctx: JobContext, project_id: int, task_ids: Sequence[int]) -> tuple[BoolArray, dict[str, int]]:
    """Which of these labeled tasks the estimate holds out (audits and ground truth), and how many
    of each (a task both an audit and ground truth counts as ground truth)."""
    audits, truth = ctx.store.audit_ids(project_id), ctx.store.ground_truth_ids(project_id)
    is_truth = np.array([t in truth for t in task_ids], bool)
    is_audit = np.array([t in audits for t in task_ids], bool) & ~is_truth
    return is_truth | is_audit, {"audits": int(is_audit.sum()), "ground_truth": int(is_truth.sum())}


def classification_quality(ctx: JobContext, project_id: int, schema: LabelSchema, labeled_features: FloatArray,
                           labels: list[list[str]], task_ids: list[int], pool_features: FloatArray) -> None:
    """The honest estimate from the audits and ground truth among these labels (stored for the page
    and the fast updates), the CV-independent part of the CV job."""
    mask, counts = held_out(ctx, project_id, task_ids)
    try:
        estimate = audit_estimate(labeled_features, labels, mask, pool_features, schema, ctx.settings.seed)
    except ValueError as exc:  # e.g. the other labels hold one class: nothing to fit
        estimate = QualityEstimate(None, 0.0, 1.0, int(mask.sum()), "audit-heldout-ppi", str(exc)[:200])
    ctx.store.set_quality_estimate(project_id, {**estimate.to_dict(), "labeled": len(labels), **counts,
                                                "metric": "accuracy"})


def tagging_quality(ctx: JobContext, project_id: int, held_tags: list[list[str]],
                    predicted: list[list[str]], labeled: int, counts: dict[str, int]) -> None:
    estimate = audit_span_f1(held_tags, predicted, seed=ctx.settings.seed)
    ctx.store.set_quality_estimate(project_id, {**estimate.to_dict(), "labeled": labeled, **counts,
                                                "metric": "span F1", "method": "audit-heldout"})


def classification_suspects(ctx: JobContext, project_id: int, config: LabelConfig, labeled_features: FloatArray,
                            labels: list[list[str]], task_ids: list[int]) -> None:
    """Labels a cross-validated head contradicts: stored for the page, written to Label Studio."""
    if config.schema.multi_label:
        ctx.store.set_suspects(project_id, {"suspects": [], "note": "suspect labels are single-label only"})
        return
    try:
        found = suspect_labels(labeled_features, labels, config.schema, ctx.settings.seed)[:MAX_SUSPECTS]
    except ValueError as exc:
        ctx.store.set_suspects(project_id, {"suspects": [], "note": str(exc)[:200]})
        return
    listed = [{"task": task_ids[s.index], "given": s.given, "predicted": s.predicted,
               "confidence": round(float(s.confidence), 3)} for s in found]
    record: dict[str, Any] = {"suspects": listed, "labeled": len(labels), "ls_version": SUSPECT_VERSION}
    try:
        ctx.ls.delete_model_version(project_id, SUSPECT_VERSION)
        if listed:
            index = {name: i for i, name in enumerate(config.labels)}
            predictions = []
            for s in found:
                probs = np.zeros(len(config.labels), np.float32)
                probs[index[s.predicted]] = s.confidence
                result = classification_results(probs, config)
                predictions.append({"task": task_ids[s.index], "model_version": SUSPECT_VERSION,
                                    "score": round(float(s.confidence), 3), "result": result})
            ctx.ls.import_predictions(project_id, predictions)
    except LabelStudioError as exc:
        record["note"] = f"not written to Label Studio: {exc}"[:300]
        log.warning("project %s: suspect labels not written to Label Studio: %s", project_id, exc)
    ctx.store.set_suspects(project_id, record)
