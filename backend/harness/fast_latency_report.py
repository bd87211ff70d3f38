"""`bench-backend --mode fast-latency`'s table, JSON and plot (`backend.harness.fast_latency` measures)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out_dir: Path, results: dict[str, Any]) -> None:
    (out_dir / "fast_latency.json").write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    task = results.get("task", "classification")
    print(f"\nfast-path latency ({task}): {results['model']}, {results.get('dataset')}, fast worker on "
          f"{' '.join(results['fast_worker_queues'])}, {results['machine']['cpus']} CPUs")
    if results.get("texts"):
        print(f"  {results['texts']['distinct']} distinct texts; {results['texts']['note']}")
    if results["pools"]:
        print(f"{'tasks':>7}{'n':>4}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'train on':>9}{'queue':>7}"
              f"{'fetch':>7}{'fit':>7}{'score':>7}{'save':>7}{'push':>7}{'serve':>7}{'load':>12}")
        for n_tasks, p in results["pools"].items():
            lat, st = p["latency_s"], p["stages_p50_s"]
            on = sum(s["training_running"] for s in p["samples"])
            print(f"{n_tasks:>7}{lat['n']:>4}{lat['p50']:>8.2f}{lat['p95']:>8.2f}{lat['max']:>8.2f}{on:>9}"
                  f"{p['queue_wait_p50_s']:>7.2f}{st.get('fetch_labels', 0):>7.2f}{st.get('fit', 0):>7.2f}"
                  f"{st.get('score', 0):>7.2f}{st.get('save', 0):>7.2f}{st.get('push_and_switch', 0):>7.2f}"
                  f"{p.get('ls_serves_p50_s') or 0:>7.2f}"
                  f"{'/'.join(str(x) for x in p['load_start'][:1] + p['load_end'][:1]):>12}")
            if "spans" in p:
                sp = p["spans"]
                served = sum(s.get("next_spans", 0) > 0 for s in p["samples"])
                print(f"        LS predictions of {sp['version']}: {sp['held']} of {sp['pushed']} pushed, "
                      f"{sp['with_spans']} with >= 1 span ({sp['spans']} spans, {sp['spans_outside_text']} not "
                      f"matching their text); /next served a task with spans after {served} of {lat['n']} annotations")
            for key, f in (p.get("features") or {}).items():
                print(f"        features {key}: {f['disk_bytes'] / 1e6:.1f} MB on disk in {f['shards']} shards, "
                      f"{f['disk_bytes_per_sentence'] / 1e3:.1f} kB per sentence")
            if "held" in p:
                h = p["held"]
                print(f"        LS predictions held after {h['fast_updates']} fast updates + {h['full_iterations']} "
                      f"full iterations: {h['predictions_held']} ({h['ratio_to_pool']} x pool) {h['versions_held']}")
    if "compute" in results and results["compute"].get("task") == "ner":
        _print_tagging_compute(results["compute"])
    elif "compute" in results:
        c = results["compute"]
        print(f"\ncompute alone, {c['pool']} tasks x {c['dim']} float16, {c['labeled']} labels: "
              f"{c['compute_s']:.3f} s (fit + score + top-K); with the CV estimate "
              f"{c['compute_first_fit_s']:.3f} s; writing the version {c['median_seconds']['save']:.3f} s; "
              f"stages {c['median_seconds']} (load {c['load_avg']})")


def _print_tagging_compute(c: dict[str, Any]) -> None:
    med = c["median_seconds"]
    print(f"\ncompute alone (tagging), {c['pool']} sentences ({c['words']} words x {c['dim']} float16), "
          f"{c['labeled']} labeled sentences ({c['labeled_source']}), median of {c['repeats']}, "
          f"{c['torch_threads']} torch threads, load {c['load_avg']}:")
    print("  " + "  ".join(f"{k} {med[k]:.3f} s" for k in ("fit", "score", "order", "decode_top_k", "save"))
          + f"  = {c['compute_s']:.3f} s" + (f"  (fit on the synthetic teacher's tags {med['fit_synthetic']:.3f} s)"
                                             if "fit_synthetic" in med else ""))
    if "compute_ups_s" in c:
        print("  the next update, UPS (" + f"{c['rescored_ups']} of {c['pool']} sentences re-scored): "
              + "  ".join(f"{k} {med[k + '_ups']:.3f} s" for k in ("fit", "score", "order", "decode_top_k", "save"))
              + f"  = {c['compute_ups_s']:.3f} s")
    print(f"{'sentences':>11}{'MB in memory':>14}{'kB/sentence':>13}{'MB on disk':>12}{'shards':>8}"
          f"{'RSS +MB':>9}{'peak +MB':>10}{'load s':>8}")
    for size, m in sorted(c["memory"].items(), key=lambda kv: int(kv[0])):
        peak = m.get("peak_rss_delta_bytes")
        print(f"{int(size):>11}{m['nbytes'] / 1e6:>14.1f}{m['bytes_per_sentence'] / 1e3:>13.2f}"
              f"{m['disk_bytes'] / 1e6:>12.1f}{m['shards']:>8}{m['rss_delta_bytes'] / 1e6:>9.1f}"
              f"{(peak or 0) / 1e6:>10.1f}{m['load_s']:>8.2f}")


def plot(out_dir: Path, results: dict[str, Any]) -> None:
    if not results["pools"]:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ner = results.get("task") == "ner"
    fig, axes = plt.subplots(1, 2 if ner else 1, figsize=(11 if ner else 6, 3.8 if ner else 3.5), squeeze=False)
    ax = axes[0][0]
    for n_tasks, p in results["pools"].items():
        lat = [s["latency_s"] for s in p["samples"]]
        ax.plot(range(1, len(lat) + 1), lat, marker="o", ms=3, label=f"{n_tasks} {'sentences' if ner else 'tasks'}")
    ax.axhline(2, ls="--", c="grey", lw=0.8)
    ax.axhline(5, ls=":", c="grey", lw=0.8)
    ax.set_xlabel("annotation")
    ax.set_ylabel("annotation -> LS serves new order (s)")
    ax.legend()
    if ner:  # where the time goes: p50 of each stage per pool
        ax = axes[0][1]
        stages = ("queue", "fetch_labels", "encode", "fit", "score", "save", "push_and_switch", "ls_serves")
        names = list(results["pools"])
        left = [0.0] * len(names)
        for stage in stages:
            widths = [float(p["queue_wait_p50_s"] if stage == "queue"
                            else (p.get("ls_serves_p50_s") or 0.0) if stage == "ls_serves"
                            else p["stages_p50_s"].get(stage, 0.0))
                      for p in results["pools"].values()]
            ax.barh(names, widths, left=left, label=stage)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_xlabel("p50 seconds per stage")
        ax.set_ylabel("sentences")
        ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out_dir / "fast_latency.png", dpi=110)
    plt.close(fig)
