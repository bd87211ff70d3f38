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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

import numpy as np

from backend.engine.acquisition.strategies import make_strategy
from backend.engine.callbacks import CancelCheck, StageProgress, Stages
from backend.engine.data.iob import to_iob2
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.metrics import decode_labels, evaluate
from backend.engine.models.factory import ModelFactory, describe
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.plasm.tracin import FORM as TRACIN_FORM
from backend.engine.plasm.tracin import TracInCheckpoints
from backend.engine.types import ClassificationExample, Example, LabelSchema, Predictions, TaggingExample, TaskType

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """Anything trained that predicts examples (an extra teacher: e.g. the acquisition model)."""

    def predict(self, examples: Sequence[Example], **kwargs: Any) -> Predictions: ...


FilterMode = Literal["both", "tracin", "uncertainty", "none"]
Chosen = Literal["plasm", "gold_only"]
FILTERS: tuple[str, ...] = get_args(FilterMode)
STAGES = (
    "split", "teacher", "pseudo_label", "filter_uncertainty", "filter_tracin",
    "successor_gold_only", "successor_plasm", "evaluate", "export",
)
PLASM, GOLD_ONLY = "plasm", "gold_only"


@dataclass
class PlasmOptions:
    teacher: str = field(metadata={"help": "pseudo-labeling model: hub name, packaged alias or directory"})
    successor: str = field(
        metadata={"help": "successor: any AutoModelFor... checkpoint, or cnn / bilstm-crf / classical"}
    )
    filter: FilterMode = field(default="both", metadata={"help": "both | tracin | uncertainty | none"})
    uncertainty_fraction: float = field(
        default=0.5, metadata={"help": "with filter=both: part of the dropped share taken by least confidence"}
    )
    dev_share: float = field(default=0.1, metadata={"help": "gold share held out as the dev split"})
    max_pool: int | None = field(default=None, metadata={"help": "pseudo-label at most this many (seeded subsample)"})
    tracin_checkpoints: int = field(default=3, metadata={"help": "TracIn-CP checkpoints (evenly spaced epochs)"})
    compare_gold_only: bool = field(default=True, metadata={"help": "also train the successor on gold only"})
    successor_all_gold: bool = field(default=False, metadata={
        "help": "train the successor on every gold label, the dev split too (then no dev score for it, "
                "and no gold-only comparison)"})
    teachers: int = field(default=1, metadata={
        "help": "teachers fine-tuned (seeds seed, seed+1, ...), each holding out its own dev fold of dev_share; "
                "their averaged probabilities pseudo-label the pool, their out-of-fold dev score sets the "
                "filter share"})
    seed: int = 0
    teacher_training: TrainingConfig = field(default_factory=TrainingConfig)
    successor_training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise ValueError(f"unknown filter '{self.filter}'; choose from {', '.join(FILTERS)}")
        if not 0 <= self.uncertainty_fraction <= 1:
            raise ValueError("uncertainty_fraction must be in [0, 1]")
        if not 0 < self.dev_share < 1:
            raise ValueError("dev_share must be in (0, 1)")
        if self.max_pool is not None and self.max_pool < 1:
            raise ValueError("max_pool must be >= 1")
        if self.tracin_checkpoints < 1:
            raise ValueError("tracin_checkpoints must be >= 1")
        if self.teachers < 1:
            raise ValueError("teachers must be >= 1")
        if self.successor_all_gold and self.compare_gold_only:
            raise ValueError("successor_all_gold leaves no dev split to compare the successors on: "
                             "set compare_gold_only to false")

    def teacher_factory(self, schema: LabelSchema) -> ModelFactory:
        return ModelFactory(self.teacher, schema, self.teacher_training)

    def successor_factory(self, schema: LabelSchema) -> ModelFactory:
        return ModelFactory(self.successor, schema, self.successor_training)


@dataclass(frozen=True)
class FilterPlan:
    """How many pseudo-labels each filter drops: `total = round((1 - dev_score) * n)`."""

    share: float
    total: int
    uncertainty: int
    tracin: int


def filter_plan(n: int, dev_score: float, mode: FilterMode, uncertainty_fraction: float = 0.5) -> FilterPlan:
    """The filtering rule: drop the share `1 - dev_score` of the `n` pseudo-labels (none for
    mode 'none'); 'both' gives `round(uncertainty_fraction * total)` to least confidence, the
    rest to TracIn."""
    if mode not in FILTERS:
        raise ValueError(f"unknown filter '{mode}'")
    share = float(min(1.0, max(0.0, 1.0 - dev_score)))
    if mode == "none" or n == 0:
        return FilterPlan(share if mode != "none" else 0.0, 0, 0, 0)
    total = int(round(share * n))
    if mode == "uncertainty":
        return FilterPlan(share, total, total, 0)
    if mode == "tracin":
        return FilterPlan(share, total, 0, total)
    unc = int(round(uncertainty_fraction * total))
    return FilterPlan(share, total, unc, total - unc)


@dataclass
class PseudoLabels:
    """Stages 1-3: the dev split, the trained teacher, and the pool with its pseudo-labels."""

    schema: LabelSchema
    gold_train: list[Example]
    dev: list[Example]
    teacher: TransformerModel  # the first teacher (the one whose dev fold is `dev`)
    teacher_dev: dict[str, float]  # out-of-fold over every teacher's dev fold
    pool: list[Example]  # pseudo-labeled copies of the (subsampled) pool
    confidence: np.ndarray  # teacher confidence per pool example (max P / exp(-MNLP))
    pool_indices: np.ndarray  # positions in the caller's unlabeled list
    stage_seconds: dict[str, float] = field(default_factory=dict)
    unlabeled_total: int = 0  # size of the caller's pool before `max_pool` subsampling
    teachers: int = 1  # teachers averaged into the pseudo-labels
    teacher_dev_size: int = 0  # gold examples the dev score was measured on (all dev folds)
    extra_teachers: int = 0  # trained models given by the caller, averaged in (not scored on dev)

    @property
    def dev_score(self) -> float:
        return float(self.teacher_dev["main"])


@dataclass(frozen=True)
class TracInReport:
    """How the TracIn filter scored: the form used, its checkpoints and their weights, its cost."""

    form: str
    checkpoint_steps: list[int]
    learning_rate_weights: list[float]
    scoring_seconds: float


@dataclass(frozen=True)
class FilterReport:
    """What the filter did: mode, the rule's share `1 - dev_score`, what it dropped."""

    mode: FilterMode
    dev_score: float
    share: float
    dropped: int
    dropped_share: float
    uncertainty_fraction: float
    tracin: TracInReport | None  # None when TracIn did not run
    teachers: int = 1  # teachers averaged into the pseudo-labels
    dev_examples: int = 0  # gold examples the dev score was measured on (every teacher's dev fold)
    extra_teachers: int = 0  # the caller's trained models averaged in as well (the acquisition model)


@dataclass(frozen=True)
class PlasmSizes:
    """Example counts at each step (gold, dev split, pool, dropped, kept, successor training set)."""

    gold: int
    gold_train: int
    dev: int
    unlabeled: int
    pool: int
    pseudo_kept: int
    dropped_uncertainty: int
    dropped_tracin: int
    successor_train: int


@dataclass
class PlasmResult:
    schema: LabelSchema
    options: PlasmOptions
    chosen: Chosen
    successors: dict[str, TransformerModel]
    teacher: TransformerModel
    metrics: dict[str, dict[str, float]]  # dev metrics: teacher, successor_plasm, successor_gold_only
    sizes: PlasmSizes
    filter: FilterReport
    stage_seconds: dict[str, float]
    kept_indices: np.ndarray  # positions (in the caller's unlabeled list) of the kept pseudo-labels

    @property
    def model(self) -> TransformerModel:
        """The successor to ship: the better of the PLASM and gold-only ones on the dev split."""
        return self.successors[self.chosen]

    @property
    def chosen_reason(self) -> str:
        plasm = self.metrics.get("successor_plasm", {}).get("main")
        gold = self.metrics.get("successor_gold_only", {}).get("main")
        if self.options.successor_all_gold:
            return "the PLASM successor trained on every gold label, the dev split too"
        if gold is None:
            return "the gold-only successor was not trained; PLASM successor kept"
        if self.chosen == PLASM:
            return f"PLASM successor dev {plasm:.4f} >= gold-only successor dev {gold:.4f}"
        return f"gold-only successor dev {gold:.4f} > PLASM successor dev {plasm:.4f}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `metrics.json` and returned by the successor job."""
        return {
            "task_type": self.schema.task_type.value,
            "labels": list(self.schema.labels),
            "chosen": self.chosen,
            "chosen_reason": self.chosen_reason,
            "models": {"teacher": describe(self.teacher), "successor": describe(self.model)},
            "dev_metrics": self.metrics,
            "sizes": asdict(self.sizes),
            "filter": {**asdict(self.filter), "tracin": asdict(self.filter.tracin) if self.filter.tracin else {}},
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "options": asdict(self.options),
        }


def split_gold(gold: Sequence[Example], dev_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded hold-out of `round(dev_share * n)` gold examples (at least one on each side)."""
    return split_folds(gold, dev_share, seed, 1)[0]


def split_folds(gold: Sequence[Example], dev_share: float, seed: int, folds: int
                ) -> list[tuple[list[Example], list[Example]]]:
    """`folds` disjoint seeded dev folds of `round(dev_share * n)` gold examples each (at least
    one), each with the rest as its training split; the first fold is `split_gold`'s."""
    n = len(gold)
    if n < 2:
        raise NotEnoughLabelsError(f"PLASM needs at least 2 gold examples (one for the dev split), got {n}")
    n_dev = min(n - 1, max(1, int(round(dev_share * n))))
    if folds * n_dev > n - 1:
        raise NotEnoughLabelsError(f"{folds} teachers need {folds} disjoint dev folds of {n_dev} and one training "
                                   f"example: more than the {n} gold examples")
    order = np.random.default_rng(seed).permutation(n)
    out = []
    for j in range(folds):
        dev_idx = np.sort(order[j * n_dev:(j + 1) * n_dev])
        train_idx = np.sort(np.setdiff1d(order, dev_idx))
        out.append(([gold[i] for i in train_idx], [gold[i] for i in dev_idx]))
    return out


def average_predictions(predictions: Sequence[Predictions]) -> Predictions:
    """The ensemble's predictions: the mean of the members' probabilities (per word for tagging)."""
    first = predictions[0]
    if len(predictions) == 1:
        return first
    if isinstance(first.probs, np.ndarray):
        probs: Any = np.mean([p.probs for p in predictions], axis=0)
    else:
        probs = [np.mean(rows, axis=0) for rows in zip(*(p.probs for p in predictions))]
    return Predictions(first.task_type, probs, multi_label=first.multi_label)


def concat_predictions(predictions: Sequence[Predictions]) -> Predictions:
    """Predictions for several example lists, one after the other."""
    first = predictions[0]
    if isinstance(first.probs, np.ndarray):
        probs: Any = np.concatenate([p.probs for p in predictions], axis=0)
    else:
        probs = [row for p in predictions for row in p.probs]
    return Predictions(first.task_type, probs, multi_label=first.multi_label)


def strip_labels(example: Example) -> Example:
    """An unlabeled copy of an example (what the pool holds)."""
    if isinstance(example, TaggingExample):
        return TaggingExample(list(example.words), [], example.offsets, example.text)
    return ClassificationExample(example.text)  # type: ignore[union-attr]


def pseudo_examples(predictions, pool: Sequence[Example], schema: LabelSchema) -> list[Example]:
    """Copies of the pool examples carrying the teacher's argmax labels (valid IOB2 for tagging)."""
    decoded = decode_labels(predictions, schema)
    out: list[Example] = []
    for ex, labels in zip(pool, decoded):
        if schema.task_type is TaskType.CLASSIFICATION:
            out.append(ClassificationExample(ex.text, tuple(labels)))  # type: ignore[union-attr]
        else:
            out.append(TaggingExample(list(ex.words), to_iob2(labels), ex.offsets, ex.text))  # type: ignore[union-attr]
    return out


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
        indices = np.arange(len(unlabeled))
        if options.max_pool is not None and len(unlabeled) > options.max_pool:
            rng = np.random.default_rng([options.seed, 1])
            indices = np.sort(rng.choice(len(unlabeled), options.max_pool, replace=False))
        pool = [unlabeled[i] for i in indices]
    with stages.stage("teacher"):
        teachers, dev_predictions = [], []
        for j, (train_j, dev_j) in enumerate(folds):
            teachers.append(options.teacher_factory(schema).new(options.seed + j))
            teachers[-1].fit(train_j, progress=_member(stages.report, j, len(folds)))
            dev_predictions.append(teachers[-1].predict(dev_j))
        dev_all = [ex for _, dev_j in folds for ex in dev_j]
        teacher_dev = evaluate(concat_predictions(dev_predictions), dev_all, schema)
    with stages.stage("pseudo_label"):
        if pool:
            members = [*teachers, *extra_teachers]
            predictions = average_predictions([
                t.predict(pool, progress=_member(stages.report, j, len(members))) for j, t in enumerate(members)])
            labeled = pseudo_examples(predictions, pool, schema)
            confidence = make_strategy("auto", schema.task_type).score(predictions).confidence
        else:
            labeled, confidence = [], np.zeros(0)
    return PseudoLabels(schema, gold_train, dev, teachers[0], teacher_dev, labeled, np.asarray(confidence),
                        indices, dict(stages.seconds), len(unlabeled), len(teachers), len(dev_all),
                        len(extra_teachers))


def _member(report: Callable[[int, int], None], j: int, k: int) -> Callable[[int, int], None]:
    """Progress of member `j` of `k` runs of the same work, as progress over all of them."""
    if k == 1:
        return report
    return lambda done, total: report(j * total + done, k * total)


def _drop_least_confident(labels: PseudoLabels, keep: np.ndarray, count: int) -> np.ndarray:
    if not count:
        return keep
    # least confident first; a stable sort keeps the pool order among ties
    order = np.argsort(labels.confidence, kind="stable")
    return np.sort(order[count:])


def _drop_most_influential(
    labels: PseudoLabels, keep: np.ndarray, count: int, options: PlasmOptions, stages: Stages
) -> tuple[np.ndarray, TracInReport | None]:
    """Train a successor probe on gold + candidates and drop the `count` highest TracIn self-influences."""
    if not count or not len(keep):
        return keep, None
    candidates = [labels.pool[i] for i in keep]
    probe = options.successor_factory(labels.schema).new(options.seed)
    tracker = TracInCheckpoints(probe, candidates, options.tracin_checkpoints, stages.report,
                                training_size=len(labels.gold_train) + len(candidates))
    probe.fit(labels.gold_train + candidates, progress=tracker.progress)
    ranked = np.argsort(-tracker.scores, kind="stable")  # highest self-influence first
    report = TracInReport(TRACIN_FORM, tracker.steps, tracker.weights, round(tracker.seconds, 3))
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
              ) -> tuple[dict, Chosen]:
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
    keep = np.arange(n)
    with stages.stage("filter_uncertainty"):
        keep = _drop_least_confident(labels, keep, plan.uncertainty)
    with stages.stage("filter_tracin"):
        keep, tracin = _drop_most_influential(labels, keep, plan.tracin, options, stages)
    kept = [labels.pool[i] for i in keep]
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
    return PlasmResult(labels.schema, options, chosen, successors, labels.teacher, metrics, sizes, report,
                       {**labels.stage_seconds, **stages.seconds}, labels.pool_indices[keep])


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
