"""The paper's PLASM experiment, emulated (gold labels stand in for annotators).

Per seed, two active-learning runs start from the same seed set (`Simulation`, full-pool scoring):

* the **successor** acquires for itself -> (a) `successor_self`: the successor trained on the data
  it selected;
* the distilled **student** acquires -> on each iteration's labeled set,
  (b) `mismatch`: the successor trained on the student's selection (the acquisition-successor
  mismatch), (c) `plasm`: teacher fine-tuned on it, pool pseudo-labeled and filtered, successor
  trained on gold + pseudo-labels, (d) `plasm_no_filter`: the same without filtering.
  (c) and (d) share the teacher and its pseudo-labels; both hold out PLASM's 10% dev split (the
  successor trains on 90% of the gold labels there, on 100% in (a) and (b)).

All four are scored on the test split; the teacher's and the student's own test scores are kept
too, and the seconds of each PLASM stage. The paper's claim: (c) >= (b), and (c) close to (a).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.engine.data.datasets import Dataset
from backend.engine.metrics import evaluate
from backend.engine.plasm.pipeline import PLASM, PlasmOptions, build_successor, pseudo_label, strip_labels
from backend.experiments.simulate import Simulation, SimulationConfig, plot_learning_curves
from backend.engine.models.factory import make_model
from backend.engine.models.transformer import TrainingConfig, TransformerModel

CONFIGURATIONS = {
    "successor_self": "(a) successor acquires for itself",
    "mismatch": "(b) successor on the student's data",
    "plasm": "(c) PLASM",
    "plasm_no_filter": "(d) PLASM without filtering",
}
EXTRA = {"student": "student (acquisition model) itself", "teacher": "teacher on the student's data"}


@dataclass
class PlasmExperimentConfig:
    teacher: str = field(metadata={"help": "pseudo-labeler (the student's teacher)"})
    student: str = field(metadata={"help": "acquisition model (a distilled student of the teacher)"})
    successor: str = field(metadata={"help": "successor of another architecture (checkpoint or cnn / bilstm-crf)"})
    iterations: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    strategy: str = "auto"
    seed_size: int | None = None
    query_size: int | None = None
    seed_share: float | None = None
    query_share: float | None = None
    filter: str = "both"
    tracin_checkpoints: int = 3
    max_pool: int | None = None
    plasm_iterations: tuple[int, ...] | None = field(
        default=None, metadata={"help": "iterations at which (b)-(d) are built; None = all"}
    )
    training: TrainingConfig = field(default_factory=TrainingConfig)  # student and teacher
    successor_training: TrainingConfig = field(default_factory=TrainingConfig)


class _AcquisitionRun(Simulation):
    """A one-configuration `Simulation` whose models come from a factory and which reports every
    iteration's labeled set to a callback."""

    def __init__(self, config: SimulationConfig, train: Dataset, test: Dataset,
                 factory: Callable[[str, int], TransformerModel],
                 on_labeled: Callable[[int, tuple[int, ...], dict], None] | None,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__(config, train, test, progress)
        self.factory = factory
        self.on_labeled = on_labeled

    def _model(self, name: str, seed: int) -> TransformerModel:  # type: ignore[override]
        return self.factory(name, seed)

    def _train_and_evaluate(self, labeled: tuple[int, ...], seed: int) -> dict:
        shared = super()._train_and_evaluate(labeled, seed)
        if self.on_labeled is not None:
            self.on_labeled(seed, labeled, shared)
        return shared


class PlasmExperiment:
    def __init__(self, config: PlasmExperimentConfig, train: Dataset, test: Dataset,
                 progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.train = train
        self.test = test
        self.schema = train.schema
        self.progress = progress or (lambda message: None)
        self.records: list[dict] = []
        self._iteration: dict[int, int] = {}

    def _sim_config(self, acquisition: str) -> SimulationConfig:
        c = self.config
        return SimulationConfig(
            acquisition_model=acquisition, configurations=("full",), strategy=c.strategy, iterations=c.iterations,
            seeds=c.seeds, seed_share=c.seed_share, query_share=c.query_share, seed_size=c.seed_size,
            query_size=c.query_size, training=c.training,
        )

    def _factory(self, name: str, seed: int) -> TransformerModel:
        training = self.config.successor_training if name == self.config.successor else self.config.training
        return make_model(name, self.schema, replace(training, seed=seed))

    def _record(self, configuration: str, seed: int, iteration: int, labeled: int, metrics: dict,
                seconds: float, extra: dict | None = None) -> None:
        self.records.append({"configuration": configuration, "seed": seed, "iteration": iteration,
                             "labeled": labeled, "metrics": metrics, "seconds": seconds, **(extra or {})})

    # ------------------------------------------------------------------------------- runs
    def run(self) -> list[dict]:
        c = self.config
        self._iteration = {}
        successor_run = _AcquisitionRun(self._sim_config(c.successor), self.train, self.test, self._factory,
                                        None, lambda m: self.progress(f"(a) {m}"))
        for record in successor_run.run():
            self._record("successor_self", record.seed, record.iteration, record.labeled, record.metrics,
                         record.train_seconds + record.inference_seconds)
        student_run = _AcquisitionRun(self._sim_config(c.student), self.train, self.test, self._factory,
                                      self._plasm_iteration, lambda m: self.progress(f"student {m}"))
        for record in student_run.run():
            self._record("student", record.seed, record.iteration, record.labeled, record.metrics,
                         record.train_seconds + record.inference_seconds)
        return self.records

    def _plasm_iteration(self, seed: int, labeled: tuple[int, ...], shared: dict) -> None:
        iteration = self._iteration.get(seed, 0)
        self._iteration[seed] = iteration + 1
        c = self.config
        if c.plasm_iterations is not None and iteration not in c.plasm_iterations:
            return
        gold = [self.train.examples[i] for i in labeled]
        chosen = set(labeled)
        pool = [strip_labels(ex) for i, ex in enumerate(self.train.examples) if i not in chosen]
        test = self.test.examples

        start = time.perf_counter()
        mismatch = self._factory(c.successor, seed)
        mismatch.fit(gold)
        self._record("mismatch", seed, iteration, len(gold), evaluate(mismatch.predict(test), test, self.schema),
                     time.perf_counter() - start)

        options = PlasmOptions(
            teacher=c.teacher, successor=c.successor, filter=c.filter, tracin_checkpoints=c.tracin_checkpoints,
            max_pool=c.max_pool, compare_gold_only=False, seed=seed,
            teacher_training=replace(c.training, seed=seed), successor_training=replace(c.successor_training, seed=seed),
        )
        labels = pseudo_label(gold, pool, self.schema, options)
        teacher_test = evaluate(labels.teacher.predict(test), test, self.schema)
        self._record("teacher", seed, iteration, len(gold), teacher_test, sum(labels.stage_seconds.values()),
                     {"dev": labels.teacher_dev})
        for name, mode in (("plasm", c.filter), ("plasm_no_filter", "none")):
            result = build_successor(labels, replace(options, filter=mode))
            metrics = evaluate(result.successors[PLASM].predict(test), test, self.schema)
            self._record(name, seed, iteration, len(gold), metrics, sum(result.stage_seconds.values()),
                         {"stage_seconds": result.stage_seconds, "filter": result.filter, "sizes": result.sizes,
                          "dev": result.metrics})
        self.progress(f"seed {seed} it {iteration}: PLASM done ({len(gold)} gold, {len(pool)} pool)")


# ---------------------------------------------------------------------------------- reports
def summarize_experiment(records: list[dict]) -> dict[str, list[dict]]:
    """Mean and std over seeds per configuration and iteration (the shape plot_learning_curves reads)."""
    out: dict[str, list[dict]] = {}
    names = [n for n in (*CONFIGURATIONS, *EXTRA) if any(r["configuration"] == n for r in records)]
    for name in names:
        rows = []
        for it in sorted({r["iteration"] for r in records if r["configuration"] == name}):
            group = [r for r in records if r["configuration"] == name and r["iteration"] == it]
            main = np.array([r["metrics"]["main"] for r in group])
            rows.append({"iteration": it, "labeled": float(np.mean([r["labeled"] for r in group])),
                         "main_mean": float(main.mean()), "main_std": float(main.std()), "seeds": len(group),
                         "seconds": float(np.mean([r["seconds"] for r in group]))})
        out[name] = rows
    return out


def stage_seconds(records: list[dict], configuration: str = "plasm") -> dict[str, dict[str, float]]:
    """Mean / std / total seconds of each PLASM stage over all (seed, iteration) builds."""
    stages: dict[str, list[float]] = {}
    for r in records:
        if r["configuration"] == configuration:
            for stage, seconds in r["stage_seconds"].items():
                stages.setdefault(stage, []).append(seconds)
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "total": float(np.sum(v))}
            for k, v in stages.items()}


def format_experiment_table(summary: dict[str, list[dict]], metric_name: str) -> str:
    names = list(summary)
    width = 17
    header = f"{'it':>3}{'labeled':>9}" + "".join(f"{n[:width - 1]:>{width}}" for n in names)
    lines = [f"{metric_name}, mean ± std over seeds", header, "-" * len(header)]
    iterations = sorted({row["iteration"] for rows in summary.values() for row in rows})
    for it in iterations:
        labeled = next(row["labeled"] for rows in summary.values() for row in rows if row["iteration"] == it)
        cells = []
        for n in names:
            row = next((row for row in summary[n] if row["iteration"] == it), None)
            cells.append(f"{row['main_mean']:.3f} ±{row['main_std']:.3f}" if row else "–")
        lines.append(f"{it:>3}{labeled:>9.0f}" + "".join(f"{cell:>{width}}" for cell in cells))
    lines.append("")
    lines.extend(f"  {n}: {CONFIGURATIONS.get(n) or EXTRA.get(n)}" for n in names)
    return "\n".join(lines)


def format_stage_table(stages: dict[str, dict[str, float]]) -> str:
    lines = [f"{'PLASM stage':<22}{'mean s':>9}{'std s':>8}{'total s':>9}"]
    for name, s in stages.items():
        lines.append(f"{name:<22}{s['mean']:>9.1f}{s['std']:>8.1f}{s['total']:>9.1f}")
    return "\n".join(lines)


def write_experiment(records: list[dict], config: PlasmExperimentConfig, dataset_name: str, output_dir: Path,
                     metric_name: str, extra: dict | None = None) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_experiment(records)
    payload = {
        "dataset": dataset_name, "metric": metric_name, "config": asdict(config), "summary": summary,
        "stage_seconds": stage_seconds(records), "records": records, **(extra or {}),
    }
    tmp = output_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(output_dir / "results.json")
    curves = {n: rows for n, rows in summary.items() if n in CONFIGURATIONS}
    plot_learning_curves(curves, metric_name, f"PLASM on {dataset_name}", output_dir / "learning_curve.png")
    return payload
