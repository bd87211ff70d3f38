"""PLASM: Pseudo-Labeling for Acquisition-Successor Mismatch (paper section 3.3; DESIGN.md §2).

After active learning with a small acquisition model, build the final model of any architecture:

1. split the gold labels, holding out `dev_share` (10%) as a dev split;
2. fine-tune the **teacher** (the model the acquisition model was distilled from) on the rest;
3. pseudo-label the unlabeled pool with it;
4. filter: drop the share `1 - dev_score` of the pseudo-labels (the teacher's dev score; not the
   inverted 'adaptive' threshold of the paper's first repository), first the least confident
   ones, then the highest TracIn self-influence ones (`backend.engine.plasm.tracin`: exact last-layer form
   over checkpoints of a successor trained on gold + the remaining pseudo-labels);
5. train the **successor** (any `AutoModelFor...` checkpoint, or the classical CNN / BiLSTM-CRF)
   on gold + kept pseudo-labels, and the same successor on gold only;
6. evaluate teacher and both successors on the dev split, keep the better successor.

`run_plasm` runs it all with progress `(stage, done, total)` and a cancel check, and touches no
disk; `export_successor` writes the kept successor as a `from_pretrained` directory with
`metrics.json` and a model card, atomically, plus a `.tar.gz`. Nothing here knows about Flask,
Redis or Label Studio: the RQ job wraps these two calls.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.engine.data import to_iob2
from backend.engine.errors import ActiveLearningError, NotEnoughLabelsError
from backend.engine.metrics import decode_labels, evaluate
from backend.engine.acquisition.strategies import make_strategy
from backend.engine.models.factory import describe, make_model
from backend.engine.plasm.tracin import FORM as TRACIN_FORM
from backend.engine.plasm.tracin import TracInCheckpoints
from backend.engine.models.transformer import TrainingConfig, TransformerModel, replace_directory
from backend.engine.types import ClassificationExample, Example, LabelSchema, TaggingExample, TaskType

log = logging.getLogger(__name__)

FILTERS = ("both", "tracin", "uncertainty", "none")
STAGES = (
    "split", "teacher", "pseudo_label", "filter_uncertainty", "filter_tracin",
    "successor_gold_only", "successor_plasm", "evaluate", "export",
)
PLASM, GOLD_ONLY = "plasm", "gold_only"
ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)
CancelFn = Callable[[], bool]


class PlasmCancelled(ActiveLearningError):
    """The job was cancelled between two steps; nothing was exported."""


class PlasmStageError(ActiveLearningError):
    """A PLASM stage failed; `stage` names it and the cause is chained."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"PLASM stage '{stage}' failed: {type(cause).__name__}: {cause}")
        self.stage = stage


@dataclass
class PlasmOptions:
    teacher: str = field(metadata={"help": "pseudo-labeling model: hub name, packaged alias or directory"})
    successor: str = field(
        metadata={"help": "successor: any AutoModelFor... checkpoint, or cnn / bilstm-crf / classical"}
    )
    filter: str = field(default="both", metadata={"help": "both | tracin | uncertainty | none"})
    uncertainty_fraction: float = field(
        default=0.5, metadata={"help": "with filter=both: part of the dropped share taken by least confidence"}
    )
    dev_share: float = field(default=0.1, metadata={"help": "gold share held out as the dev split"})
    max_pool: int | None = field(default=None, metadata={"help": "pseudo-label at most this many (seeded subsample)"})
    tracin_checkpoints: int = field(default=3, metadata={"help": "TracIn-CP checkpoints (evenly spaced epochs)"})
    compare_gold_only: bool = field(default=True, metadata={"help": "also train the successor on gold only"})
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


@dataclass(frozen=True)
class FilterPlan:
    """How many pseudo-labels each filter drops: `total = round((1 - dev_score) * n)`."""

    share: float
    total: int
    uncertainty: int
    tracin: int


def filter_plan(n: int, dev_score: float, mode: str, uncertainty_fraction: float = 0.5) -> FilterPlan:
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
    teacher: TransformerModel
    teacher_dev: dict[str, float]
    pool: list[Example]  # pseudo-labeled copies of the (subsampled) pool
    confidence: np.ndarray  # teacher confidence per pool example (max P / exp(-MNLP))
    pool_indices: np.ndarray  # positions in the caller's unlabeled list
    stage_seconds: dict[str, float] = field(default_factory=dict)
    unlabeled_total: int = 0  # size of the caller's pool before `max_pool` subsampling

    @property
    def dev_score(self) -> float:
        return float(self.teacher_dev["main"])


@dataclass
class PlasmResult:
    schema: LabelSchema
    options: PlasmOptions
    chosen: str  # 'plasm' or 'gold_only'
    successors: dict[str, TransformerModel]
    teacher: TransformerModel
    metrics: dict[str, dict[str, float]]  # dev metrics: teacher, successor_plasm, successor_gold_only
    sizes: dict[str, int]
    filter: dict
    stage_seconds: dict[str, float]
    kept_indices: np.ndarray  # positions (in the caller's unlabeled list) of the kept pseudo-labels

    @property
    def model(self) -> TransformerModel:
        """The successor to ship: the better of the PLASM and gold-only ones on the dev split."""
        return self.successors[self.chosen]

    def to_dict(self) -> dict:
        options = asdict(self.options)
        return {
            "task_type": self.schema.task_type.value,
            "labels": list(self.schema.labels),
            "chosen": self.chosen,
            "chosen_reason": _choice_reason(self.chosen, self.metrics),
            "models": {
                "teacher": describe(self.teacher),
                "successor": describe(self.model),
            },
            "dev_metrics": self.metrics,
            "sizes": self.sizes,
            "filter": self.filter,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "options": options,
        }


def _choice_reason(chosen: str, metrics: dict[str, dict[str, float]]) -> str:
    plasm = metrics.get("successor_plasm", {}).get("main")
    gold = metrics.get("successor_gold_only", {}).get("main")
    if gold is None:
        return "the gold-only successor was not trained; PLASM successor kept"
    if chosen == PLASM:
        return f"PLASM successor dev {plasm:.4f} >= gold-only successor dev {gold:.4f}"
    return f"gold-only successor dev {gold:.4f} > PLASM successor dev {plasm:.4f}"


# ------------------------------------------------------------------------------------- stages
class _Stages:
    """Times stages, reports progress, honours cancellation, and names the stage that failed."""

    def __init__(self, progress: ProgressFn | None, cancel_check: CancelFn | None) -> None:
        self.progress_fn = progress
        self.cancel_check = cancel_check
        self.seconds: dict[str, float] = {}
        self.current = ""

    def check(self) -> None:
        if self.cancel_check is not None and self.cancel_check():
            raise PlasmCancelled(f"PLASM cancelled during stage '{self.current or 'start'}'")

    def report(self, done: int, total: int) -> None:
        self.check()
        if self.progress_fn is not None:
            self.progress_fn(self.current, done, total)

    @contextmanager
    def stage(self, name: str):
        self.current = name
        self.check()
        self.report(0, 1)
        start = time.perf_counter()
        try:
            yield self
        except (PlasmCancelled, PlasmStageError):
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
            raise PlasmStageError(name, exc) from exc
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.progress_fn is not None:  # no cancel check here: the stage's work is done
            self.progress_fn(name, 1, 1)


def split_gold(gold: Sequence[Example], dev_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded hold-out of `round(dev_share * n)` gold examples (at least one on each side)."""
    n = len(gold)
    if n < 2:
        raise NotEnoughLabelsError(f"PLASM needs at least 2 gold examples (one for the dev split), got {n}")
    n_dev = min(n - 1, max(1, int(round(dev_share * n))))
    order = np.random.default_rng(seed).permutation(n)
    dev_idx, train_idx = np.sort(order[:n_dev]), np.sort(order[n_dev:])
    return [gold[i] for i in train_idx], [gold[i] for i in dev_idx]


def _with_seed(config: TrainingConfig, seed: int) -> TrainingConfig:
    return replace(config, seed=seed)


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
    *,
    progress: ProgressFn | None = None,
    cancel_check: CancelFn | None = None,
    _stages: _Stages | None = None,
) -> PseudoLabels:
    """Stages 1-3: split the gold labels, fine-tune the teacher, pseudo-label the pool."""
    stages = _stages or _Stages(progress, cancel_check)
    with stages.stage("split"):
        make_model(options.successor, schema, options.successor_training)  # fail fast on a bad successor
        gold_train, dev = split_gold(gold, options.dev_share, options.seed)
        indices = np.arange(len(unlabeled))
        if options.max_pool is not None and len(unlabeled) > options.max_pool:
            rng = np.random.default_rng([options.seed, 1])
            indices = np.sort(rng.choice(len(unlabeled), options.max_pool, replace=False))
        pool = [unlabeled[i] for i in indices]
    with stages.stage("teacher"):
        teacher = make_model(options.teacher, schema, _with_seed(options.teacher_training, options.seed))
        teacher.fit(gold_train, progress=stages.report)
        teacher_dev = evaluate(teacher.predict(dev), dev, schema)
    with stages.stage("pseudo_label"):
        if pool:
            predictions = teacher.predict(pool, progress=stages.report)
            labeled = pseudo_examples(predictions, pool, schema)
            confidence = make_strategy("auto", schema.task_type).score(predictions).confidence
        else:
            labeled, confidence = [], np.zeros(0)
    return PseudoLabels(schema, gold_train, dev, teacher, teacher_dev, labeled, np.asarray(confidence),
                        indices, dict(stages.seconds), len(unlabeled))


def build_successor(
    labels: PseudoLabels,
    options: PlasmOptions,
    *,
    progress: ProgressFn | None = None,
    cancel_check: CancelFn | None = None,
    _stages: _Stages | None = None,
) -> PlasmResult:
    """Stages 4-6 on a teacher's pseudo-labels: filter, train the successors, evaluate, choose.
    Several filter settings can share one `PseudoLabels` (the simulation does)."""
    stages = _stages or _Stages(progress, cancel_check)
    schema = labels.schema
    n = len(labels.pool)
    plan = filter_plan(n, labels.dev_score, options.filter, options.uncertainty_fraction)
    keep = np.arange(n)
    tracin_info: dict = {}
    with stages.stage("filter_uncertainty"):
        if plan.uncertainty:
            # least confident first; a stable sort keeps the pool order among ties
            order = np.argsort(labels.confidence, kind="stable")
            keep = np.sort(order[plan.uncertainty :])
    with stages.stage("filter_tracin"):
        if plan.tracin and len(keep):
            candidates = [labels.pool[i] for i in keep]
            probe = make_model(options.successor, schema, _with_seed(options.successor_training, options.seed))
            tracker = TracInCheckpoints(probe, candidates, options.tracin_checkpoints, stages.report)
            probe.fit(labels.gold_train + candidates, progress=tracker.progress)
            ranked = np.argsort(-tracker.scores, kind="stable")  # highest self-influence first
            keep = np.sort(keep[ranked[min(plan.tracin, len(keep)) :]])
            tracin_info = {
                "form": TRACIN_FORM, "checkpoint_steps": tracker.steps,
                "learning_rate_weights": tracker.weights, "scoring_seconds": round(tracker.seconds, 3),
            }
            del probe
    kept = [labels.pool[i] for i in keep]
    successors: dict[str, TransformerModel] = {}
    if options.compare_gold_only:
        with stages.stage("successor_gold_only"):
            model = make_model(options.successor, schema, _with_seed(options.successor_training, options.seed))
            model.fit(labels.gold_train, progress=stages.report)
            successors[GOLD_ONLY] = model
    with stages.stage("successor_plasm"):
        model = make_model(options.successor, schema, _with_seed(options.successor_training, options.seed))
        model.fit(labels.gold_train + kept, progress=stages.report)
        successors[PLASM] = model
    with stages.stage("evaluate"):
        metrics = {"teacher": labels.teacher_dev}
        for name, model in successors.items():
            metrics[f"successor_{name}"] = evaluate(model.predict(labels.dev), labels.dev, schema)
        chosen = PLASM
        if GOLD_ONLY in successors and metrics["successor_gold_only"]["main"] > metrics["successor_plasm"]["main"]:
            chosen = GOLD_ONLY
    seconds = {**labels.stage_seconds, **stages.seconds}
    sizes = {
        "gold": len(labels.gold_train) + len(labels.dev), "gold_train": len(labels.gold_train),
        "dev": len(labels.dev), "unlabeled": labels.unlabeled_total, "pool": n, "pseudo_kept": len(kept),
        "dropped_uncertainty": plan.uncertainty, "dropped_tracin": n - len(kept) - plan.uncertainty,
        "successor_train": len(labels.gold_train) + len(kept),
    }
    filter_info = {
        "mode": options.filter, "dev_score": labels.dev_score, "share": plan.share,
        "dropped": n - len(kept), "dropped_share": (n - len(kept)) / n if n else 0.0,
        "uncertainty_fraction": options.uncertainty_fraction, "tracin": tracin_info,
    }
    return PlasmResult(schema, options, chosen, successors, labels.teacher, metrics, sizes, filter_info,
                       seconds, labels.pool_indices[keep])


def run_plasm(
    gold: Sequence[Example],
    unlabeled: Sequence[Example],
    schema: LabelSchema,
    options: PlasmOptions,
    *,
    progress: ProgressFn | None = None,
    cancel_check: CancelFn | None = None,
    _stages: _Stages | None = None,
) -> PlasmResult:
    """The whole PLASM job in memory. `progress(stage, done, total)` is called often (every
    training step); `cancel_check()` returning True stops it with `PlasmCancelled`. A failing stage
    raises `PlasmStageError` naming it. Nothing is written: call `export_successor` after."""
    stages = _stages or _Stages(progress, cancel_check)
    labels = pseudo_label(gold, unlabeled, schema, options, _stages=stages)
    return build_successor(labels, options, _stages=stages)


# ------------------------------------------------------------------------------------- export
METRICS_FILE, CARD_FILE = "metrics.json", "README.md"


@dataclass
class ExportPaths:
    directory: Path
    archive: Path | None


def export_successor(
    result: PlasmResult, directory: str | os.PathLike, *, archive: bool = True, extra: dict | None = None
) -> ExportPaths:
    """Write the kept successor as a `from_pretrained` directory (weights, tokenizer, config with
    id2label/label2id) with `metrics.json` and a model card `README.md`, plus `<directory>.tar.gz`.

    Everything is built beside the target under temporary names and renamed into place at the end,
    so a failure leaves the previous export (or none) and no partial files. `extra` is merged into
    `metrics.json` (e.g. test-split scores)."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp_dir = target.parent / f".{target.name}.export-{tag}"
    tmp_tar = target.parent / f".{target.name}.tar.gz.export-{tag}"
    tar_path = target.parent / f"{target.name}.tar.gz"
    try:
        result.model.save(tmp_dir)
        payload = {**result.to_dict(), **(extra or {})}
        (tmp_dir / METRICS_FILE).write_text(json.dumps(payload, indent=2, default=str))
        (tmp_dir / CARD_FILE).write_text(model_card(result, target.name))
        if archive:
            with tarfile.open(tmp_tar, "w:gz") as tar:
                tar.add(tmp_dir, arcname=target.name)
        replace_directory(tmp_dir, target)
        if archive:
            os.replace(tmp_tar, tar_path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if tmp_tar.exists():
            tmp_tar.unlink()
    return ExportPaths(target, tar_path if archive else None)


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def model_card(result: PlasmResult, name: str) -> str:
    schema = result.schema
    tagging = schema.task_type is TaskType.TAGGING
    auto = "AutoModelForTokenClassification" if tagging else "AutoModelForSequenceClassification"
    pipeline = "token-classification" if tagging else "text-classification"
    from backend.engine.models.factory import ClassicalModel

    classical = isinstance(result.model, ClassicalModel)
    remote = ", trust_remote_code=True" if classical else ""
    metric = "strict span F1 (seqeval, IOB2)" if tagging else ("macro-F1" if schema.multi_label else "accuracy")
    m = result.metrics
    s = result.sizes
    f = result.filter
    rows = [
        ("teacher (pseudo-labeler)", describe(result.teacher), m["teacher"].get("main")),
        ("successor, gold + pseudo-labels (PLASM)", describe(result.successors[PLASM]),
         m["successor_plasm"].get("main")),
    ]
    if GOLD_ONLY in result.successors:
        rows.append(("successor, gold only", describe(result.successors[GOLD_ONLY]),
                     m["successor_gold_only"].get("main")))
    table = "\n".join(f"| {role} | `{model}` | {_fmt(score)} |" for role, model, score in rows)
    stages = "\n".join(f"| {k} | {v:.1f} |" for k, v in result.stage_seconds.items())
    tracin = f["tracin"]
    tracin_line = (
        f"- TracIn self-influence: {tracin['form']}, checkpoints at optimizer steps {tracin['checkpoint_steps']}\n"
        if tracin else ""
    )
    return f"""---
library_name: transformers
pipeline_tag: {pipeline}
tags:
- active-learning
- plasm
- pseudo-labeling
---

# {name}

Successor model built by PLASM (Pseudo-Labeling for Acquisition-Successor Mismatch) from labels
collected with active learning. Kept: **{'PLASM successor (gold + pseudo-labels)' if result.chosen == PLASM else 'successor trained on gold labels only'}**
({_choice_reason(result.chosen, m)}).

```python
from transformers import AutoTokenizer, {auto}

tokenizer = AutoTokenizer.from_pretrained("{name}"{remote})
model = {auto}.from_pretrained("{name}"{remote})
```
{"" if not classical else chr(10) + "This is a classical model trained from scratch (code in `classical.py` beside the weights, hence `trust_remote_code=True`); its tokenizer is word level." + chr(10)}
## Labels

{", ".join(f"`{x}`" for x in schema.output_names)} ({schema.task_type.value})

## Data

| | examples |
|---|---|
| gold labels | {s['gold']} |
| gold used for training | {s['gold_train']} |
| dev split (held out, {result.options.dev_share:.0%}) | {s['dev']} |
| unlabeled pool | {s['unlabeled']} |
| pseudo-labeled (pool, or a `max_pool` subsample of it) | {s['pool']} |
| pseudo-labels dropped as least confident | {s['dropped_uncertainty']} |
| pseudo-labels dropped by TracIn | {s['dropped_tracin']} |
| pseudo-labels kept | {s['pseudo_kept']} |
| successor training set (PLASM) | {s['successor_train']} |

## Filtering

- mode: `{f['mode']}`; rule: drop the share 1 - teacher dev score = 1 - {_fmt(f['dev_score'])} = {f['share']:.1%}
  of the pseudo-labels (dropped {f['dropped']}, {f['dropped_share']:.1%})
{tracin_line}
## Scores on the dev split ({metric})

| model | checkpoint | dev |
|---|---|---|
{table}

## Cost (seconds per stage)

| stage | seconds |
|---|---|
{stages}
"""


def build_and_export(
    gold: Sequence[Example],
    unlabeled: Sequence[Example],
    schema: LabelSchema,
    options: PlasmOptions,
    directory: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
    cancel_check: CancelFn | None = None,
    archive: bool = True,
    extra: dict | None = None,
) -> tuple[PlasmResult, ExportPaths]:
    """`run_plasm` then `export_successor` as the last stage ('export'): what the RQ job calls.
    A failure or cancellation at any stage leaves no export (and any previous one untouched)."""
    stages = _Stages(progress, cancel_check)
    result = run_plasm(gold, unlabeled, schema, options, _stages=stages)
    with stages.stage("export"):
        paths = export_successor(result, directory, archive=archive, extra=extra)
    result.stage_seconds["export"] = stages.seconds["export"]
    return result, paths
