"""Reports shared by the experiment drivers (`simulate`, `plasm_experiment`): mean ± std over
seeds per configuration and iteration, text tables, learning-curve plots and `results.json`.

Files are written atomically (`backend.engine.io`), so an interrupted run never leaves half a
results file beside a complete plot from an older run.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backend.engine.io import atomic_file, atomic_write_text

RESULTS_FILE = "results.json"
PLOT_FILE = "learning_curve.png"

Summary = dict[str, list[dict[str, float]]]  # configuration -> one row per iteration (the JSON shape)


class Record(Protocol):
    """What `summarize` reads from a run's records (`IterationRecord`, `PlasmRecord`)."""

    configuration: str
    iteration: int
    labeled: int
    metrics: dict[str, float]


def summarize(
    records: Sequence[Record],
    means: Mapping[str, Callable[[Any], float]] | None = None,
    order: Sequence[str] | None = None,
) -> Summary:
    """Per configuration (in `order`, else first-seen order) and iteration: mean labeled size, mean
    and std of the main metric over seeds, the number of seeds, and the mean of each `means` column."""
    names = list(order) if order is not None else list(dict.fromkeys(r.configuration for r in records))
    out: Summary = {}
    for name in names:
        by_iteration: dict[int, list[Record]] = {}
        for r in records:
            if r.configuration == name:
                by_iteration.setdefault(r.iteration, []).append(r)
        if not by_iteration:
            continue
        rows = []
        for it in sorted(by_iteration):
            group = by_iteration[it]
            main = np.array([r.metrics["main"] for r in group])
            row = {"iteration": it, "labeled": float(np.mean([r.labeled for r in group])),
                   "main_mean": float(main.mean()), "main_std": float(main.std()), "seeds": len(group)}
            row.update({column: float(np.mean([value(r) for r in group])) for column, value in (means or {}).items()})
            rows.append(row)
        out[name] = rows
    return out


def format_table(summary: Summary, metric_name: str) -> str:
    """One line per configuration and iteration, with the seconds each part took (simulate)."""
    header = (f"{'config':<17}{'it':>3}{'labeled':>9}{metric_name:>16}"
              f"{'train s':>9}{'infer s':>9}{'total s':>9}{'rescored':>10}")
    lines = [header, "-" * len(header)]
    for name, rows in summary.items():
        for row in rows:
            lines.append(
                f"{name:<17}{row['iteration']:>3}{row['labeled']:>9.0f}"
                f"{row['main_mean']:>9.3f} ±{row['main_std']:.3f}"
                f"{row['train_seconds'] + row['successor_seconds']:>9.1f}{row['inference_seconds']:>9.2f}"
                f"{row['overall_seconds']:>9.1f}{row['rescored_share']:>9.1%}"
            )
    return "\n".join(lines)


def format_curve_table(summary: Summary, metric_name: str, descriptions: Mapping[str, str]) -> str:
    """One column per configuration, one line per iteration, then a legend (PLASM experiment)."""
    names = list(summary)
    width = 17
    header = f"{'it':>3}{'labeled':>9}" + "".join(f"{n[:width - 1]:>{width}}" for n in names)
    lines = [f"{metric_name}, mean ± std over seeds", header, "-" * len(header)]
    for it in sorted({row["iteration"] for rows in summary.values() for row in rows}):
        labeled = next(row["labeled"] for rows in summary.values() for row in rows if row["iteration"] == it)
        cells = []
        for n in names:
            row = next((row for row in summary[n] if row["iteration"] == it), None)
            cells.append(f"{row['main_mean']:.3f} ±{row['main_std']:.3f}" if row else "–")
        lines.append(f"{it:>3}{labeled:>9.0f}" + "".join(f"{cell:>{width}}" for cell in cells))
    lines.append("")
    lines.extend(f"  {n}: {descriptions.get(n, n)}" for n in names)
    return "\n".join(lines)


def plot_learning_curves(summary: Summary, metric_name: str, title: str, path: Path) -> Path:
    """Mean ± std of the main metric against the labeled size, one curve per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in summary.items():
        x = [r["labeled"] for r in rows]
        mean = np.array([r["main_mean"] for r in rows])
        std = np.array([r["main_std"] for r in rows])
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("labeled instances")
    ax.set_ylabel(metric_name)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def jsonable(value: Any) -> Any:
    """`json.dumps` fallback: typed records (dataclasses) as dicts, numpy scalars as numbers."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_results(output_dir: Path, payload: Mapping[str, Any]) -> Path:
    """`output_dir/results.json`, written atomically; dataclasses in the payload become objects."""
    path = Path(output_dir) / RESULTS_FILE
    atomic_write_text(path, json.dumps(payload, indent=2, default=jsonable))
    return path


def results_payload(dataset: str, metric: str, config: Any, summary: Summary, records: Sequence[Any],
                    **extra: Any) -> dict[str, Any]:
    """The results.json layout both drivers share; `config` (a dataclass) is what `--config` replays."""
    rows = [r.to_dict() if hasattr(r, "to_dict") else asdict(r) for r in records]
    return {"dataset": dataset, "metric": metric, "config": asdict(config), "summary": summary, **extra,
            "records": rows}
