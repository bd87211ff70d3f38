"""The records a PLASM run produces: the teacher's pseudo-labels (`PseudoLabels`, stages 1-3) and
the result (`PlasmResult`, stages 4-6) with its filter report and example counts."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from backend.engine.models.factory import describe
from backend.engine.models.transformer import TransformerModel
from backend.engine.plasm.options import PLASM, Chosen, FilterMode, PlasmOptions
from backend.engine.types import Example, FloatArray, IndexArray, LabelSchema


@dataclass
class PseudoLabels:
    """Stages 1-3: the dev split, the trained teacher, and the pool with its pseudo-labels."""

    schema: LabelSchema
    gold_train: list[Example]
    dev: list[Example]
    teacher: TransformerModel  # the first teacher (the one whose dev fold is `dev`)
    teacher_dev: dict[str, float]  # out-of-fold over every teacher's dev fold
    pool: list[Example]  # pseudo-labeled copies of the (subsampled) pool
    confidence: FloatArray  # teacher confidence per pool example (max P / exp(-MNLP))
    pool_indices: IndexArray  # positions in the caller's unlabeled list
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
    kept_indices: IndexArray  # positions (in the caller's unlabeled list) of the kept pseudo-labels

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
