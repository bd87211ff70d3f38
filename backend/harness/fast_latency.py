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

import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from backend.harness.common import (
    BackendHttp,
    backend_env,
    bench_model,
    choice_result,
    label_config,
    load_avg,
    load_examples,
    load_tagged,
    ner_label_config,
    process_rss,
    span_count,
    stats,
)
from backend.harness.config import DEFAULT_DATASET, BackendBenchConfig, FastLatencyConfig
from backend.harness.fast_compute import compute_benchmark, tagging_compute_benchmark
from backend.harness.label_studio import LabelStudioServer
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import EVERY_QUEUE, BackendProcesses, RedisServer, stopped_on_sigterm

DEFAULT_OUTPUT = "docs/benchmarks/fast-latency"
DEFAULT_NER_OUTPUT = "docs/benchmarks/fast-latency-ner"
DEFAULT_NER_DATASET = "wnut16"
SEED_PER_CLASS = 5  # labels per class before the measured annotations (CV needs >= 2 per class)
SEED_SENTENCES = 10  # tagging: sentences with at least one entity labeled before the measured annotations
POLL_S = 0.02
Task = Literal["classification", "ner"]
TASKS: tuple[Task, ...] = ("classification", "ner")


@dataclass(frozen=True)
class BenchCorpus:
    """The texts a project is imported from and the gold annotation of each (a Label Studio
    result), by the key that picks the seed labels: the class (classification) or whether the
    sentence holds an entity (ner)."""

    task: Task
    label_config: str
    texts: list[str]
    results: list[list[dict[str, Any]]]
    keys: list[str]
    note: str

    def tasks(self, n: int) -> tuple[list[str], list[list[dict[str, Any]]], list[str]]:
        """(texts, gold results, keys) of `n` tasks: the corpus cycled; tagging's repeats get a
        suffix word `` #<k>`` (k = the repeat; the gold spans keep their offsets), classification's
        repeat verbatim, as before."""
        distinct = len(self.texts)
        texts = [self.texts[i % distinct] + (f" #{i // distinct}" if self.task == "ner" and i >= distinct else "")
                 for i in range(n)]
        return texts, [self.results[i % distinct] for i in range(n)], [self.keys[i % distinct] for i in range(n)]

    def seed(self, keys: list[str]) -> list[int]:
        """Positions of the seed labels: `SEED_PER_CLASS` per class, or the first `SEED_SENTENCES`
        sentences with an entity."""
        wanted = ({k: SEED_PER_CLASS for k in set(self.keys)} if self.task == "classification"
                  else {"entity": SEED_SENTENCES})
        picked, count = [], dict.fromkeys(wanted, 0)
        for i, key in enumerate(keys):
            if key in wanted and count[key] < wanted[key]:
                picked.append(i)
                count[key] += 1
            if count == wanted:
                break
        return picked


def bench_corpus(task: Task, spec: str, n: int) -> BenchCorpus:
    """Up to `n` distinct texts of `spec` with their gold annotations, as a project of `task`."""
    if task == "classification":
        labels, examples = load_examples(spec, n)
        return BenchCorpus(task, label_config(labels), [e.text for e in examples],
                           [choice_result(e.labels[0]) for e in examples], [e.labels[0] for e in examples],
                           "tasks beyond the distinct texts repeat them (same order, same gold labels)")
    from backend.labeling import gold_tagging_results, parse_label_config

    types, sentences = load_tagged(spec, n)
    xml = ner_label_config(types)
    config = parse_label_config(xml)
    texts, results = [], []
    for sentence in sentences:
        text, regions = gold_tagging_results(sentence.words, sentence.tags, config)
        texts.append(text)
        results.append(regions)
    return BenchCorpus(task, xml, texts, results, ["entity" if r else "none" for r in results],
                       f"sentences beyond the {len(texts)} distinct ones repeat them with a suffix word ' #<k>' "
                       "(k = the repeat, tag O): every task is a distinct text, with the same gold spans")


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
    out: dict[str, Any] = {"tasks": n_tasks, "load_start": load_avg(), "workers_rss_start": _rss_of(workers)}
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
    lat = [s["latency_s"] for s in samples]
    out["latency_s"] = stats(lat)
    out["latency_s_training_running"] = stats([s["latency_s"] for s in samples if s["training_running"]])
    out["stages_p50_s"] = {k: round(statistics.median([float(s["stages"].get(k, 0)) for s in samples]), 4)
                           for k in samples[0]["stages"]} if samples else {}
    out["queue_wait_p50_s"] = round(statistics.median([s["queue_wait_s"] for s in samples]), 3) if samples else None
    out["samples"] = samples
    out["fast_updates"] = probe.fast().get("seq")
    if corpus.task == "ner":
        out["spans"] = spans_check(ls, pid, probe.fast(), dict(zip(ids, texts, strict=True)))
        if model_dir is not None:
            out["features"] = features_on_disk(model_dir, pid, n_tasks)
    if held_check:
        out["held"] = predictions_held(args, probe, ls, pid, n_tasks)
    out["workers_rss_end"] = _rss_of(workers)
    out["load_end"] = load_avg()
    return out


def _rss_of(workers: dict[str, int] | None) -> dict[str, int | None]:
    return {name: process_rss(pid) for name, pid in (workers or {}).items()}


def spans_check(ls: LabelStudioAdmin, pid: int, status: dict[str, Any], text_of: dict[int, str],
                settle_s: float = 30.0) -> dict[str, Any]:
    """The predictions LS holds for the serving fast version (`status`): how many, how many carry
    at least one span (a ``labels`` region), and whether each span is inside its task's text (its
    ``text`` is the text's slice at ``start:end``). Waits up to `settle_s` for the predictions
    created after the switch (``pushed`` in all)."""
    version, pushed = status.get("version"), int(status.get("pushed") or 0)
    deadline = time.monotonic() + settle_s
    while True:
        mine = [p for p in _predictions(ls, pid) if p.get("model_version") == version]
        if len(mine) >= pushed or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    spans = [span_count(p.get("result") or []) for p in mine]
    bad = 0
    for p in mine:
        text = text_of.get(int(p["task"]), "")
        for r in p.get("result") or []:
            value = r.get("value") or {}
            if r.get("type") == "labels" and text[value.get("start", 0):value.get("end", 0)] != value.get("text"):
                bad += 1
    return {"version": version, "pushed": pushed, "held": len(mine), "with_spans": sum(n > 0 for n in spans),
            "spans": sum(spans), "spans_outside_text": bad}


def _predictions(ls: LabelStudioAdmin, pid: int) -> list[dict[str, Any]]:
    """Every prediction of project `pid` (``GET /api/predictions/?project=``)."""
    what = f"list the predictions of project {pid}"
    payload = ls._json(ls._raw(what, "GET", "api/predictions/", params={"project": int(pid)}, timeout=120), what)
    items = payload.get("results", []) if isinstance(payload, dict) else payload
    return [p for p in items if isinstance(p, dict)]


def features_on_disk(model_dir: Path, pid: int, n_tasks: int) -> dict[str, Any]:
    """The project's per-word feature shards (`FeatureStore`'s ``words-`` set): bytes on disk."""
    from backend.service.features import features_root

    out: dict[str, Any] = {}
    root = features_root(model_dir, pid)
    for directory in sorted(root.glob("words-*")) if root.is_dir() else []:
        shards = list(directory.glob("shard-*.npz"))
        size = sum(p.stat().st_size for p in shards)
        out[directory.name] = {"shards": len(shards), "disk_bytes": size,
                               "disk_bytes_per_sentence": round(size / max(n_tasks, 1), 1)}
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
        _write(out_dir, results)
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
    task = results.get("task", "classification")
    print(f"\nfast-path latency ({task}): {results['model']}, {results.get('dataset')}, fast worker on "
          f"{' '.join(results['fast_worker_queues'])}, {results['machine']['cpus']} CPUs")
    if results.get("texts"):
        print(f"  {results['texts']['distinct']} distinct texts; {results['texts']['note']}")
    if results["pools"]:
        print(f"{'tasks':>7}{'n':>4}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'train on':>9}{'queue':>7}"
              f"{'fetch':>7}{'fit':>7}{'score':>7}{'save':>7}{'push':>7}{'load':>12}")
        for n_tasks, p in results["pools"].items():
            lat, st = p["latency_s"], p["stages_p50_s"]
            on = sum(s["training_running"] for s in p["samples"])
            print(f"{n_tasks:>7}{lat['n']:>4}{lat['p50']:>8.2f}{lat['p95']:>8.2f}{lat['max']:>8.2f}{on:>9}"
                  f"{p['queue_wait_p50_s']:>7.2f}{st.get('fetch_labels', 0):>7.2f}{st.get('fit', 0):>7.2f}"
                  f"{st.get('score', 0):>7.2f}{st.get('save', 0):>7.2f}{st.get('push_and_switch', 0):>7.2f}"
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
    print(f"{'sentences':>11}{'MB in memory':>14}{'kB/sentence':>13}{'MB on disk':>12}{'shards':>8}"
          f"{'RSS +MB':>9}{'peak +MB':>10}{'load s':>8}")
    for size, m in sorted(c["memory"].items(), key=lambda kv: int(kv[0])):
        peak = m.get("peak_rss_delta_bytes")
        print(f"{int(size):>11}{m['nbytes'] / 1e6:>14.1f}{m['bytes_per_sentence'] / 1e3:>13.2f}"
              f"{m['disk_bytes'] / 1e6:>12.1f}{m['shards']:>8}{m['rss_delta_bytes'] / 1e6:>9.1f}"
              f"{(peak or 0) / 1e6:>10.1f}{m['load_s']:>8.2f}")


def _plot(out_dir: Path, results: dict[str, Any]) -> None:
    if not results["pools"]:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ner = results.get("task") == "ner"
    fig, axes = plt.subplots(1, 2 if ner else 1, figsize=(11 if ner else 6, 3.5), squeeze=False)
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
        stages = ("queue", "fetch_labels", "encode", "fit", "score", "save", "push_and_switch")
        names = list(results["pools"])
        left = [0.0] * len(names)
        for stage in stages:
            widths = [float(p["queue_wait_p50_s"] if stage == "queue" else p["stages_p50_s"].get(stage, 0.0))
                      for p in results["pools"].values()]
            ax.barh(names, widths, left=left, label=stage)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_xlabel("p50 seconds per stage")
        ax.set_ylabel("sentences")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "fast_latency.png", dpi=110)
    plt.close(fig)
