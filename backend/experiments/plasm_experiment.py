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

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.data import Dataset
from backend.engine.metrics import evaluate
from backend.engine.models.factory import ModelFactory
from backend.engine.plasm.pipeline import PLASM, PlasmOptions, build_successor, pseudo_label, strip_labels
from backend.experiments import reports
from backend.experiments.simulate import (
    IterationRecord,
    Model,
    Simulation,
    SimulationConfig,
    TrainedHook,
    TrainedModel,
)

CONFIGURATIONS = {
    "successor_self": "(a) successor acquires for itself",
    "mismatch": "(b) successor on the student's data",
    "plasm": "(c) PLASM",
    "plasm_no_filter": "(d) PLASM without filtering",
}
EXTRA = {"student": "student (acquisition model) itself", "teacher": "teacher on the student's data"}


@dataclass
class PlasmExperimentConfig:
    """Sibling configs, not copies: the AL loop both acquisition runs share, and PLASM's options."""

    simulation: SimulationConfig = field(metadata={
        "help": "the AL loop; its acquisition_model is the student (a distilled student of the teacher), "
                "its training trains the student"})
    plasm: PlasmOptions = field(metadata={
        "help": "teacher, successor and filtering; `seed` is set per run seed, gold-only comparison is off"})
    plasm_iterations: tuple[int, ...] | None = field(
        default=None, metadata={"help": "iterations at which (b)-(d) are built; None = all"}
    )

    @property
    def student(self) -> str:
        return self.simulation.acquisition_model


@dataclass
class PlasmRecord:
    """One model's test score at one (seed, iteration); PLASM builds also keep their stage seconds,
    filter report, sizes and dev metrics."""

    configuration: str
    seed: int
    iteration: int
    labeled: int
    metrics: dict[str, float]
    seconds: float
    dev: dict[str, Any] | None = None
    stage_seconds: dict[str, float] | None = None
    filter: Any = None
    sizes: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class PlasmExperiment:
    def __init__(self, config: PlasmExperimentConfig, train: Dataset, test: Dataset,
                 progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.train = train
        self.test = test
        self.schema = train.schema
        self.progress = progress or (lambda message: None)
        self.records: list[PlasmRecord] = []

    def _simulation(self, acquisition: str, tag: str, on_trained: TrainedHook | None = None) -> Simulation:
        loop = replace(self.config.simulation, acquisition_model=acquisition, successor_model=None,
                       configurations=("full",))
        return Simulation(loop, self.train, self.test, lambda m: self.progress(f"{tag} {m}"),
                          make_model=self._make_model, on_trained=on_trained)

    def _make_model(self, name: str, seed: int) -> Model:
        plasm = self.config.plasm
        training = plasm.successor_training if name == plasm.successor else self.config.simulation.training
        return ModelFactory(name, self.schema, training).new(seed)

    def _collect(self, configuration: str, records: Iterable[IterationRecord]) -> None:
        self.records.extend(
            PlasmRecord(configuration, r.seed, r.iteration, r.labeled, r.metrics, r.train_seconds + r.inference_seconds)
            for r in records
        )

    # ------------------------------------------------------------------------------- runs
    def run(self) -> list[PlasmRecord]:
        self.records = []
        self._collect("successor_self", self._simulation(self.config.plasm.successor, "(a)").run())
        student = self._simulation(self.config.student, "student", on_trained=self._plasm_iteration)
        self._collect("student", student.run())
        return self.records

    def _plasm_iteration(self, seed: int, iteration: int, trained: TrainedModel) -> None:
        c = self.config
        if c.plasm_iterations is not None and iteration not in c.plasm_iterations:
            return
        gold = [self.train.examples[i] for i in trained.labeled]
        chosen = set(trained.labeled)
        pool = [strip_labels(ex) for i, ex in enumerate(self.train.examples) if i not in chosen]
        test = self.test.examples

        start = time.perf_counter()
        mismatch = self._make_model(c.plasm.successor, seed)
        mismatch.fit(gold)
        self.records.append(PlasmRecord("mismatch", seed, iteration, len(gold),
                                        evaluate(mismatch.predict(test), test, self.schema),
                                        time.perf_counter() - start))

        options = replace(c.plasm, compare_gold_only=False, seed=seed)  # PLASM seeds its models with it
        labels = pseudo_label(gold, pool, self.schema, options)
        self.records.append(PlasmRecord("teacher", seed, iteration, len(gold),
                                        evaluate(labels.teacher.predict(test), test, self.schema),
                                        sum(labels.stage_seconds.values()), dev=labels.teacher_dev))
        for name, mode in (("plasm", c.plasm.filter), ("plasm_no_filter", "none")):
            result = build_successor(labels, replace(options, filter=mode))
            metrics = evaluate(result.successors[PLASM].predict(test), test, self.schema)
            self.records.append(PlasmRecord(
                name, seed, iteration, len(gold), metrics, sum(result.stage_seconds.values()), dev=result.metrics,
                stage_seconds=result.stage_seconds, filter=result.filter, sizes=result.sizes,
            ))
        self.progress(f"seed {seed} it {iteration}: PLASM done ({len(gold)} gold, {len(pool)} pool)")


# ---------------------------------------------------------------------------------- reports
def summarize_experiment(records: list[PlasmRecord]) -> reports.Summary:
    """Mean and std over seeds per configuration and iteration (the shape plot_learning_curves reads)."""
    return reports.summarize(records, {"seconds": lambda r: r.seconds}, order=[*CONFIGURATIONS, *EXTRA])


def stage_seconds(records: list[PlasmRecord], configuration: str = "plasm") -> dict[str, dict[str, float]]:
    """Mean / std / total seconds of each PLASM stage over all (seed, iteration) builds."""
    stages: dict[str, list[float]] = {}
    for r in records:
        if r.configuration == configuration:
            for stage, seconds in (r.stage_seconds or {}).items():
                stages.setdefault(stage, []).append(seconds)
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "total": float(np.sum(v))}
            for k, v in stages.items()}


def format_experiment_table(summary: reports.Summary, metric_name: str) -> str:
    return reports.format_curve_table(summary, metric_name, {**CONFIGURATIONS, **EXTRA})


def format_stage_table(stages: dict[str, dict[str, float]]) -> str:
    lines = [f"{'PLASM stage':<22}{'mean s':>9}{'std s':>8}{'total s':>9}"]
    for name, s in stages.items():
        lines.append(f"{name:<22}{s['mean']:>9.1f}{s['std']:>8.1f}{s['total']:>9.1f}")
    return "\n".join(lines)


def write_experiment(records: list[PlasmRecord], config: PlasmExperimentConfig, dataset_name: str, output_dir: Path,
                     metric_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json (config, summary, stage seconds, records) and the (a)-(d) learning curves."""
    summary = summarize_experiment(records)
    payload = reports.results_payload(dataset_name, metric_name, config, summary, records,
                                      stage_seconds=stage_seconds(records), **(extra or {}))
    reports.write_results(output_dir, payload)
    curves = {n: rows for n, rows in summary.items() if n in CONFIGURATIONS}
    reports.plot_learning_curves(curves, metric_name, f"PLASM on {dataset_name}", output_dir / reports.PLOT_FILE)
    return payload
