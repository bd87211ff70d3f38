"""The service loop's report: every run file in the output directory, side by side with bench-labels.

Runs are kept one file each (``runs/<corpus>-<deployment>-seed<k>.json``), so separate commands (one
run at a time on a small machine) add up to one table, ``service_loop.json`` and
``service_loop.png``: accuracy against labels, one line per deployment (mean over seeds), and, with
``--compare <bench-labels label_efficiency.json>``, bench-labels' curves on the same corpora (mean
± standard deviation over its seeds).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from backend.engine.io import atomic_file, atomic_write_json

RUNS_DIR, JSON_FILE, PLOT_FILE = "runs", "service_loop.json", "service_loop.png"
COMPARED = ("proxy-uncertainty", "frozen-lr-random", "hybrid")  # bench-labels methods shown, when present
Curve = dict[int, dict[str, float]]  # labels -> mean, std, n


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def run_path(out_dir: Path, run: dict[str, Any]) -> Path:
    return out_dir / RUNS_DIR / f"{_safe(run['corpus'])}-{run['deployment']}-seed{run['seed']}.json"


def write_run(out_dir: Path, run: dict[str, Any]) -> Path:
    path = run_path(out_dir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, run)
    return path


def load_runs(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / RUNS_DIR).glob("*.json"))]


def _curve(values: dict[int, list[float]]) -> Curve:
    return {b: {"mean": statistics.fmean(v), "std": statistics.pstdev(v), "n": len(v)}
            for b, v in sorted(values.items())}


def loop_curves(runs: list[dict[str, Any]]) -> dict[str, dict[str, Curve]]:
    """corpus -> deployment -> labels -> accuracy over seeds."""
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    for run in runs:
        for point in run.get("points", []):
            by = values.setdefault(run["corpus"], {}).setdefault(run["deployment"], {})
            by.setdefault(int(point["labeled"]), []).append(float(point["accuracy"]))
    return {c: {d: _curve(v) for d, v in sorted(ds.items())} for c, ds in values.items()}


def bench_labels_curves(path: str | Path) -> dict[str, dict[str, Curve]]:
    """corpus -> method -> labels -> main metric over seeds, from a bench-labels JSON's records."""
    payload = json.loads(Path(path).read_text())
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    for r in payload.get("records", []):
        if r.get("method") in COMPARED:
            by = values.setdefault(r["corpus"], {}).setdefault(r["method"], {})
            by.setdefault(int(r["labeled"]), []).append(float(r["metrics"]["main"]))
    return {c: {m: _curve(ms[m]) for m in COMPARED if m in ms} for c, ms in values.items()}


def _cell(curve: Curve | None, labeled: int, width: int) -> str:
    point = (curve or {}).get(labeled)
    if point is None:
        return f"{'–':>{width}}"
    text = f"{point['mean']:.3f}" if point["n"] == 1 else f"{point['mean']:.3f}±{point['std']:.3f} n{point['n']}"
    return f"{text:>{width}}"


def format_table(runs: list[dict[str, Any]], loop: dict[str, dict[str, Curve]],
                 compare: dict[str, dict[str, Curve]]) -> str:
    """Per corpus: accuracy at each budget, loop deployments then bench-labels methods; then one
    line per run: update latency, misses, iterations, wall time."""
    lines, width = [], 22
    for corpus, deployments in loop.items():
        methods = compare.get(corpus, {})
        names = [f"loop {d}" for d in deployments] + list(methods)
        lines += [f"{corpus} (test accuracy; bench-labels: mean±std over its seeds)",
                  f"{'labels':>7}" + "".join(f"{n:>{width}}" for n in names)]
        budgets = sorted({b for curve in deployments.values() for b in curve})
        for b in budgets:
            lines.append(f"{b:>7}" + "".join(_cell(c, b, width) for c in [*deployments.values(), *methods.values()]))
        lines.append("")
    lines.append(f"{'run':<34}{'p50 s':>7}{'p95 s':>7}{'misses':>8}{'iters':>6}{'wall s':>8}  serving at the budgets")
    for run in runs:
        lat = run.get("latency_s") or {}
        serving = ", ".join(f"{p['labeled']}:{p.get('serving_model') or '-'}" for p in run.get("points", []))
        name = f"{run['corpus']} {run['deployment']} seed {run['seed']}"
        lines.append(f"{name:<34}{lat.get('p50', float('nan')):>7.2f}{lat.get('p95', float('nan')):>7.2f}"
                     f"{run.get('misses', 0):>4}/{run.get('annotations', 0):<3}{run.get('iterations') or 0:>6}"
                     f"{run.get('wall_seconds', 0):>8.0f}  {serving}")
    return "\n".join(lines)


def plot(loop: dict[str, dict[str, Curve]], compare: dict[str, dict[str, Curve]], path: Path) -> Path:
    """One panel per corpus: the loop's deployments (solid) and bench-labels' methods (dashed, ±std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(loop), 2) or 1
    rows = max(1, math.ceil(len(loop) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.3 * rows), squeeze=False)
    for ax, (corpus, deployments) in zip(axes.flat, loop.items()):
        top = max(b for curve in deployments.values() for b in curve)
        for i, (method, curve) in enumerate(compare.get(corpus, {}).items()):
            xs = [b for b in curve if b <= top * 1.5]
            mean = [curve[b]["mean"] for b in xs]
            std = [curve[b]["std"] for b in xs]
            ax.plot(xs, mean, "--", color=f"C{i + 2}", label=f"bench-labels {method}")
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=f"C{i + 2}", alpha=0.12)
        for i, (deployment, curve) in enumerate(deployments.items()):
            xs = sorted(curve)
            ax.plot(xs, [curve[b]["mean"] for b in xs], "-o", color=f"C{i}",
                    label=f"service loop, {deployment} workers")
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy")
        ax.set_title(corpus)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(loop):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def report(out_dir: Path, compare_path: str | None) -> tuple[str, Path, Path]:
    """Table text, ``service_loop.json`` and ``service_loop.png`` over every run in `out_dir`."""
    runs = load_runs(out_dir)
    loop = loop_curves(runs)
    compare = bench_labels_curves(compare_path) if compare_path else {}
    text = format_table(runs, loop, compare)
    summary = [{k: v for k, v in run.items() if k != "annotation_log"} for run in runs]
    json_path = out_dir / JSON_FILE
    atomic_write_json(json_path, json.loads(json.dumps({
        "runs": summary, "loop": loop, "bench_labels": compare, "compare_file": compare_path,
        "run_files": [str(run_path(out_dir, r).relative_to(out_dir)) for r in runs], "table": text})))
    return text, json_path, plot(loop, compare, out_dir / PLOT_FILE)
