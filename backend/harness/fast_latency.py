"""`feasible-al bench-backend --mode fast-latency`: the fast path's latency as an annotator sees it.

Same stack as `backend.harness.backend_bench` (private redis-server, real Label Studio, gunicorn) with two
RQ workers: one on every queue (it runs the full fine-tunes) and one on ``--fast-worker-queues``
(default ``fast scoring``). For each pool size a project is imported from a real corpus, the
packaged encoder's pool features are built, a full fine-tune is started (and restarted while the
annotations run), and each measured annotation goes:

    GET /next -> POST the annotation of the task it served (t0) -> LS project's model_version is a
    fast version that includes this annotation AND /next serves a task holding a prediction of it (t1)

``t1 - t0`` is the latency reported (p50/p95); the fast job's own stages (``fast_path.seconds`` in
``GET /projects/<id>``) are recorded per annotation, plus the queue wait (job start - t0). On the
pool named by ``--held-pool`` the run goes on to ``--fast-updates`` fast updates and
``--full-iterations`` full iterations, then counts the predictions LS holds. Separately, the fast
path's compute (fit + score + top-K + save) on synthetic float16 features of ``--compute-pool``
tasks (`backend.harness.fast_compute`).
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.engine.types import ClassificationExample
from backend.harness.common import (
    BackendHttp,
    backend_env,
    bench_model,
    choice_result,
    label_config,
    load_avg,
    load_examples,
    stats,
)
from backend.harness.config import BackendBenchConfig, FastLatencyConfig
from backend.harness.fast_compute import compute_benchmark
from backend.harness.label_studio import LabelStudioServer
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import EVERY_QUEUE, BackendProcesses, RedisServer, stopped_on_sigterm

DEFAULT_OUTPUT = "docs/benchmarks/fast-latency"
SEED_PER_CLASS = 5  # labels per class before the measured annotations (CV needs >= 2 per class)
POLL_S = 0.02


class FastProbe:
    """Drives one project as an annotator and times the fast path."""

    def __init__(self, ls: LabelStudioAdmin, backend: BackendHttp, pid: int, ml_id: int,
                 gold: dict[int, str]) -> None:
        self.ls, self.backend, self.pid, self.ml_id, self.gold = ls, backend, pid, ml_id, gold
        self.labeled = 0
        self.trainings_started = 0

    def fast(self) -> dict[str, Any]:
        return self.backend.fast_status(self.pid)

    def annotate(self, task_id: int) -> None:
        self.ls.create_annotation(task_id, choice_result(self.gold[task_id]))
        self.labeled += 1

    def wait_published(self, min_labeled: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.fast()
            if s.get("status") == "published" and int(s.get("labeled", 0)) >= min_labeled:
                return s
            if s.get("status") == "failed":
                raise RuntimeError(f"fast update failed: {s.get('message')}")
            time.sleep(0.1)
        raise TimeoutError(f"no fast version with {min_labeled} labels after {timeout}s: {self.fast()}")

    def training_busy(self) -> bool:
        s = self.backend.state(self.pid)
        return bool(s.get("running_job") or s.get("queued_job"))

    def keep_training(self, limit: int) -> bool:
        """Start a full fine-tune when none runs (up to `limit` in all); True when one runs."""
        if self.training_busy():
            return True
        if self.trainings_started >= limit:
            return False
        self.ls.start_training(self.ml_id)
        self.trainings_started += 1
        self.backend.wait_running(self.pid, timeout=120)
        return True

    def measure_one(self, served: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Annotate `served`; time until LS's model_version is a fast version holding this label
        and /next serves a task with its prediction. Returns the sample and the next served task."""
        before = self.fast()
        training = self.training_busy()
        t0_wall, t0 = time.time(), time.perf_counter()
        self.annotate(int(served["id"]))
        post_s = time.perf_counter() - t0
        deadline = time.monotonic() + timeout
        # the backend says it published (cheap, Redis) ...
        waited = self.backend.wait_fast_update(self.pid, before, self.labeled, timeout, poll=POLL_S)
        if not waited.published:
            raise TimeoutError(f"no fast version after {timeout}s: {waited.status}")
        status, version = waited.status, waited.status["version"]
        while time.monotonic() < deadline:  # ... and Label Studio serves from it
            if self.ls.get_project(self.pid)["model_version"] == version:
                nxt = self.ls.next_task(self.pid)
                if nxt is not None and any(p.get("model_version") == version for p in nxt.get("predictions") or []):
                    break
            time.sleep(POLL_S)
        else:
            raise TimeoutError(f"LS did not serve {version} after {timeout}s")
        latency = time.perf_counter() - t0
        seconds = status.get("seconds") or {}
        job_start = float(status.get("at", 0)) - float(seconds.get("total", 0))  # ~ wall time the job began
        return {"latency_s": round(latency, 3), "post_annotation_s": round(post_s, 3),
                "seen_published_s": round(waited.at - t0, 3), "queue_wait_s": round(job_start - t0_wall, 3),
                "stages": seconds, "labeled": status.get("labeled"), "pushed": status.get("pushed"),
                "reason": status.get("reason"), "training_running": training, "load": load_avg()[0],
                "next_task": nxt}


def measure_pool(args: FastLatencyConfig, ls: LabelStudioAdmin, backend: BackendHttp, labels: tuple[str, ...],
                 examples: list[ClassificationExample], n_tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": n_tasks, "load_start": load_avg()}
    pid = ls.create_project(f"bench-fast-{n_tasks}-{secrets.token_hex(3)}", label_config(labels))["id"]
    data = [{"text": examples[i % len(examples)].text} for i in range(n_tasks)]
    t = time.perf_counter()
    ids: list[int] = []
    for start in range(0, n_tasks, 10_000):
        ids += ls.import_tasks(pid, data[start:start + 10_000])
    out["import_s"] = round(time.perf_counter() - t, 2)
    gold = {tid: examples[i % len(examples)].labels[0] for i, tid in enumerate(ids)}
    ml = ls.connect_ml_backend(pid, backend.url, "feasible-al")  # LS adds the /webhook itself
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    probe = FastProbe(ls, backend, pid, ml.id, gold)

    # seed labels, then the pool features (chunk jobs) and the first fast version
    t = time.perf_counter()
    per_class: dict[str, int] = {}
    for tid in ids:
        if per_class.get(gold[tid], 0) < SEED_PER_CLASS:
            probe.annotate(tid)
            per_class[gold[tid]] = per_class.get(gold[tid], 0) + 1
        if len(per_class) == len(labels) and min(per_class.values()) >= SEED_PER_CLASS:
            break
    first = probe.wait_published(probe.labeled, timeout=args.features_timeout)
    out["features_and_first_version_s"] = round(time.perf_counter() - t, 2)
    out["seed_labels"] = probe.labeled
    out["first_version"] = {k: first.get(k) for k in ("version", "labeled", "scored", "pushed", "seconds")}

    held_check = n_tasks == args.held_pool
    n = max(args.annotations, args.fast_updates) if held_check else args.annotations
    train_limit = args.full_iterations if held_check else 1000
    if args.concurrent_training:
        probe.keep_training(train_limit)
    samples = []
    served = ls.next_task(pid)
    for i in range(n):
        if served is None:
            raise RuntimeError("/next served nothing")
        if args.concurrent_training:
            probe.keep_training(train_limit)
        time.sleep(args.think_s)  # the annotator reads the task /next served
        sample = probe.measure_one(served)
        served = sample.pop("next_task")
        samples.append(sample)
        print(f"  {n_tasks} tasks, annotation {i + 1}/{n}: {sample['latency_s']:.2f} s "
              f"(training {'on' if sample['training_running'] else 'off'}, load {sample['load']}) "
              f"stages {sample['stages']}", file=sys.stderr)
    lat = [s["latency_s"] for s in samples]
    out["latency_s"] = stats(lat)
    out["latency_s_training_running"] = stats([s["latency_s"] for s in samples if s["training_running"]])
    out["stages_p50_s"] = {k: round(statistics.median([float(s["stages"].get(k, 0)) for s in samples]), 4)
                           for k in samples[0]["stages"]} if samples else {}
    out["queue_wait_p50_s"] = round(statistics.median([s["queue_wait_s"] for s in samples]), 3) if samples else None
    out["samples"] = samples
    out["fast_updates"] = probe.fast().get("seq")
    if held_check:
        out["held"] = predictions_held(args, probe, ls, pid, n_tasks)
    out["load_end"] = load_avg()
    return out


def predictions_held(args: FastLatencyConfig, probe: FastProbe, ls: LabelStudioAdmin, pid: int,
                     n_tasks: int) -> dict[str, Any]:
    """Finish `--full-iterations` full iterations, let pruning settle, count LS's predictions."""
    deadline = time.monotonic() + args.features_timeout
    while time.monotonic() < deadline:
        state = probe.backend.state(pid)
        if not (state.get("running_job") or state.get("queued_job")):
            if int(state.get("iteration", 0)) >= args.full_iterations:
                break
            if probe.trainings_started < args.full_iterations + 2:
                task = ls.next_task(pid)
                if task is None:
                    raise RuntimeError(f"project {pid} has no unlabeled task left for another full iteration")
                probe.annotate(int(task["id"]))  # a new label, so the next iteration has work
                ls.start_training(probe.ml_id)
                probe.trainings_started += 1
                probe.backend.wait_running(pid, timeout=120)
        time.sleep(1)
    state = probe.backend.state(pid)
    last = state.get("last_iteration") or {}
    settle = time.monotonic() + 120
    held: dict[str, int] = {}
    while time.monotonic() < settle:  # pruning runs off the path, on the scoring queue
        held = ls.model_versions(pid)
        if len(held) <= 2:
            break
        time.sleep(2)
    total = sum(held.values())
    return {"fast_updates": probe.fast().get("seq"), "full_iterations": state.get("iteration"),
            "last_iteration": {k: last.get(k) for k in ("iteration", "served", "full_rescore", "pushed", "labeled",
                                                        "rescored_share")},
            "versions_held": held,
            "predictions_held": total, "pool": n_tasks - probe.labeled, "ratio_to_pool": round(total / n_tasks, 4)}


def run_fast_latency(config: BackendBenchConfig) -> int:
    """Run the fast-path latency benchmark; print its table, write JSON (+ PNG) under --output-dir."""
    out_dir = Path(config.output_dir or DEFAULT_OUTPUT)
    with stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="bench-fast-") as tmp, \
            RedisServer() as redis_srv:
        ls_srv = LabelStudioServer(data_dir=Path(tmp) / "ls") if config.fast.pool_sizes else None
        if ls_srv is not None:
            print("starting Label Studio...", file=sys.stderr)
            ls_srv.start()
        try:
            results = measure(config, ls_srv, redis_srv, Path(tmp), out_dir)
        finally:
            if ls_srv is not None:
                ls_srv.stop()
    print_table(results)
    print(f"\nwrote {out_dir / 'fast_latency.json'}")
    return 0


def measure(config: BackendBenchConfig, ls_srv: Any, redis_srv: Any, root: Path, out_dir: Path) -> dict[str, Any]:
    """Everything but starting Label Studio and Redis (`ls_srv`: ``.url``/``.token``; `redis_srv`:
    ``.url``): the compute alone, then the backend (two workers) and each pool size."""
    fast = config.fast
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "model": bench_model(config.model), "dataset": config.dataset,
        "fast_worker_queues": list(fast.fast_worker_queues), "torch_threads": config.torch_threads,
        "fast_top_k": fast.fast_top_k or "default (FAST_TOP_K)", "concurrent_training": fast.concurrent_training,
        "think_s": fast.think_s,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": load_avg()},
        "pools": {}}
    if fast.compute_pool:
        print(f"fast-path compute on {fast.compute_pool} synthetic tasks...", file=sys.stderr)
        results["compute"] = compute_benchmark(fast.compute_pool, fast.compute_labeled, top_k=fast.fast_top_k or 32)
    if fast.pool_sizes:
        labels, examples = load_examples(config.dataset, min(max(fast.pool_sizes), fast.max_texts))
        results["texts"] = {"distinct": len(examples),
                            "note": "tasks beyond the distinct texts repeat them (same order, same gold labels)"}
        env = backend_env(config, ls_srv.url, ls_srv.token, redis_srv.url, root)
        env.update({"FAST_PATH": "on", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": ""})
        if fast.fast_top_k:
            env["FAST_TOP_K"] = str(fast.fast_top_k)
        workers = (EVERY_QUEUE, tuple(fast.fast_worker_queues))
        with BackendProcesses(env, root / "logs", startup_timeout=120, workers=workers) as stack:
            ls = LabelStudioAdmin(ls_srv.url, ls_srv.token, timeout=300)
            try:
                for n_tasks in fast.pool_sizes:
                    print(f"pool of {n_tasks} tasks...", file=sys.stderr)
                    results["pools"][str(n_tasks)] = measure_pool(fast, ls, BackendHttp(stack.url), labels,
                                                                  examples, n_tasks)
                    _write(out_dir, results)
            except Exception:
                print(stack.log_tail(4000), file=sys.stderr)
                raise
    results["machine"]["load_end"] = load_avg()
    _write(out_dir, results)
    _plot(out_dir, results)
    return results


def _write(out_dir: Path, results: dict[str, Any]) -> None:
    (out_dir / "fast_latency.json").write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    print(f"\nfast-path latency: {results['model']}, {results.get('dataset')}, fast worker on "
          f"{' '.join(results['fast_worker_queues'])}, {results['machine']['cpus']} CPUs")
    if results["pools"]:
        print(f"{'tasks':>7}{'n':>4}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'train on':>9}{'queue':>7}"
              f"{'fetch':>7}{'fit':>7}{'score':>7}{'push':>7}{'load':>12}")
        for n_tasks, p in results["pools"].items():
            lat, st = p["latency_s"], p["stages_p50_s"]
            on = sum(s["training_running"] for s in p["samples"])
            print(f"{n_tasks:>7}{lat['n']:>4}{lat['p50']:>8.2f}{lat['p95']:>8.2f}{lat['max']:>8.2f}{on:>9}"
                  f"{p['queue_wait_p50_s']:>7.2f}{st.get('fetch_labels', 0):>7.2f}{st.get('fit', 0):>7.2f}"
                  f"{st.get('score', 0):>7.2f}{st.get('push_and_switch', 0):>7.2f}"
                  f"{'/'.join(str(x) for x in p['load_start'][:1] + p['load_end'][:1]):>12}")
            if "held" in p:
                h = p["held"]
                print(f"        LS predictions held after {h['fast_updates']} fast updates + {h['full_iterations']} "
                      f"full iterations: {h['predictions_held']} ({h['ratio_to_pool']} x pool) {h['versions_held']}")
    if "compute" in results:
        c = results["compute"]
        print(f"\ncompute alone, {c['pool']} tasks x {c['dim']} float16, {c['labeled']} labels: "
              f"{c['compute_s']:.3f} s (fit + score + top-K); with the CV estimate "
              f"{c['compute_first_fit_s']:.3f} s; writing the version {c['median_seconds']['save']:.3f} s; "
              f"stages {c['median_seconds']} (load {c['load_avg']})")


def _plot(out_dir: Path, results: dict[str, Any]) -> None:
    if not results["pools"]:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for n_tasks, p in results["pools"].items():
        lat = [s["latency_s"] for s in p["samples"]]
        ax.plot(range(1, len(lat) + 1), lat, marker="o", ms=3, label=f"{n_tasks} tasks")
    ax.axhline(2, ls="--", c="grey", lw=0.8)
    ax.axhline(5, ls=":", c="grey", lw=0.8)
    ax.set_xlabel("annotation")
    ax.set_ylabel("annotation -> LS serves new order (s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "fast_latency.png", dpi=110)
    plt.close(fig)
