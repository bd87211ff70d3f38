"""`feasible-al simulate | simulate-plasm | bench | bench-labels | bench-pm-signals`: the paper's experiments
and engine benchmarks."""
from __future__ import annotations

import sys
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Never

from backend.cli.args import arguments, build, values
from backend.cli.groups import Data, Successor, Training, load_split, pool_texts, successor_training
from backend.engine.acquisition.sampling import DEFAULT_FULL_RESCORE_ITERATIONS
from backend.engine.metrics import main_metric_name
from backend.engine.plasm.pipeline import FILTERS, PlasmOptions
from backend.experiments.label_efficiency import METHODS, LabelEfficiencyConfig
from backend.experiments.pm_signals.runner import PmSignalsConfig
from backend.experiments.simulate import CONFIGURATIONS, DEFAULT_MODEL, SimulationConfig

if TYPE_CHECKING:
    from tqdm import tqdm

    from backend.cli.args import Subcommands
    from backend.engine.data import Dataset

REPLAY_HELP = "replay a run: its results.json (config block) or a JSON object of flag values; flags given here win"


@dataclass
class SimulateArgs:
    output_dir: str = field(default="runs/simulate", metadata={"help": "results.json and learning_curve.png"})


@dataclass
class SimulatePlasmArgs:
    student: str = field(default="distill", metadata={"help": "acquisition model dir, or 'distill' to build it first"})
    distill_max_texts: int = field(default=2000, metadata={"help": "distil the student on at most this many texts"})
    distill_epochs: int = field(default=1, metadata={"help": "distillation epochs"})
    plasm_iterations: tuple[int, ...] | None = field(
        default=None, metadata={"help": "iterations at which (b)-(d) are built (default: every iteration)",
                                "nargs": "*"})
    output_dir: str = field(default="runs/simulate-plasm", metadata={"help": "results.json and learning_curve.png"})


@dataclass
class BenchArgs:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model whose pool scoring is timed"})
    pool_size: int = field(default=1000, metadata={"help": "texts scored"})
    repeats: int = field(default=3, metadata={"help": "timed repeats (the best counts)"})
    train_size: int = field(default=200, metadata={"help": "texts for the training-epoch benchmark (0: skip)"})
    ups_pool_size: int = field(default=10000, metadata={"help": "pool size of the UPS share draws"})
    output_dir: str = field(default="runs/bench", metadata={"help": "bench.json"})


@dataclass
class BenchLabelsArgs:
    output_dir: str = field(default="docs/benchmarks", metadata={"help": "label_efficiency.json and .png"})


@dataclass
class BenchPmSignalsArgs:
    output_dir: str = field(default="docs/benchmarks/pm-signals", metadata={"help": "pm_signals.json and .png"})


LOOP_FIELDS = ("strategy", "iterations", "seeds", "seed_share", "query_share", "seed_size", "query_size")
Simulate = arguments(SimulateArgs, "output")
Loop = arguments(SimulationConfig, "active learning", exclude=("training",), overrides={
    "configurations": {"choices": CONFIGURATIONS},
    "strategy": {"help": "auto | least_confidence | margin | entropy | mnlp | mahalanobis"},
    "full_rescore_iterations": {"nargs": "*", "default": DEFAULT_FULL_RESCORE_ITERATIONS},
})
SimulatePlasm = arguments(SimulatePlasmArgs, "PLASM experiment")
PlasmLoop = arguments(SimulationConfig, "active learning (student and successor)", include=LOOP_FIELDS,
                      overrides={"iterations": {"default": 4}})
PlasmFilter = arguments(PlasmOptions, "PLASM", exclude=("seed", "compare_gold_only"), overrides={
    "teacher": {"default": DEFAULT_MODEL}, "successor": {"default": "classical"}, "filter": {"choices": FILTERS},
})
Bench = arguments(BenchArgs, "benchmark")
Ups = arguments(SimulationConfig, "UPS", include=("gamma", "temperature"))
BenchLabels = arguments(BenchLabelsArgs, "output")
LabelEfficiency = arguments(LabelEfficiencyConfig, "label efficiency", overrides={
    "methods": {"choices": METHODS}})
PmSignals = arguments(PmSignalsConfig, "project-manager signals")
BenchPmSignals = arguments(BenchPmSignalsArgs, "output")


def _progress_bar(total: int, desc: str) -> tuple[tqdm[Never], Callable[[str], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)

    def progress(message: str) -> None:
        bar.set_postfix_str(message[-70:])
        bar.update(1)
    return bar, progress


def cmd_simulate(args: Namespace) -> int:
    from backend.experiments.reports import format_table
    from backend.experiments.simulate import Simulation, summarize, write_simulation

    config: SimulationConfig = build(args, Loop, training=build(args, Training))
    dataset, train, test = load_split(args)
    bar, progress = _progress_bar(len(config.seeds) * (config.iterations + 1) * len(config.configurations), "simulate")
    print(f"dataset {dataset.name}: {len(train)} pool / {len(test)} test, labels {list(train.schema.labels)}",
          file=sys.stderr)
    simulation = Simulation(config, train, test, progress)
    start = time.perf_counter()
    records = simulation.run()
    bar.close()
    metric = main_metric_name(train.schema)
    out = Path(args.output_dir)
    write_simulation(records, config, dataset.name, out, metric, {
        "data": values(args, Data), "pool_size": len(train), "test_size": len(test),
        "wall_seconds": time.perf_counter() - start, "seed_budget": simulation.seed_budget,
        "query_budget": simulation.query_budget, "budget_unit": simulation.seed_unit,
    })
    print(format_table(summarize(records), metric))
    print(f"\nwrote {out / 'results.json'} and {out / 'learning_curve.png'} ({time.perf_counter() - start:.0f}s)")
    return 0


def _student(args: Namespace, train: Dataset, out: Path, extra: dict[str, Any]) -> str:
    """The acquisition model: `--student`, or distilled from the teacher on the pool's texts (PLASM step 1)."""
    given: str = args.student
    if given != "distill":
        return given
    from backend.engine.plasm.distill import DistillConfig, distill

    student = str(out / "student")
    training = build(args, Training)
    report = distill(args.teacher, pool_texts(train.examples), student, DistillConfig(
        epochs=args.distill_epochs, max_texts=args.distill_max_texts, max_length=training.max_length,
        batch_size=training.batch_size, device=training.device))
    extra["distillation"] = report.to_dict()
    print(f"distilled {student}: {report.student_layers}/{report.teacher_layers} layers, {report.texts} texts, "
          f"{report.seconds:.0f}s", file=sys.stderr)
    return student


def cmd_simulate_plasm(args: Namespace) -> int:
    from backend.experiments.plasm_experiment import (
        PlasmExperiment,
        PlasmExperimentConfig,
        format_experiment_table,
        format_stage_table,
        stage_seconds,
        summarize_experiment,
        write_experiment,
    )

    start = time.perf_counter()
    training = build(args, Training)
    plasm = build(args, PlasmFilter, teacher_training=training, successor_training=successor_training(args, training))
    dataset, train, test = load_split(args)
    out = Path(args.output_dir)
    extra: dict[str, Any] = {"data": values(args, Data), "pool_size": len(train), "test_size": len(test)}
    loop = build(args, PlasmLoop, acquisition_model=_student(args, train, out, extra), training=training)
    config = PlasmExperimentConfig(loop, plasm, tuple(args.plasm_iterations or ()) or None)
    print(f"dataset {dataset.name}: {len(train)} pool / {len(test)} test", file=sys.stderr)
    records = PlasmExperiment(config, train, test, lambda m: print(m, file=sys.stderr)).run()
    metric = main_metric_name(train.schema)
    extra["wall_seconds"] = time.perf_counter() - start
    write_experiment(records, config, dataset.name, out, metric, extra)
    print(format_experiment_table(summarize_experiment(records), metric))
    print()
    print(format_stage_table(stage_seconds(records)))
    print(f"\nwrote {out / 'results.json'} and {out / 'learning_curve.png'} ({time.perf_counter() - start:.0f}s)")
    return 0


def cmd_bench(args: Namespace) -> int:
    from backend.engine.device import resolve_device
    from backend.engine.io import atomic_write_json
    from backend.engine.models.transformer import TransformerModel
    from backend.experiments.bench import bench_scoring, bench_training, ups_shares

    out = Path(args.output_dir)
    _, train, _ = load_split(args)
    pool = train.examples[: args.pool_size]
    model = TransformerModel(args.model, train.schema, build(args, Training))
    device = resolve_device(model.config.device)
    results = bench_scoring(model, pool, repeats=args.repeats)
    training = bench_training(args.model, train.schema, train.examples[: args.train_size], model.config) \
        if args.train_size else []
    shares = ups_shares(args.ups_pool_size, args.gamma, args.temperature)
    speedup = results[1].best / results[0].best
    print(f"pool scoring on {device} ({model.name_or_path}, {len(pool)} texts, max_length {model.config.max_length})")
    print(f"{'mode':<38}{'best s':>9}{'texts/s':>10}")
    for r in results:
        print(f"{r.name:<38}{r.best:>9.2f}{r.texts_per_second:>10.1f}")
    print(f"length-sorted speed-up: {speedup:.2f}x")
    if training:
        print(f"\none training epoch on {args.train_size} texts")
        for r in training:
            print(f"{r.name:<38}{r.best:>9.2f}{r.texts_per_second:>10.1f}")
        print(f"length-grouped speed-up: {training[0].best / training[1].best:.2f}x")
    print(f"UPS re-scored share (gamma={args.gamma}, T={args.temperature}, pool {args.ups_pool_size}, "
          f"{shares['draws']} draws): {shares['mean_share']:.2%} ± {shares['std_share']:.2%} "
          f"(expected {shares['expected_share']:.2%})")
    atomic_write_json(out / "bench.json", {
        "device": str(device), "model": model.name_or_path, "dataset": args.dataset,
        "scoring": [r.to_dict() for r in results], "length_sort_speedup": speedup,
        "training": [r.to_dict() for r in training], "ups": shares})
    print(f"wrote {out / 'bench.json'}")
    return 0


def cmd_bench_labels(args: Namespace) -> int:
    from backend.experiments.label_efficiency import LabelEfficiency as Bench
    from backend.experiments.label_efficiency import progress_to_stderr, write_outputs

    config: LabelEfficiencyConfig = build(args, LabelEfficiency)
    start = time.perf_counter()
    bench = Bench(config, progress_to_stderr)
    records = bench.run()
    wall = time.perf_counter() - start
    text, json_path, png_path = write_outputs(bench, records, Path(args.output_dir), {"wall_seconds": wall})
    print(text)
    print(f"\nwrote {json_path} and {png_path} ({wall:.0f}s)")
    return 0


def cmd_bench_pm_signals(args: Namespace) -> int:
    from backend.experiments.label_efficiency import progress_to_stderr
    from backend.experiments.pm_signals import PmSignals as Bench
    from backend.experiments.pm_signals import write_outputs

    config: PmSignalsConfig = build(args, PmSignals)
    start = time.perf_counter()
    runs = Bench(config, progress_to_stderr).run()
    wall = time.perf_counter() - start
    text, json_path, png_path = write_outputs(runs, config, Path(args.output_dir), {"wall_seconds": wall})
    print(text)
    print(f"\nwrote {json_path} and {png_path} ({wall:.0f}s)")
    return 0


def register(sub: Subcommands) -> None:
    """Add simulate, simulate-plasm, bench, bench-labels and bench-pm-signals to the `feasible-al` subcommands."""
    sim = sub.add_parser("simulate", help="emulate active learning on a labeled dataset (paper experiments)",
                         dataclass_types=[Data, Loop, Training, Simulate])
    sim.add_argument("--config", default=None, help=REPLAY_HELP)
    sim.set_defaults(func=cmd_simulate)

    bench = sub.add_parser("bench", help="benchmark pool scoring and UPS; prints a table, writes JSON",
                           dataclass_types=[Data, Bench, Ups, Training])
    bench.set_defaults(func=cmd_bench)

    labels = sub.add_parser("bench-labels", help="label efficiency: proxy head (random / uncertainty), fine-tune "
                            "schedules and the hybrid default side by side; prints a table, writes JSON + PNG",
                            dataclass_types=[LabelEfficiency, BenchLabels])
    labels.set_defaults(func=cmd_bench_labels)

    signals = sub.add_parser("bench-pm-signals", help="the project manager's signals on the proxy path: quality "
                             "estimates with intervals (audit share), a stopping signal, suspect labels; each "
                             "against test truth, tuning and held-out corpora apart; prints tables, writes JSON + PNG",
                             dataclass_types=[PmSignals, BenchPmSignals])
    signals.set_defaults(func=cmd_bench_pm_signals)

    sp = sub.add_parser("simulate-plasm", help="emulate the PLASM experiment: (a) successor-self, (b) mismatch, "
                        "(c) PLASM, (d) PLASM without filtering",
                        dataclass_types=[Data, SimulatePlasm, PlasmLoop, PlasmFilter, Training, Successor])
    sp.add_argument("--config", default=None, help=REPLAY_HELP)
    sp.set_defaults(func=cmd_simulate_plasm, replay_aliases={"acquisition_model": "student"})
