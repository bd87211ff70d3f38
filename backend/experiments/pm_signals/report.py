"""bench-pm-signals' summaries (tuning and held-out corpora apart), table text, JSON and plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.io import atomic_write_json
from backend.engine.proxy import MAX_CV_FOLDS
from backend.engine.quality import (
    AUDIT,
    AUDIT_HELDOUT,
    AUDIT_HELDOUT_PPI,
    AUDIT_PPI,
    AUDIT_RECENT,
    AUDIT_SHARE,
    DEFAULT_ESTIMATE,
    IMPORTANCE,
    PROXY_CV,
    SELF_CONFIDENCE,
)
from backend.engine.stopping import KAPPA_THRESHOLD, Comparison, first_firing
from backend.engine.suspects import MIN_CONFIDENCE
from backend.experiments.pm_signals.runner import SUSPECT_FLOORS, SUSPECT_FOLDS, LoopRun, PmSignalsConfig

ESTIMATES = (AUDIT, AUDIT_RECENT, AUDIT_PPI, AUDIT_HELDOUT, AUDIT_HELDOUT_PPI, PROXY_CV, IMPORTANCE, SELF_CONFIDENCE)
PLOTTED = (AUDIT, DEFAULT_ESTIMATE, PROXY_CV, IMPORTANCE, SELF_CONFIDENCE)
EFFICIENCY_BUDGETS = (50, 100, 200, 500)
PLATEAU = 0.01  # "within one point" of the last budget's test accuracy
POOLED_FROM = 100  # the pooled estimate columns count the budgets from here on
MISS_SHARE = 0.1  # a stopping threshold may give up more than PLATEAU in at most this share of the loops
STOP_RULES: dict[str, tuple[float, ...]] = {  # statistic -> thresholds replayed over each loop's history
    "kappa": (0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99),
    "changed": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05),
    "uncertainty": (0.5, 0.6, 0.7, 0.75, 0.8),  # normalised entropy: the C schedule keeps it high
}
GROUPS = ("tuning", "held-out")
JSON_FILE, PLOT_FILE = "pm_signals.json", "pm_signals.png"
Summary = dict[str, Any]


def _group(run: LoopRun) -> str:
    return GROUPS[int(run.heldout)]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def default_share(config: PmSignalsConfig) -> float:
    """The audit share the stopping and estimate tables read: `AUDIT_SHARE` when it was run."""
    shares = [s for s in config.audit_shares if s > 0]
    return AUDIT_SHARE if AUDIT_SHARE in shares else (shares[0] if shares else 0.0)


def _errors(pairs: list[tuple[dict[str, Any], float]], **extra: Any) -> dict[str, Any]:
    errors = [e["value"] - t for e, t in pairs]
    return {**extra, "runs": len(pairs), "mae": float(np.mean(np.abs(errors))), "bias": float(np.mean(errors)),
            "coverage": float(np.mean([e["low"] <= t <= e["high"] for e, t in pairs])),
            "width": float(np.mean([e["high"] - e["low"] for e, _ in pairs])),
            "n": float(np.mean([e["n"] for e, _ in pairs]))}


def estimate_rows(runs: Sequence[LoopRun]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per audit share and method: per budget, and pooled over the budgets from `POOLED_FROM` labels
    on: mean abs error and mean signed error against the serving head's test accuracy, the
    interval's coverage and mean width."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    clean = [r for r in runs if not r.noisy and r.share > 0]
    budgets = sorted({b for r in clean for b in r.estimates})
    for share in sorted({r.share for r in clean}):
        for method in ESTIMATES:
            pairs = {b: [(r.estimates[b][method], r.estimates[b]["truth"]) for r in clean if r.share == share
                         and b in r.estimates and (r.estimates[b].get(method) or {}).get("value") is not None]
                     for b in budgets}
            pooled = [p for b in budgets if b >= POOLED_FROM for p in pairs[b]]
            out.setdefault(str(share), {})[method] = {
                "budgets": [_errors(pairs[b], labeled=b) for b in budgets if pairs[b]],
                "pooled": _errors(pooled, labeled=f"{POOLED_FROM}+") if pooled else None}
    return out


def efficiency_rows(runs: Sequence[LoopRun], fallback: Sequence[int]) -> dict[str, list[dict[str, Any]]]:
    """Per corpus and budget (`EFFICIENCY_BUDGETS` the loops reached, else `fallback`): test
    accuracy (mean, std over seeds) of each clean loop's share."""
    out: dict[str, list[dict[str, Any]]] = {}
    clean = [r for r in runs if not r.noisy]
    reached = {n for r in clean for n, _ in r.curve}
    budgets = [b for b in EFFICIENCY_BUDGETS if b in reached] or [b for b in fallback if b in reached]
    for corpus in dict.fromkeys(r.corpus for r in clean):
        for budget in budgets:
            row: dict[str, Any] = {"labeled": budget}
            for share in sorted({r.share for r in clean}):
                values = [a for r in clean if r.corpus == corpus and r.share == share
                          for n, a in r.curve if n == budget]
                if values:
                    row[str(share)] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
            if len(row) > 1:
                out.setdefault(corpus, []).append(row)
    return out


def efficiency_cost(runs: Sequence[LoopRun], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Per budget and audit share > 0: test accuracy minus share 0's, paired by corpus and seed,
    mean and standard error over the pairs."""
    curves = {(r.corpus, r.seed, r.share): dict(r.curve) for r in runs if not r.noisy}
    out = []
    for share in sorted({s for _, _, s in curves if s > 0}):
        for budget in budgets:
            diffs = [curves[(c, seed, share)][budget] - base[budget] for (c, seed, s), base in curves.items()
                     if s == 0 and (c, seed, share) in curves and budget in base]
            if diffs:
                out.append({"share": share, "labeled": budget, "pairs": len(diffs), "mean": float(np.mean(diffs)),
                            "se": float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else None})
    return out


def plateau(curve: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """The last accuracy, the first label count within `PLATEAU` of it, and the first from which it stays so."""
    final = curve[-1][1]
    within = [a >= final - PLATEAU for _, a in curve]
    settled = next(i for i in range(len(curve)) if all(within[i:]))
    return {"final": final, "labels": curve[-1][0], "reached": curve[within.index(True)][0],
            "settled": curve[settled][0]}


def stopping_outcome(run: LoopRun, statistic: str, threshold: float) -> dict[str, Any]:
    """Where the rule first fires over `run`'s history, the labels it saves against `max_labels`
    and the test accuracy given up (last accuracy minus accuracy at the firing)."""
    history = [Comparison(**h) for h in run.stopping]
    fired = first_firing(history, threshold, statistic)
    accuracy = dict(run.curve)
    last_n, last_acc = run.curve[-1]
    if fired is None:
        return {"fired": None, "saved": 0, "given_up": 0.0}
    return {"fired": fired, "saved": last_n - fired, "given_up": last_acc - accuracy[fired]}


def stopping_rows(runs: Sequence[LoopRun], share: float) -> dict[str, list[dict[str, Any]]]:
    """Per rule and threshold over the clean loops at `share`: when it fires against the plateau."""
    clean = [r for r in runs if not r.noisy and r.share == share]
    out: dict[str, list[dict[str, Any]]] = {}
    for statistic, thresholds in STOP_RULES.items():
        for threshold in thresholds:
            outcomes = [stopping_outcome(r, statistic, threshold) for r in clean]
            fired = [o["fired"] for o in outcomes if o["fired"] is not None]
            out.setdefault(statistic, []).append({
                "threshold": threshold, "runs": len(outcomes), "fired_runs": len(fired),
                "fired_mean": _mean(fired), "saved_mean": _mean([o["saved"] for o in outcomes]),
                "given_up_mean": _mean([o["given_up"] for o in outcomes]),
                "given_up_max": max((o["given_up"] for o in outcomes), default=None),
                "over_one_point": sum(o["given_up"] > PLATEAU for o in outcomes),
                "per_run": [{"corpus": r.corpus, "seed": r.seed, **o} for r, o in zip(clean, outcomes)]})
    return out


def choose_threshold(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rule's threshold that saves the most labels while giving up more than `PLATEAU` test
    accuracy in at most `MISS_SHARE` of the loops (ties: the stricter)."""
    ok = [r for r in rows if r["fired_runs"] and r["over_one_point"] <= MISS_SHARE * r["runs"]]
    return max(ok, key=lambda r: (r["saved_mean"], -r["over_one_point"])) if ok else None


def suspect_rows(runs: Sequence[LoopRun]) -> dict[str, list[dict[str, Any]]]:
    """Per budget, fold count and floor over the noisy loops, all corpora then each: pooled
    precision (hits / flags), mean recall, flags per loop, precision of the top 10."""
    noisy = [r for r in runs if r.noisy]
    out: dict[str, list[dict[str, Any]]] = {}
    corpora = ["all", *dict.fromkeys(r.corpus for r in noisy)]
    for budget in sorted({b for r in noisy for b in r.suspects}):
        for corpus, folds, floor in ((c, k, f) for c in corpora for k in SUSPECT_FOLDS for f in SUSPECT_FLOORS):
            found = [r.suspects[budget] for r in noisy if budget in r.suspects and corpus in ("all", r.corpus)]
            cells = [s["folds"][str(folds)][str(floor)] for s in found]
            flagged, hits = sum(c["flagged"] for c in cells), sum(c["hits"] for c in cells)
            top = sum(min(10, c["flagged"]) for c in cells)
            out.setdefault(str(budget), []).append({
                "corpus": corpus, "folds": folds, "floor": floor, "runs": len(cells),
                "flipped_mean": float(np.mean([s["flipped"] for s in found])), "flagged_mean": flagged / len(cells),
                "precision": hits / flagged if flagged else None, "recall": _mean([c["recall"] for c in cells]),
                "top10_precision": sum(c["top10_hits"] for c in cells) / top if top else None,
                "seconds_mean": float(np.mean([s["seconds"][str(folds)] for s in found]))})
    return out


def summarize(runs: Sequence[LoopRun], config: PmSignalsConfig) -> Summary:
    """Everything the tables and the plot show, tuning and held-out corpora apart; the stopping
    thresholds are chosen on the tuning corpora and applied unchanged to the held-out ones."""
    share = default_share(config)
    out: Summary = {"default_share": share, "groups": {}}
    chosen: dict[str, Any] = {}
    for group in GROUPS:
        mine = [r for r in runs if _group(r) == group]
        if not mine:
            continue
        stopping = stopping_rows(mine, share)
        if group == "tuning":
            chosen = {s: (c["threshold"] if (c := choose_threshold(rows)) else None) for s, rows in stopping.items()}
        out["groups"][group] = {
            "corpora": list(dict.fromkeys(r.corpus for r in mine)), "estimates": estimate_rows(mine),
            "efficiency": efficiency_rows(mine, config.budgets),
            "efficiency_cost": efficiency_cost(mine, [b for b in EFFICIENCY_BUDGETS if b <= config.max_labels]),
            "stopping": stopping, "suspects": suspect_rows(mine),
            "plateau": [{"corpus": r.corpus, "seed": r.seed, **plateau(r.curve)}
                        for r in mine if not r.noisy and r.share == share]}
    out["chosen_thresholds"] = chosen
    return out


def _cell(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_tables(summary: Summary, config: PmSignalsConfig) -> str:
    lines: list[str] = []
    share = summary["default_share"]
    for group, data in summary["groups"].items():
        lines += [f"===== {group} corpora: {', '.join(data['corpora'])} =====", ""]
        lines += _estimate_table(data, config.confidence) + _efficiency_table(data)
        lines += _stopping_table(data, summary["chosen_thresholds"], share) + _suspect_table(data)
    return "\n".join(lines)


def _estimate_table(data: dict[str, Any], confidence: float) -> list[str]:
    lines = []
    for share, methods in data["estimates"].items():
        budgets = sorted({r["labeled"] for m in methods.values() for r in m["budgets"]})
        lines.append(f"(i) estimate vs the serving head's test accuracy, audit share {share}: "
                     f"MAE / coverage of the {confidence:.0%} interval (mean width); last column pooled, bias too")
        header = f"{'estimate':<19}" + "".join(f"{b:>13}" for b in budgets) + \
            f"{POOLED_FROM:>10}+: MAE bias cover width"
        lines += [header, "-" * len(header)]
        for method, m in methods.items():
            by = {r["labeled"]: r for r in m["budgets"]}
            cells = [f"{by[b]['mae']:.3f}/{by[b]['coverage']:>4.0%}" if b in by else "–" for b in budgets]
            p = m["pooled"]
            pooled = "–" if p is None else \
                f"{p['mae']:.3f} {p['bias']:+.3f} {p['coverage']:>4.0%} ({p['width']:.2f}, n {p['n']:.0f})"
            name = method + (" *" if method == DEFAULT_ESTIMATE else "")
            lines.append(f"{name:<19}" + "".join(f"{c:>13}" for c in cells) + f"   {pooled}")
        lines.append("")
    return lines + [f"(* the default, `engine.quality.audit_estimate`; the audit share's default is {AUDIT_SHARE})", ""]


def _efficiency_table(data: dict[str, Any]) -> list[str]:
    lines = ["(i) the audit share's label-efficiency cost: test accuracy (mean ± std over seeds)"]
    for corpus, rows in data["efficiency"].items():
        shares = [k for k in rows[0] if k not in ("labeled",)]
        header = f"{corpus:<18}{'labels':>7}" + "".join(f"{'share ' + s:>16}" for s in shares)
        lines += [header, "-" * len(header)]
        for row in rows:
            cells = [f"{row[s]['mean']:.3f}±{row[s]['std']:.3f}" if s in row else "–" for s in shares]
            lines.append(f"{'':<18}{row['labeled']:>7}" + "".join(f"{c:>16}" for c in cells))
    lines.append("paired difference to share 0 over corpora and seeds (mean ± standard error):")
    for r in data["efficiency_cost"]:
        lines.append(f"  share {r['share']:<5} at {r['labeled']:>4} labels: {r['mean']:+.4f} ± {_cell(r['se'], '.4f')} "
                     f"({r['pairs']} pairs)")
    return lines + [""]


def _stopping_table(data: dict[str, Any], chosen: dict[str, Any], share: float) -> list[str]:
    settled = [p["settled"] for p in data["plateau"]]
    lines = [f"(ii) stopping (clean loops, audit share {share}): test accuracy settles within one point of its "
             f"last value at {_cell(_mean(settled), '.0f')} labels on average (range {min(settled)}-{max(settled)})",
             f"{'rule':<12}{'threshold':>10}{'fired':>8}{'mean at':>9}{'saved':>8}{'acc given up':>14}"
             f"{'max':>8}{'>1pt':>6}", "-" * 75]
    for statistic, rows in data["stopping"].items():
        for r in rows:
            mark = " *" if chosen.get(statistic) == r["threshold"] else ""
            lines.append(f"{statistic:<12}{r['threshold']:>10}{r['fired_runs']:>5}/{r['runs']:<2}"
                         f"{_cell(r['fired_mean'], '.0f'):>9}{_cell(r['saved_mean'], '.0f'):>8}"
                         f"{_cell(r['given_up_mean'], '+.3f'):>14}{_cell(r['given_up_max'], '+.3f'):>8}"
                         f"{r['over_one_point']:>6}{mark}")
    return lines + [f"(* chosen on the tuning corpora: most labels saved with > 1 point given up in at most "
                    f"{MISS_SHARE:.0%} of the loops; BV09's kappa {KAPPA_THRESHOLD} for reference)", ""]


def _suspect_table(data: dict[str, Any]) -> list[str]:
    lines = ["(iii) suspects in the noisy loop (all corpora, then each at the defaults): pooled precision, mean "
             "recall, flags per loop, precision of the top 10",
             f"{'corpus':<18}{'labels':>7}{'folds':>6}{'floor':>7}{'flipped':>9}{'flagged':>9}{'precision':>11}"
             f"{'recall':>8}{'top10':>7}", "-" * 82]
    for budget, rows in data["suspects"].items():
        for r in rows:
            if r["corpus"] == "all" or (r["folds"] == MAX_CV_FOLDS and r["floor"] == MIN_CONFIDENCE):
                lines.append(f"{r['corpus']:<18}{budget:>7}{r['folds']:>6}{r['floor']:>7}{r['flipped_mean']:>9.1f}"
                             f"{r['flagged_mean']:>9.1f}{_cell(r['precision']):>11}{_cell(r['recall']):>8}"
                             f"{_cell(r['top10_precision']):>7}")
    return lines + [f"(defaults: {MAX_CV_FOLDS} folds, floor {MIN_CONFIDENCE})", ""]


def plot(runs: Sequence[LoopRun], share: float, path: Path) -> Path:
    """Per corpus: the serving head's test accuracy and the main estimates (mean over seeds; the
    default one with its mean interval), and below the stop-set kappa of each seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r.corpus for r in runs))
    fig, axes = plt.subplots(2, len(corpora), figsize=(4.6 * len(corpora), 7.5), squeeze=False)
    for col, corpus in enumerate(corpora):
        mine = [r for r in runs if r.corpus == corpus and not r.noisy and r.share == share]
        if not mine:
            continue
        ax = axes[0, col]
        budgets = sorted(mine[0].estimates)
        ax.plot(budgets, [np.mean([r.estimates[b]["truth"] for r in mine]) for b in budgets], "k-", lw=2,
                label="test accuracy")
        for i, method in enumerate(PLOTTED):
            values = [_mean([(r.estimates[b].get(method) or {}).get("value") for r in mine]) for b in budgets]
            ax.plot(budgets, [np.nan if v is None else v for v in values], "--", color=f"C{i}", marker="o",
                    ms=3, label=method)
            if method == DEFAULT_ESTIMATE:
                lows = [np.mean([r.estimates[b][method]["low"] for r in mine]) for b in budgets]
                highs = [np.mean([r.estimates[b][method]["high"] for r in mine]) for b in budgets]
                ax.fill_between(budgets, lows, highs, color=f"C{i}", alpha=0.15)
        ax.set_title(f"{corpus}{' (held out)' if mine[0].heldout else ''}")
        ax.set_xlabel("labels")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for r in mine:
            points = [(h["labeled"], h["kappa"]) for h in r.stopping if h["kappa"] is not None]
            ax.plot(*zip(*points), lw=1, label=f"seed {r.seed}")
        ax.axhline(KAPPA_THRESHOLD, color="k", ls=":", lw=1)
        ax.set_ylim(0.6, 1.0)
        ax.set_xlabel("labels")
        ax.set_ylabel("kappa vs the previous model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rounded(obj: Any, digits: int = 4) -> Any:
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


RUN_FIELDS = {"estimates": "budget -> method -> [value, low, high, n] (truth: the serving head's test accuracy)",
              "stopping": "columns over the recorded updates (kappa and changed: against the previous one)"}


def compact_run(run: LoopRun) -> dict[str, Any]:
    """A loop for the JSON file (`RUN_FIELDS`): estimates as [value, low, high, n] (the notes
    repeat), none for the noisy loop (the summaries read the clean ones); the stopping history as
    columns; floats to 4 digits."""
    out = asdict(run)
    out["estimates"] = {} if run.noisy else {
        b: {m: ([e[k] for k in ("value", "low", "high", "n")] if isinstance(e, dict) and "value" in e else e)
            for m, e in methods.items()} for b, methods in run.estimates.items()}
    out["stopping"] = {k: [h[k] for h in run.stopping] for k in (run.stopping[0] if run.stopping else {})}
    return dict(_rounded(out))


def write_outputs(runs: Sequence[LoopRun], config: PmSignalsConfig, output_dir: Path,
                  extra: dict[str, Any]) -> tuple[str, Path, Path]:
    """Table text, `pm_signals.json` (config, summary, every loop) and `pm_signals.png`."""
    summary = summarize(runs, config)
    text = format_tables(summary, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / JSON_FILE
    for rows in (rows for group in summary["groups"].values() for rows in group["stopping"].values()):
        for row in rows:  # per loop: where it fired, the rest is in `runs`
            row["per_run"] = [{k: p[k] for k in ("corpus", "seed", "fired", "given_up")} for p in row["per_run"]]
    atomic_write_json(json_path, json.loads(json.dumps({
        "config": asdict(config), **extra, "summary": _rounded(summary), "run_fields": RUN_FIELDS,
        "runs": [compact_run(r) for r in runs]})),
        indent=None)
    return text, json_path, plot(runs, summary["default_share"], output_dir / PLOT_FILE)
