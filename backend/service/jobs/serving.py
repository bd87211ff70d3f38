"""Which model serves a project, decided at each full iteration (`measure_serving`), and the feature
set that follows the decision: a winning fine-tune's own features once they are complete, else the
pretrained encoder's. The rule itself is `backend.engine.selection.decide_serving`, shared with
`bench-labels`."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from backend.engine.errors import NotEnoughLabelsError
from backend.engine.metrics import strict_span_f1
from backend.engine.proxy import ProxyHead
from backend.engine.selection import ModelEstimate, ServingDecision, decide_serving, switch_standard_errors
from backend.engine.token_head import TokenHead
from backend.engine.types import IndexArray, TaggingExample, TaskType, classification_examples, tagging_examples
from backend.labeling import ConversionReport, LabelConfig, result_choices
from backend.labeling.spans import tagging_example
from backend.service.checkpoints import checkpoint_dir
from backend.service.features import WordFeatureSet, finetuned_key
from backend.service.jobs.feature_jobs import request_features
from backend.service.jobs.gate import (
    FeatureTarget,
    aligned_features_wanted,
    base_feature_target,
    fast_path_blocker,
    without_win,
)
from backend.service.records import UNTRAINED, ProjectState
from backend.service.runtime import JobContext

TAGGING_SERVING_RULE = ("the fine-tuned model serves once its strict span F1 on the sentences labeled after it was "
                        "trained (at least FINETUNE_MIN_HELDOUT of them) beats the token head's on the same sentences, "
                        "the head fitted on the sentences that fine-tune was trained on; the token head then re-fits "
                        "on the fine-tune's word features. Until then the token head serves on the pretrained "
                        "encoder's")
SERVING_RULE = ("the fine-tuned model serves once its accuracy on labels that arrived after it was trained "
                "(at least FINETUNE_MIN_HELDOUT of them) beats the proxy head's cross-validated accuracy by more "
                "than one standard error of that held-out accuracy; until then the proxy head serves")


def measure_serving(ctx: JobContext, project_id: int, state: ProjectState, report: ConversionReport,
                    config: LabelConfig) -> ServingDecision:
    """Which model serves after this full iteration: the previous fine-tune's accuracy on the labels
    that arrived after it was trained (its predictions are in the store: held out, free), against
    the proxy head's cross-validated accuracy on all labels. Never raises: a missing number is
    stated, not guessed."""
    blocker = fast_path_blocker(ctx, without_win(state))
    if blocker is not None:
        return ServingDecision(serve="finetuned", finetune_won=False, why=blocker, rule=SERVING_RULE)
    if state.task_type is TaskType.TAGGING:
        return _measure_tagging(ctx, project_id, state, report, config)
    examples = classification_examples(report.examples)
    labeled = {int(t): set(ex.labels) for t, ex in zip(report.task_ids, examples, strict=True)}
    finetuned = _finetuned_estimate(ctx, project_id, state.acq_version, labeled)
    proxy = _proxy_estimate(ctx, project_id, state, report, config)
    return decide_serving(finetuned, proxy, ctx.settings.finetune_min_heldout, SERVING_RULE)


def _measure_tagging(ctx: JobContext, project_id: int, state: ProjectState, report: ConversionReport,
                     config: LabelConfig) -> ServingDecision:
    """Tagging's choice, on strict span F1 over the same sentences: the previous fine-tune's spans
    on the sentences labeled after it against the token head's there, the head fitted on the
    pretrained encoder's word features of the sentences that fine-tune was trained on (paired, as
    `bench-labels`' hybrid; no margin: `selection.TAGGING_SWITCH_STANDARD_ERRORS`). Without an
    earlier fine-tune the head's cross-validated span F1 is shown."""
    examples = tagging_examples(report.examples)
    gold = {int(t): ex for t, ex in zip(report.task_ids, examples, strict=True)}
    features = ctx.features.load_words(project_id, base_feature_target(ctx, TaskType.TAGGING).key)
    measured = _finetuned_span_f1(ctx, project_id, state.acq_version, gold, config)
    paired = _paired_token_head_estimate(features, gold, measured, config, ctx.settings.seed)
    proxy = paired
    if paired.accuracy is None:  # no earlier fine-tune, or it cannot be paired: the CV, saying why
        cv = _token_head_estimate(features, gold, config, ctx.settings.seed)
        proxy = replace(cv, note="; ".join(n for n in (paired.note, cv.note) if n))
    return decide_serving(measured.estimate, proxy, ctx.settings.finetune_min_heldout, TAGGING_SERVING_RULE,
                          metric="span F1", standard_errors=switch_standard_errors(TaskType.TAGGING),
                          proxy_measure="the token head's" if paired.accuracy is not None else "proxy CV")


@dataclass(frozen=True)
class _HeldOutSpans:
    """A fine-tune's span F1 on the sentences labeled after it, which of the labeled sentences it
    was trained on, and which later ones the estimate read (in the labels' order)."""

    estimate: ModelEstimate
    trained: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)


def _finetuned_span_f1(ctx: JobContext, project_id: int, prev: str, gold: Mapping[int, TaggingExample],
                       config: LabelConfig) -> _HeldOutSpans:
    if prev == UNTRAINED:
        return _HeldOutSpans(ModelEstimate(note="no earlier fine-tune to measure"))
    trained_on = ctx.store.trained_on(project_id, prev)
    if trained_on is None:
        return _HeldOutSpans(ModelEstimate(note=f"{prev}'s training labels are not recorded"))
    later = [t for t in gold if t not in trained_on]
    entries = ctx.store.get_scores(project_id, prev, later)
    truth, predicted, held = [], [], []
    for t in later:
        if t not in entries or gold[t].text is None:
            continue
        example, _ = tagging_example(t, gold[t].text or "", entries[t].result, config, [])
        if example is not None and len(example.tags) == len(gold[t].tags):
            truth.append(list(gold[t].tags))
            predicted.append(list(example.tags))
            held.append(t)
    f1 = round(strict_span_f1(truth, predicted), 4) if truth else None
    estimate = ModelEstimate(accuracy=f1, labels=len(truth), version=prev,
                             note=f"strict span F1 of {prev} on the sentences labeled after it was trained")
    return _HeldOutSpans(estimate, [t for t in gold if t in trained_on], held)


def _word_rows(features: WordFeatureSet, gold: Mapping[int, TaggingExample],
               task_ids: list[int]) -> tuple[IndexArray, list[int]]:
    """The rows of `task_ids` in `features`, and the positions of those whose features cover the
    labeled sentence word for word (a task edited after it was encoded does not)."""
    rows, found = features.rows(task_ids)
    lengths = features.words.lengths
    return rows, [i for i in np.flatnonzero(found) if int(lengths[rows[i]]) == len(gold[task_ids[i]].words)]


def _paired_token_head_estimate(features: WordFeatureSet, gold: Mapping[int, TaggingExample],
                                measured: _HeldOutSpans, config: LabelConfig, seed: int) -> ModelEstimate:
    """The token head fitted on the sentences the fine-tune was trained on, scored on the ones its
    estimate read; no estimate where any of those lacks word features."""
    train, held = measured.trained, measured.held
    if not train or not held:
        return ModelEstimate()
    rows, usable = _word_rows(features, gold, train + held)
    keep = [i for i in usable if i < len(train)]
    if len(usable) - len(keep) < len(held):
        return ModelEstimate(note="some held-out sentences have no word features yet: the head's CV span F1 instead")
    prev = measured.estimate.version
    try:
        head = TokenHead(config.schema, seed).fit(features.words.take(rows[keep]),
                                                  [list(gold[train[i]].tags) for i in keep])
    except (NotEnoughLabelsError, ValueError) as exc:
        return ModelEstimate(note=f"the token head could not be fitted on {prev}'s sentences: {exc}"[:300])
    predicted = head.predict(features.words.take(rows[len(train):])).all_tags()
    f1 = round(strict_span_f1([list(gold[t].tags) for t in held], predicted), 4)
    return ModelEstimate(accuracy=f1, labels=len(keep),
                         note=f"strict span F1 of the token head fitted on the {len(keep)} sentences {prev} was "
                              f"trained on, on the same {len(held)} later sentences")


def _token_head_estimate(features: WordFeatureSet, gold: Mapping[int, TaggingExample], config: LabelConfig,
                         seed: int) -> ModelEstimate:
    if not len(features.ids):
        return ModelEstimate(note="no word features yet")
    task_ids = list(gold)
    rows, keep = _word_rows(features, gold, task_ids)
    tags = [list(gold[task_ids[i]].tags) for i in keep]
    estimate = TokenHead(config.schema, seed).cross_validate(features.words.take(rows[keep]), tags)
    missing = len(task_ids) - len(keep)
    note = f"{missing} labeled sentences without word features" if missing else ""
    return ModelEstimate(accuracy=estimate.f1, labels=len(tags), folds=estimate.folds, note=note)


def _finetuned_estimate(ctx: JobContext, project_id: int, prev: str, labeled: Mapping[int, object]) -> ModelEstimate:
    if prev == UNTRAINED:
        return ModelEstimate(note="no earlier fine-tune to measure")
    trained_on = ctx.store.trained_on(project_id, prev)
    if trained_on is None:
        return ModelEstimate(note=f"{prev}'s training labels are not recorded")
    later = [t for t in labeled if t not in trained_on]
    entries = ctx.store.get_scores(project_id, prev, later)
    hits = [set(result_choices(entries[t].result)) == labeled[t] for t in later if t in entries]
    return ModelEstimate(accuracy=round(sum(hits) / len(hits), 4) if hits else None, labels=len(hits), version=prev,
                         note=f"accuracy of {prev} on the labels that arrived after it was trained")


def _proxy_estimate(ctx: JobContext, project_id: int, state: ProjectState, report: ConversionReport,
                    config: LabelConfig) -> ModelEstimate:
    """CV accuracy of the head on the pretrained encoder's features, even while the fast path runs on
    a fine-tune's (those were trained on these labels: their CV accuracy would flatter the proxy)."""
    if not state.feature_key:
        return ModelEstimate(note="no pool features yet")
    features = ctx.features.load(project_id, base_feature_target(ctx).key)
    rows, found = features.rows([int(t) for t in report.task_ids])
    examples = classification_examples(report.examples)
    labels = [list(examples[i].labels) for i in np.flatnonzero(found)]
    missing = int((~found).sum())
    try:
        head = ProxyHead(config.schema, ctx.settings.seed).fit(features.matrix[rows[found]], labels)
    except (NotEnoughLabelsError, ValueError) as exc:
        return ModelEstimate(note=str(exc)[:300])
    estimate = head.estimate
    note = f"{missing} labeled tasks without features" if missing else ""
    if estimate is None:
        return ModelEstimate(labels=len(labels), note=note)
    return ModelEstimate(accuracy=estimate.accuracy, labels=len(labels), folds=estimate.folds, c=estimate.c,
                         note=note)


def use_base_features(ctx: JobContext, project_id: int) -> None:
    """The proxy serves again: its head works on the pretrained encoder's features (kept on disk;
    tasks missing from them are encoded by the next fast update or a build)."""
    state = ctx.store.get_project(project_id)
    if state is not None and state.feature_source_version:
        target = base_feature_target(ctx, state.task_type)
        ctx.store.set_fields(project_id, feature_key=target.key, feature_source=target.source,
                             feature_source_version="")


def follow_serving_model(ctx: JobContext, project_id: int, version: str, served: str,
                         full_rescore: bool) -> str | None:
    """After a published iteration: when its fine-tune won and scored the whole pool, build its
    features (complete the set its chunks kept, or a tagger's per-word set from its checkpoint) so
    the fast path goes on from it; with no set at all yet, build the pretrained encoder's. Returns
    the feature build's job id when one was queued. (A UPS iteration's winner keeps the earlier
    winner's features, or none: encoding the whole pool again would spend the inference UPS saves.)"""
    state = ctx.store.get_project(project_id)
    if state is None or not aligned_features_wanted(ctx, state):
        return None
    if served == "finetuned" and state.finetune_won and full_rescore:
        target = FeatureTarget(finetuned_key(version, state.task_type),
                               str(checkpoint_dir(ctx.settings.model_dir, project_id, version)), version)
        return request_features(ctx, project_id, f"aligned features of {version}", target=target)
    if not state.feature_key:
        return request_features(ctx, project_id, "after a full iteration")
    return None


def drop_unused_features(ctx: JobContext, state: ProjectState) -> None:
    """Before a full rescore writes a new fine-tune's set: delete the sets of fine-tunes that lost
    (7.7 MB per 10k tasks each), keeping the one in use, the pretrained encoder's and the latest
    fine-tune's (its build may still be completing), with the cold start's typical sets computed
    on the dropped ones."""
    keep = {state.feature_key, base_feature_target(ctx, state.task_type).key,
            finetuned_key(state.acq_version, state.task_type)}
    ctx.features.drop_others(state.project_id, keep)
    ctx.store.drop_typical_except(state.project_id, keep)
