"""The table, the targets, the plot and the JSON of a `bench-labels` run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.engine.io import atomic_file, atomic_write_json
from backend.engine.metrics import main_metric_name
from backend.engine.types import tagging_examples
from backend.experiments.reports import jsonable

if TYPE_CHECKING:
    from backend.experiments.label_efficiency.runner import LabelEfficiency
from backend.experiments.label_efficiency.config import (
    ALIGNED,
    FEWSHOT,
    FINETUNED,
    HYBRID,
    JSON_FILE,
    METHODS,
    OLD,
    PLOT_FILE,
    RANDOM,
    TARGET_BUDGETS,
    TARGET_SHARE,
    UNCERTAINTY,
    LabelEfficiencyConfig,
    LabelRecord,
)

# --------------------------------------------------------------------------------- reports
Summary = dict[str, dict[str, list[dict[str, Any]]]]  # corpus -> method -> rows by label count
TOKEN_METHODS = (RANDOM, UNCERTAINTY)  # the curves recorded at every query batch: read at token budgets


def summarize(records: Sequence[LabelRecord]) -> Summary:
    """Mean and std of the main metric over seeds per corpus, method and label count."""
    out: Summary = {}
    groups: dict[tuple[str, str, int], list[LabelRecord]] = {}
    for r in records:
        groups.setdefault((r.corpus, r.method, r.labeled), []).append(r)
    for (corpus, method, labeled), group in sorted(groups.items(), key=lambda kv: (METHODS.index(kv[0][1]), kv[0][2])):
        values = [r.metrics["main"] for r in sorted(group, key=lambda r: r.seed)]
        row: dict[str, Any] = {"labeled": labeled, "mean": float(np.mean(values)), "std": float(np.std(values)),
                               "seeds": len(values), "values": values,
                               "seconds_mean": float(np.mean([r.seconds for r in group]))}
        if method == HYBRID:
            row["served_finetune"] = sum(r.detail.get("served") == "finetuned" for r in group)
        if all("tokens" in r.detail for r in group):  # tagging: words labeled
            row["tokens_mean"] = float(np.mean([r.detail["tokens"] for r in group]))
        out.setdefault(corpus, {}).setdefault(method, []).append(row)
    return {c: {m: out[c][m] for m in METHODS if m in out[c]} for c in dict.fromkeys(r.corpus for r in records)}


def token_budgets(sentence_budgets: Sequence[int], mean_words: float) -> list[int]:
    """Token counts comparable with the sentence budgets: each budget times the pool's mean
    sentence length, to two significant digits."""
    out = set()
    for b in sentence_budgets:
        tokens = b * mean_words
        if tokens >= 1:
            digits = max(0, int(math.floor(math.log10(tokens))) - 1)
            out.add(int(round(tokens / 10 ** digits) * 10 ** digits))
    return sorted(out)


def summarize_tokens(records: Sequence[LabelRecord], budgets: dict[str, list[int]]) -> Summary:
    """Tagging: per corpus and dense-curve method (`TOKEN_METHODS`), the main metric at the token
    budgets `budgets[corpus]`, each seed's curve interpolated linearly between its query batches
    (a seed whose curve does not reach a budget leaves it out), mean and std over seeds."""
    curves: dict[tuple[str, str], dict[int, list[tuple[int, float]]]] = {}
    for r in records:
        if r.method in TOKEN_METHODS and "tokens" in r.detail and r.corpus in budgets:
            curves.setdefault((r.corpus, r.method), {}).setdefault(r.seed, []).append(
                (int(r.detail["tokens"]), r.metrics["main"]))
    out: Summary = {}
    for (corpus, method), seeds in sorted(curves.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
        rows = []
        for tokens in budgets[corpus]:
            values = []
            for _, points in sorted(seeds.items()):
                x, y = zip(*sorted(points), strict=True)
                if x[0] <= tokens <= x[-1]:
                    values.append(float(np.interp(tokens, x, y)))
            if values:
                rows.append({"tokens": tokens, "mean": float(np.mean(values)), "std": float(np.std(values)),
                             "seeds": len(values), "values": values})
        out.setdefault(corpus, {})[method] = rows
    return out


def format_token_table(tokens: Summary, config: LabelEfficiencyConfig, metrics: dict[str, str]) -> str:
    """Tagging corpora: one line per token budget, one column per dense-curve method."""
    width, lines = max(len(m) for m in METHODS) + 2, []
    for corpus, methods in tokens.items():
        names = list(methods)
        lines.append(f"{corpus} ({metrics.get(corpus, 'span F1')} against TOKENS labeled, each seed's curve "
                     f"interpolated; mean ± std over seeds)")
        header = f"{'tokens':>7}" + "".join(f"{m:>{width}}" for m in names)
        lines += [header, "-" * len(header)]
        # budgets every seed reaches under at least one method (the ends of the curves differ per seed)
        for t in sorted({r["tokens"] for m in names for r in methods[m] if r["seeds"] == len(config.seeds)}):
            cells = []
            for m in names:
                row = next((r for r in methods[m] if r["tokens"] == t), None)
                cell = "–" if row is None else f"{row['mean']:.3f}±{row['std']:.3f}" + \
                    (f" n{row['seeds']}" if row["seeds"] < len(config.seeds) else "")
                cells.append(f"{cell:>{width}}")
            lines.append(f"{t:>7}" + "".join(cells))
        lines.append("")
    return "\n".join(lines)


def _row(summary: Summary, corpus: str, method: str, labeled: int) -> dict[str, Any] | None:
    return next((r for r in summary.get(corpus, {}).get(method, []) if r["labeled"] == labeled), None)


def targets(summary: Summary, config: LabelEfficiencyConfig) -> dict[str, Any]:
    """Issue 8's label-efficiency targets, from the means over seeds."""
    out: dict[str, Any] = {"hybrid_vs_frozen": {}, "uncertainty_labels_to_random_last": {}}
    for corpus, methods in summary.items():
        if UNCERTAINTY not in methods or RANDOM not in methods:
            continue
        checks = {}
        for b in TARGET_BUDGETS:
            h, f = _row(summary, corpus, HYBRID, b), _row(summary, corpus, RANDOM, b)
            checks[str(b)] = None if h is None or f is None else {
                "hybrid": h["mean"], "frozen": f["mean"], "met": h["mean"] >= f["mean"], "seeds": h["seeds"]}
        out["hybrid_vs_frozen"][corpus] = checks
        random_rows = {b: row for b in config.budgets if (row := _row(summary, corpus, RANDOM, b))}
        last = max(random_rows)
        goal = random_rows[last]["mean"]
        reached = next((r["labeled"] for r in methods[UNCERTAINTY] if r["mean"] >= goal), None)
        out["uncertainty_labels_to_random_last"][corpus] = {
            "random_budget": last, "random_accuracy": goal, "labels_needed": reached,
            "share": None if reached is None else reached / last,
            "met": reached is not None and reached <= TARGET_SHARE * last}
    met = [v["met"] for v in out["uncertainty_labels_to_random_last"].values()]
    out["uncertainty_corpora_met"] = f"{sum(met)} of {len(met)} (target: at least 2 of 3)"
    h, o = _row(summary, "rotten_tomatoes", HYBRID, 50), _row(summary, "rotten_tomatoes", OLD, 50)
    out["rotten_tomatoes_hybrid_minus_old_at_50"] = None if h is None or o is None else {
        "hybrid": h["mean"], "finetune_old": o["mean"], "gain": h["mean"] - o["mean"],
        "met": h["mean"] - o["mean"] >= 0.05, "seeds": min(h["seeds"], o["seeds"])}
    return out


def format_table(summary: Summary, config: LabelEfficiencyConfig, metrics: dict[str, str]) -> str:
    """Per corpus: one line per label count in the table's budgets, one column per method."""
    width, lines = max(len(m) for m in METHODS) + 2, []
    for corpus, methods in summary.items():
        names = [m for m in METHODS if m in methods]
        labeled = sorted({r["labeled"] for m in names for r in methods[m]
                          if r["labeled"] in config.budgets or m in FINETUNED or m == HYBRID})
        lines.append(f"{corpus} ({metrics.get(corpus, 'accuracy')}, mean ± std over seeds; n = seeds when < all)")
        header = f"{'labels':>7}" + "".join(f"{m:>{width}}" for m in names)
        lines += [header, "-" * len(header)]
        for b in labeled:
            cells = []
            for m in names:
                row = _row(summary, corpus, m, b)
                cell = "–" if row is None else f"{row['mean']:.3f}±{row['std']:.3f}" + \
                    (f" n{row['seeds']}" if row["seeds"] < len(config.seeds) else "")
                cells.append(f"{cell:>{width}}")
            tokens = [f"{r['tokens_mean']:.0f}" if (r := _row(summary, corpus, m, b)) and "tokens_mean" in r else "–"
                      for m in names]
            words = set(tokens) != {"–"}
            lines.append(f"{b:>7}" + "".join(cells) + (f"   tokens: {' / '.join(tokens)}" if words else ""))
        lines.append("")
    return "\n".join(lines)


def format_targets(result: dict[str, Any]) -> str:
    lines = ["targets (issue 8, means over seeds)"]
    for corpus, checks in result["hybrid_vs_frozen"].items():
        cells = [f"{b}: " + ("not measured" if c is None else
                             f"{c['hybrid']:.3f} vs {c['frozen']:.3f} {'met' if c['met'] else 'MISSED'}")
                 for b, c in checks.items()]
        lines.append(f"  hybrid >= frozen-lr-random, {corpus}: " + "; ".join(cells))
    gain = result["rotten_tomatoes_hybrid_minus_old_at_50"]
    if gain is not None:
        lines.append(f"  rotten_tomatoes @50: hybrid {gain['hybrid']:.3f} - finetune-old {gain['finetune_old']:.3f} = "
                     f"{gain['gain']:+.3f} (target +0.05: {'met' if gain['met'] else 'MISSED'})")
    for corpus, t in result["uncertainty_labels_to_random_last"].items():
        needed = "not within the budgets" if t["labels_needed"] is None else \
            f"{t['labels_needed']} labels ({t['share']:.0%})"
        lines.append(f"  proxy-uncertainty reaches frozen-lr-random@{t['random_budget']} ({t['random_accuracy']:.3f}), "
                     f"{corpus}: {needed} {'met' if t['met'] else 'MISSED'}")
    lines.append(f"  uncertainty target met on {result['uncertainty_corpora_met']}")
    return "\n".join(lines)


def plot(summary: Summary, metrics: dict[str, str], path: Path) -> Path:
    """One panel per corpus: mean ± std against labels (log scale), fine-tunes as markers; tagging
    corpora get a second panel against the tokens labeled (each point: the mean tokens and score
    over seeds at one sentence budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(corpus, "labeled") for corpus in summary] + \
        [(corpus, "tokens_mean") for corpus, methods in summary.items()
         if all("tokens_mean" in r for rows in methods.values() for r in rows)]
    n = len(panels)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.3 * rows), squeeze=False)
    styles = {RANDOM: ("C0", "-", None), UNCERTAINTY: ("C1", "-", None), OLD: ("C2", ":", "s"),
              FEWSHOT: ("C3", ":", "^"), ALIGNED: ("C5", ":", "D"), HYBRID: ("C4", "--", "o")}
    for ax, (corpus, axis) in zip(axes.flat, panels):
        for method, data in summary[corpus].items():
            color, line, marker = styles[method]
            x = np.array([r[axis] for r in data])
            mean, std = np.array([r["mean"] for r in data]), np.array([r["std"] for r in data])
            ax.plot(x, mean, line, color=color, marker=marker, markersize=5, label=method)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_xscale("log")
        tagging = (corpus, "tokens_mean") in panels
        ax.set_xlabel("tokens labeled" if axis == "tokens_mean" else "labeled sentences" if tagging else "labels")
        ax.set_ylabel(metrics.get(corpus, "accuracy"))
        ax.set_title(corpus if axis == "labeled" else f"{corpus}, against tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_outputs(bench: LabelEfficiency, records: Sequence[LabelRecord], output_dir: Path,
                  extra: dict[str, Any]) -> tuple[str, Path, Path]:
    """Table text, `label_efficiency.json` and `label_efficiency.png` under `output_dir`."""
    summary = summarize(records)
    metrics = {name: main_metric_name(c.pool.schema) for name, c in bench.corpora.items()}
    words = {name: float(np.mean([len(ex.words) for ex in tagging_examples(c.pool.examples)]))
             for name, c in bench.corpora.items() if c.tagging}
    tokens = summarize_tokens(records, {name: token_budgets(bench.config.budgets, w) for name, w in words.items()})
    result = targets(summary, bench.config)
    text = format_table(summary, bench.config, metrics) + "\n" + \
        (format_token_table(tokens, bench.config, metrics) + "\n" if tokens else "") + format_targets(result)
    corpora = {name: {"metric": metrics[name], "pool": len(c.pool), "test": len(c.test),
                      "labels": list(c.pool.schema.labels), "encode_seconds": c.encode_seconds,
                      **({"mean_words": words[name]} if name in words else {})}
               for name, c in bench.corpora.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / JSON_FILE
    atomic_write_json(json_path, json.loads(json.dumps({
        "config": asdict(bench.config), "methods": METHODS, "corpora": corpora, **extra, "targets": result,
        "summary": summary, "tokens_summary": tokens, "records": [asdict(r) for r in records]}, default=jsonable)))
    png_path = plot(summary, metrics, output_dir / PLOT_FILE)
    return text, json_path, png_path


