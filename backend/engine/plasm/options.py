"""PLASM's settings (`PlasmOptions`), its stage names and the filtering rule (`filter_plan`):
how many pseudo-labels each filter drops, from the teacher's dev score."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from backend.engine.models.config import TrainingConfig
from backend.engine.models.factory import ModelFactory
from backend.engine.types import LabelSchema

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
