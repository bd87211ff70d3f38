"""`feasible-al distill | plasm`: PLASM step 1 (a half-depth student) and the successor build."""
from __future__ import annotations

import sys
import time
from argparse import Namespace
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.cli.args import arguments, build
from backend.cli.groups import Data, Successor, Training, load_split, pool_texts, successor_training
from backend.engine.plasm.distill import DistillConfig
from backend.engine.plasm.pipeline import FILTERS, PlasmOptions
from backend.experiments.simulate import DEFAULT_MODEL

if TYPE_CHECKING:
    from backend.cli.args import Subcommands
    from backend.engine.data import Dataset
    from backend.engine.plasm.export import ExportPaths
    from backend.engine.plasm.records import PlasmResult
    from backend.engine.types import Example


@dataclass
class DistillArgs:
    teacher: str = field(default=DEFAULT_MODEL, metadata={"help": "model the student is distilled from"})
    output_dir: str = field(default="runs/student", metadata={"help": "where the student is saved"})


@dataclass
class PlasmArgs:
    gold_size: int | None = field(default=None, metadata={
        "help": "emulate: this many random train examples are gold, the rest the unlabeled pool"})
    unlabeled: str | None = field(default=None, metadata={"help": "unlabeled pool file (.txt lines, .jsonl, .csv)"})
    export_dir: str = field(default="runs/successor", metadata={"help": "successor directory (and .tar.gz)"})
    no_archive: bool = field(default=False, metadata={"help": "skip the .tar.gz"})


Distill = arguments(DistillArgs, "distillation")
DistillSettings = arguments(DistillConfig, "distillation settings")
Plasm = arguments(PlasmArgs, "PLASM run")
PlasmSettings = arguments(PlasmOptions, "PLASM", overrides={
    "teacher": {"default": DEFAULT_MODEL}, "successor": {"default": "classical"}, "filter": {"choices": FILTERS},
})


class StagePrinter:
    """PLASM `progress(stage, done, total)` that prints each stage's seconds when the next begins."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.start = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            now = time.perf_counter()
            if self.stage is not None:
                print(f"  {self.stage}: {now - self.start:.1f}s", file=sys.stderr)
            self.stage, self.start = stage, now


def cmd_distill(args: Namespace) -> int:
    from tqdm import tqdm

    from backend.engine.plasm.distill import distill

    _, train, _ = load_split(args)
    config = build(args, DistillSettings)
    bar = tqdm(desc="distill", unit="step", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = distill(args.teacher, pool_texts(train.examples), args.output_dir, config, progress=progress)
    bar.close()
    print(f"student: {report.student_layers} of {report.teacher_layers} layers (kept {report.kept_layers}), "
          f"{report.student_parameters / 1e6:.1f}M of {report.teacher_parameters / 1e6:.1f}M parameters, "
          f"soft targets on {report.soft_targets} outputs, {report.texts} texts, {report.seconds:.0f}s; "
          f"last-epoch losses " + ", ".join(f"{k} {v:.4f}" for k, v in report.losses.items()))
    print(f"wrote {args.output_dir}")
    return 0


def _gold_and_pool(
    args: Namespace, dataset: Dataset, train: Dataset, test: Dataset | None,
) -> tuple[list[Example], list[Example], Dataset | None]:
    """Emulation (`--gold-size`): a random gold subset, the rest unlabeled; else the whole dataset is gold.
    `--unlabeled` adds a pool file. Returns (gold, pool, test or None)."""
    import numpy as np

    from backend.engine.data.pool import read_unlabeled_pool
    from backend.engine.plasm.pipeline import strip_labels

    if args.gold_size is not None:
        order = np.random.default_rng(args.seed).permutation(len(train))
        gold = [train.examples[i] for i in np.sort(order[: args.gold_size])]
        pool = [strip_labels(train.examples[i]) for i in np.sort(order[args.gold_size:])]
    else:
        gold, pool, test = list(dataset.examples), [], None
    if args.unlabeled:
        pool += read_unlabeled_pool(args.unlabeled, train.schema.task_type, args.text_field)
    if not pool:
        print("warning: no unlabeled pool (use --gold-size or --unlabeled): the successor trains on gold only",
              file=sys.stderr)
    return gold, pool, test


def _print_result(result: PlasmResult, test_metrics: dict[str, dict[str, float]], paths: ExportPaths) -> None:
    print(f"{'model':<28}{'dev':>8}{'test':>8}")
    for name, metrics in result.metrics.items():
        test_main = test_metrics.get(name, {}).get("main")
        print(f"{name:<28}{metrics['main']:>8.4f}" + (f"{test_main:>8.4f}" if test_main is not None else ""))
    f, sizes = result.filter, result.sizes
    print(f"filter {f.mode}: dropped {f.dropped} of {sizes.pool} pseudo-labels "
          f"(share 1 - {f.dev_score:.3f} = {f.share:.1%}; {sizes.dropped_uncertainty} least confident, "
          f"{sizes.dropped_tracin} by TracIn)")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()))
    print(f"kept: {result.chosen} successor; wrote {paths.directory}"
          + (f" and {paths.archive}" if paths.archive else ""))


def cmd_plasm(args: Namespace) -> int:
    from backend.engine.metrics import evaluate
    from backend.engine.plasm.export import export_successor
    from backend.engine.plasm.pipeline import run_plasm

    training = build(args, Training)
    options = build(args, PlasmSettings, teacher_training=training,
                    successor_training=successor_training(args, training))
    dataset, train, held_out = load_split(args)
    schema = train.schema
    gold, pool, test = _gold_and_pool(args, dataset, train, held_out)
    print(f"PLASM on {dataset.name}: {len(gold)} gold, {len(pool)} unlabeled; teacher {options.teacher}, "
          f"successor {options.successor}, filter {options.filter}", file=sys.stderr)
    progress = StagePrinter()
    result = run_plasm(gold, pool, schema, options, progress=progress)
    progress("done", 1, 1)
    test_metrics: dict[str, dict[str, float]] = {}
    if test is not None:
        models = {"teacher": result.teacher, **{f"successor_{n}": m for n, m in result.successors.items()}}
        test_metrics = {name: evaluate(m.predict(test.examples), test.examples, schema) for name, m in models.items()}
    extra = {"test_metrics": test_metrics} if test is not None else {}
    paths = export_successor(result, args.export_dir, archive=not args.no_archive, extra=extra)
    _print_result(result, test_metrics, paths)
    return 0


def register(sub: Subcommands) -> None:
    """Add distill and plasm to the `feasible-al` subcommands."""
    dis = sub.add_parser("distill", help="distil a half-depth student (acquisition model) from a teacher",
                         dataclass_types=[Data, Distill, DistillSettings])
    dis.set_defaults(func=cmd_distill)
    pl = sub.add_parser("plasm", help="build a successor with PLASM from a dataset file (gold + unlabeled pool)",
                        dataclass_types=[Data, Plasm, PlasmSettings, Training, Successor])
    pl.set_defaults(func=cmd_plasm)
