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

``--task ner`` (a tagging corpus, default wnut16) measures tagging's fast path the same way: a
span-labeling project over the corpus's entity types, sentences as Label Studio holds them (words
joined by spaces) annotated with their gold spans; sentences beyond the corpus's distinct ones
repeat them with a suffix word `` #<k>`` (tag O), so every task is a distinct text. After the
measured annotations the predictions Label Studio holds for the serving fast version are checked
for spans (``labels`` regions inside the text), and the per-word features on disk are measured.
The compute alone is then the token head's (`tagging_compute_benchmark`): fit, score every
sentence, order, decode the top K, write the version, plus the feature set's memory and disk size.
"""
from __future__ import annotations

import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.harness.common import (
    BackendHttp,
    backend_env,
    bench_model,
    load_avg,
    span_count,
    stats,
)
from backend.harness.config import DEFAULT_DATASET, BackendBenchConfig, FastLatencyConfig
from backend.harness.fast_compute import compute_benchmark, tagging_compute_benchmark
from backend.harness.fast_latency_checks import features_on_disk, rss_of, spans_check
from backend.harness.fast_latency_corpus import TASKS, BenchCorpus, Task, bench_corpus
from backend.harness.fast_latency_report import plot, print_table, write_results
from backend.harness.label_studio import LabelStudioServer
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import EVERY_QUEUE, BackendProcesses, RedisServer, stopped_on_sigterm

DEFAULT_OUTPUT = "docs/benchmarks/fast-latency"
DEFAULT_NER_OUTPUT = "docs/benchmarks/fast-latency-ner"
DEFAULT_NER_DATASET = "wnut16"
POLL_S = 0.02
class FastProbe:
    """Drives one project as an annotator and times the fast path."""

    def __init__(self, ls: LabelStudioAdmin, backend: BackendHttp, pid: int, ml_id: int,
                 gold: dict[int, list[dict[str, Any]]]) -> None:
        self.ls, self.backend, self.pid, self.ml_id, self.gold = ls, backend, pid, ml_id, gold
        self.labeled = 0
        self.trainings_started = 0

    def fast(self) -> dict[str, Any]:
        return self.backend.fast_status(self.pid)

    def annotate(self, task_id: int) -> None:
        self.ls.create_annotation(task_id, self.gold[task_id])
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
        and /next serves a task with its prediction. Returns the sample and the next served task.
        When a later fast version (also holding the label) replaced the one published for it before
        LS was seen serving it, the later one counts (``version``; ``published``: the first)."""
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
        serving, nxt, published = None, None, version
        while time.monotonic() < deadline:  # ... and Label Studio serves from it (or a later one holding it)
            serving = self.ls.get_project(self.pid)["model_version"]
            if serving != version and str(serving).startswith("fast-"):
                later = self.fast()
                if later.get("version") == serving and int(later.get("labeled") or 0) >= self.labeled:
                    version = serving
            if serving == version:
                nxt = self.ls.next_task(self.pid)
                if nxt is not None and any(p.get("model_version") == version for p in nxt.get("predictions") or []):
                    break
            time.sleep(POLL_S)
        else:
            seen = None if nxt is None else {"id": nxt.get("id"), "predictions": [
                (p.get("model_version"), p.get("score")) for p in nxt.get("predictions") or []]}
            raise TimeoutError(f"LS did not serve {version} after {timeout}s: its model_version is {serving}, "
                               f"/next served {seen}; the backend says {self.fast()}")
        latency = time.perf_counter() - t0
        served_spans = next((span_count(p.get("result") or []) for p in nxt.get("predictions") or []
                             if p.get("model_version") == version), 0)
        seconds = status.get("seconds") or {}
        job_start = float(status.get("at", 0)) - float(seconds.get("total", 0))  # ~ wall time the job began
        return {"latency_s": round(latency, 3), "post_annotation_s": round(post_s, 3),
                "seen_published_s": round(waited.at - t0, 3), "queue_wait_s": round(job_start - t0_wall, 3),
                "stages": seconds, "version": version, "published": published, "labeled": status.get("labeled"),
                "pushed": status.get("pushed"), "reason": status.get("reason"), "order": status.get("order"),
                "training_running": training, "load": load_avg()[0], "next_spans": served_spans, "next_task": nxt}


def measure_pool(args: FastLatencyConfig, ls: LabelStudioAdmin, backend: BackendHttp, corpus: BenchCorpus,
                 n_tasks: int, model_dir: Path | None = None, workers: dict[str, int] | None = None) -> dict[str, Any]:
    """One project of `n_tasks` tasks: import, seed labels, the features and the first fast
    version, then the measured annotations (and on the held pool, the predictions LS holds).
    Tagging also checks the serving version's predictions for spans and measures the per-word
    features under `model_dir`; `workers` (name -> pid) have their RSS recorded."""
    out: dict[str, Any] = {"tasks": n_tasks, "load_start": load_avg(), "workers_rss_start": rss_of(workers)}
    pid = ls.create_project(f"bench-fast-{corpus.task}-{n_tasks}-{secrets.token_hex(3)}", corpus.label_config)["id"]
    texts, results, keys = corpus.tasks(n_tasks)
    data = [{"text": text} for text in texts]
    t = time.perf_counter()
    ids: list[int] = []
    for start in range(0, n_tasks, 10_000):
        ids += ls.import_tasks(pid, data[start:start + 10_000])
    out["import_s"] = round(time.perf_counter() - t, 2)
    gold = dict(zip(ids, results, strict=True))
    ml = ls.connect_ml_backend(pid, backend.url, "feasible-al")  # LS adds the /webhook itself
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    probe = FastProbe(ls, backend, pid, ml.id, gold)

    # seed labels, then the pool features (chunk jobs) and the first fast version
    t = time.perf_counter()
    for i in corpus.seed(keys):
        probe.annotate(ids[i])
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
    out.update(summary(samples))
    out["fast_updates"] = probe.fast().get("seq")
    if corpus.task == "ner":
        out["spans"] = spans_check(ls, pid, probe.fast(), dict(zip(ids, texts, strict=True)))
        if model_dir is not None:
            out["features"] = features_on_disk(model_dir, pid, n_tasks)
    if held_check:
        out["held"] = predictions_held(args, probe, ls, pid, n_tasks)
    out["workers_rss_end"] = rss_of(workers)
    out["load_end"] = load_avg()
    return out


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles of the measured annotations and the p50 of each stage."""
    if not samples:
        return {"latency_s": stats([]), "latency_s_training_running": stats([]), "stages_p50_s": {},
                "queue_wait_p50_s": None, "ls_serves_p50_s": None, "samples": samples}

    def p50(values: list[float], digits: int) -> float:
        return round(statistics.median(values), digits)

    return {
        "latency_s": stats([s["latency_s"] for s in samples]),
        "latency_s_training_running": stats([s["latency_s"] for s in samples if s["training_running"]]),
        "stages_p50_s": {k: p50([float(s["stages"].get(k, 0)) for s in samples], 4) for k in samples[0]["stages"]},
        "queue_wait_p50_s": p50([s["queue_wait_s"] for s in samples], 3),
        # from the backend saying it published to LS's project to /next seen serving it (polled)
        "ls_serves_p50_s": p50([s["latency_s"] - s["seen_published_s"] for s in samples], 3),
        "samples": samples}


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


def task_dataset(config: BackendBenchConfig, task: Task) -> str:
    """The corpus of `task`: --dataset, except that ner replaces the classification default by wnut16."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return DEFAULT_NER_DATASET if task == "ner" and config.dataset == DEFAULT_DATASET else config.dataset


def run_fast_latency(config: BackendBenchConfig, task: Task = "classification") -> int:
    """Run the fast-path latency benchmark; print its table, write JSON (+ PNG) under --output-dir."""
    out_dir = Path(config.output_dir or (DEFAULT_NER_OUTPUT if task == "ner" else DEFAULT_OUTPUT))
    with stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="bench-fast-") as tmp, \
            RedisServer() as redis_srv:
        ls_srv = LabelStudioServer(data_dir=Path(tmp) / "ls") if config.fast.pool_sizes else None
        if ls_srv is not None:
            print("starting Label Studio...", file=sys.stderr)
            ls_srv.start()
        try:
            results = measure(config, ls_srv, redis_srv, Path(tmp), out_dir, task)
        finally:
            if ls_srv is not None:
                ls_srv.stop()
    print_table(results)
    print(f"\nwrote {out_dir / 'fast_latency.json'}")
    return 0


def measure(config: BackendBenchConfig, ls_srv: Any, redis_srv: Any, root: Path, out_dir: Path,
            task: Task = "classification") -> dict[str, Any]:
    """Everything but starting Label Studio and Redis (`ls_srv`: ``.url``/``.token``; `redis_srv`:
    ``.url``): the compute alone, then the backend (two workers) and each pool size."""
    fast = config.fast
    dataset = task_dataset(config, task)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "task": task, "model": bench_model(config.model), "dataset": dataset,
        "fast_worker_queues": list(fast.fast_worker_queues), "torch_threads": config.torch_threads,
        "fast_top_k": fast.fast_top_k or "default (FAST_TOP_K)", "concurrent_training": fast.concurrent_training,
        "think_s": fast.think_s,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": load_avg()},
        "pools": {}}
    if fast.compute_pool:
        print(f"fast-path compute on {fast.compute_pool} synthetic {'sentences' if task == 'ner' else 'tasks'}...",
              file=sys.stderr)
        if task == "ner":
            results["compute"] = tagging_compute_benchmark(
                fast.compute_pool, fast.compute_labeled, top_k=fast.fast_top_k or 32,
                memory_sizes=tuple(sorted(set(fast.pool_sizes) - {fast.compute_pool})),
                torch_threads=config.torch_threads, labeled_from=(dataset, bench_model(config.model)))
        else:
            results["compute"] = compute_benchmark(fast.compute_pool, fast.compute_labeled,
                                                   top_k=fast.fast_top_k or 32)
        write_results(out_dir, results)
    if fast.pool_sizes:
        corpus = bench_corpus(task, dataset, min(max(fast.pool_sizes), fast.max_texts))
        results["texts"] = {"distinct": len(corpus.texts), "note": corpus.note}
        if task == "ner":
            results["texts"]["with_entities"] = sum(k == "entity" for k in corpus.keys)
        env = backend_env(config, ls_srv.url, ls_srv.token, redis_srv.url, root)
        env.update({"FAST_PATH": "on", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": ""})
        if fast.fast_top_k:
            env["FAST_TOP_K"] = str(fast.fast_top_k)
        workers = (EVERY_QUEUE, tuple(fast.fast_worker_queues))
        with BackendProcesses(env, root / "logs", startup_timeout=120, workers=workers) as stack:
            ls = LabelStudioAdmin(ls_srv.url, ls_srv.token, timeout=300)
            # the processes it started: gunicorn, then the workers in `workers` order (their RSS is
            # recorded per pool: jobs run in the worker process, which caches the pool's features)
            procs = getattr(stack, "_procs", [])[1:]
            pids = {name: proc.pid for name, proc in zip(("worker_all", "worker_fast"), procs)}
            try:
                for n_tasks in fast.pool_sizes:
                    print(f"pool of {n_tasks} tasks...", file=sys.stderr)
                    results["pools"][str(n_tasks)] = measure_pool(fast, ls, BackendHttp(stack.url), corpus, n_tasks,
                                                                  Path(env["MODEL_DIR"]), pids)
                    write_results(out_dir, results)
            except Exception:
                print(stack.log_tail(4000), file=sys.stderr)
                raise
    results["machine"]["load_end"] = load_avg()
    write_results(out_dir, results)
    plot(out_dir, results)
    return results


