"""`feasible-al bench-backend --mode label-efficiency`: the service loop measured against bench-labels.

One run per corpus x seed x deployment, each on a fresh backend (gunicorn and the deployment's RQ
workers, `backend.harness.processes.DEPLOYMENTS`: ``readme`` = one worker on every queue and one on
the fast queue alone, the README's quick start; ``single`` = one worker on every queue) beside a
private Redis and a real Label Studio:

1. the corpus's pool and test split exactly as `bench-labels` cuts them
   (`backend.experiments.label_efficiency.load_corpus`); the pool becomes a Label Studio project (a
   single-choice config over the corpus's labels); the test split never enters Label Studio;
2. the backend is connected with its default settings: only ``ACQUISITION_MODEL`` is named (and
   ``SEED`` when not 0; flags given on the command line are passed too and recorded). Label Studio
   creates the ``/webhook`` itself, so every event reaches the backend as in production; the
   project samples by uncertainty;
3. one annotator: ``GET /next``, save the gold label of the task it served, then wait until the fast
   update that annotation triggered has published (at most ``--update-timeout`` s: a miss), like
   someone reading the next task; the wait is `BackendHttp.wait_fast_update`, the fast-latency
   bench's test;
4. at each budget the serving model labels the test split through ``POST /predict`` (the call Label
   Studio makes; texts the pool does not hold are encoded and scored on demand by a fast version,
   or run through a fine-tuned checkpoint), and its accuracy, version and model are recorded.

Each run is written to ``<output-dir>/runs/<corpus>-<deployment>-seed<k>.json``; the report
(`backend.harness.service_loop_report`) gathers every run file in the directory.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.engine.types import TaskType
from backend.harness.common import BackendHttp, bench_model, choice_result, chosen_label, label_config, load_avg, stats
from backend.harness.config import BackendBenchConfig
from backend.harness.label_studio import LabelStudioServer
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import DEPLOYMENTS, BackendProcesses, RedisServer, describe_workers, stopped_on_sigterm
from backend.harness.service_loop_report import report, write_run
from backend.service.records import FastStatus
from backend.service.settings import Settings

DEFAULT_OUTPUT = "docs/benchmarks/service-loop"
LOG_ROOT = Path("runs/service-loop-logs")  # the backend's logs of each run (gunicorn, workers), kept
POLL_S = 0.05
# fast outcomes that publish nothing: no update to wait for
SETTLED = (FastStatus.SKIPPED.value, FastStatus.OFF.value, FastStatus.FAILED.value)
PREDICT_RETRIES = 3  # a 503 from /predict (Redis slower than REDIS_REQUEST_TIMEOUT under load) is retried


@dataclass
class LoopProject:
    """The Label Studio project of one run and the gold labels of its tasks."""

    id: int
    ml_id: int
    label_config: str
    gold: dict[int, str]


@dataclass
class Annotator:
    """One annotator: takes each task from ``/next``, saves its gold label, waits for the fast update."""

    ls: LabelStudioAdmin
    backend: BackendHttp
    project: LoopProject
    timeout: float
    queues: Any = None  # () -> {queue kind: jobs waiting}, read after each wait
    labeled: int = 0
    started: float = field(default_factory=time.perf_counter)
    log: list[dict[str, Any]] = field(default_factory=list)

    def step(self) -> dict[str, Any]:
        pid = self.project.id
        task = self.ls.next_task(pid)
        if task is None:
            raise RuntimeError(f"/next served nothing after {self.labeled} labels: the pool is exhausted")
        task_id = int(task["id"])
        held = sorted({str(p.get("model_version")) for p in task.get("predictions") or []})
        before = self.backend.fast_status(pid)
        t0 = time.perf_counter()
        self.ls.create_annotation(task_id, choice_result(self.project.gold[task_id]))
        self.labeled += 1
        waited = self.backend.wait_fast_update(pid, before, self.labeled, self.timeout, poll=POLL_S, settled=SETTLED)
        status, state = waited.status, waited.state
        outcome = {"published": "published", "settled": str(status.get("status")), "timeout": "miss"}[waited.outcome]
        record = {"n": self.labeled, "at_s": round(t0 - self.started, 1), "task": task_id, "from_next": True,
                  "held_predictions_of": held,
                  "outcome": outcome, "latency_s": round(waited.at - t0, 3) if waited.published else None,
                  "waited_s": round(waited.at - t0, 3), "fast_status": status.get("status"),
                  "order": status.get("order") if waited.published else None,
                  "training": bool(state.get("running_job") or state.get("queued_job")),
                  "training_running": bool(state.get("running_job")), "iteration": state.get("iteration"),
                  "serving": (state.get("serving") or {}).get("model"), "version": state.get("version")}
        if self.queues is not None:
            record["waiting_jobs"] = self.queues()
        self.log.append(record)
        return record


def create_project(ls: LabelStudioAdmin, backend: BackendHttp, corpus: Any, title: str) -> LoopProject:
    """The pool as a project, the backend connected (LS adds its /webhook), Uncertainty sampling."""
    xml = label_config(corpus.pool.schema.labels)
    pid = int(ls.create_project(title, xml)["id"])
    examples = list(corpus.pool.examples)
    ids: list[int] = []
    for start in range(0, len(examples), 10_000):
        ids += ls.import_tasks(pid, [{"text": ex.text} for ex in examples[start:start + 10_000]])
    if len(ids) != len(examples):
        raise RuntimeError(f"Label Studio returned {len(ids)} task ids for {len(examples)} imported tasks")
    ml = ls.connect_ml_backend(pid, backend.url, "feasible-al", timeout=100)
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    return LoopProject(pid, ml.id, xml, {tid: ex.labels[0] for tid, ex in zip(ids, examples)})


def held_out_accuracy(backend: BackendHttp, project: LoopProject, test: Any, batch: int) -> dict[str, Any]:
    """The serving model on the test split through ``POST /predict`` (tasks without ids)."""
    texts = [ex.text for ex in test.examples]
    gold = [ex.labels[0] for ex in test.examples]
    state, retried = backend.state(project.id), backend.retried_503
    t0 = time.perf_counter()
    predicted: list[str | None] = []
    versions: Counter[str] = Counter()
    for start in range(0, len(texts), batch):
        body = {"tasks": [{"data": {"text": t}} for t in texts[start:start + batch]], "project": f"{project.id}.0",
                "label_config": project.label_config}
        for entry in backend.predict(body, retries=PREDICT_RETRIES):
            predicted.append(chosen_label(entry.get("result") or []))
            versions[str(entry.get("model_version"))] += 1
    hits = sum(p == g for p, g in zip(predicted, gold))
    serving = state.get("serving") or {}
    return {"accuracy": hits / len(gold), "test": len(gold), "versions": dict(versions),
            "predicted_shares": {str(k): round(v / len(gold), 4) for k, v in Counter(predicted).items()},
            "version": state.get("version"), "serving_model": serving.get("model"),
            "serving_why": (serving.get("why") or {}).get("why_serve"), "iteration": state.get("iteration"),
            "training": bool(state.get("running_job") or state.get("queued_job")),
            "fast_status": (state.get("fast_path") or {}).get("status"),
            "predict_seconds": round(time.perf_counter() - t0, 2), "predict_503_retries": backend.retried_503 - retried}


def waiting_jobs(redis_url: str, prefix: str) -> Any:
    """A reader of how many jobs wait in each of the backend's queues (RQ, `<prefix>-<kind>`)."""
    import redis
    from rq import Queue

    from backend.service.runtime import QUEUE_KINDS

    connection = redis.Redis.from_url(redis_url)
    queues = {kind: Queue(f"{prefix}-{kind}", connection=connection) for kind in QUEUE_KINDS}
    return lambda: {kind: queue.count for kind, queue in queues.items()}


def loop_env(config: BackendBenchConfig, seed: int, ls_srv: Any, redis_url: str,
             root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(the backend's environment, the settings this run names). Every other setting is the
    backend's default: the caller's own setting variables are dropped."""
    settings = {"ACQUISITION_MODEL": bench_model(config.model)}
    chosen = {"SEED": str(seed) if seed else "", "DEVICE": "" if config.device == "auto" else config.device,
              "TORCH_THREADS": str(config.torch_threads or ""), "EPOCHS": str(config.epochs or ""),
              "FULL_RESCORE_ITERATIONS": config.full_rescore_iterations or ""}
    settings.update({k: v for k, v in chosen.items() if v})
    own = {f.name.upper() for f in dataclasses.fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in own}
    env.update({"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "LABEL_STUDIO_URL": ls_srv.url,
                "LABEL_STUDIO_API_KEY": ls_srv.token, "REDIS_URL": redis_url, "MODEL_DIR": str(root / "models"),
                "KEY_PREFIX": f"loop-{secrets.token_hex(3)}", **settings})
    return env, settings


def annotate(annotator: Annotator, budgets: list[int], score: Any) -> list[dict[str, Any]]:
    """Label up to the last budget; `score()` the serving model at each budget."""
    points = []
    for budget in budgets:
        while annotator.labeled < budget:
            r = annotator.step()
            shown = f"{r['latency_s']:.2f} s" if r["latency_s"] is not None else f"{r['outcome']} ({r['fast_status']})"
            print(f"  label {r['n']}/{budgets[-1]}: {shown}, serving {r['serving']}, training {r['training']}",
                  file=sys.stderr, flush=True)
        points.append({"labeled": budget, **score()})
        print(f"  @{budget}: accuracy {points[-1]['accuracy']:.3f} ({points[-1]['version']}, "
              f"{points[-1]['serving_model']})", file=sys.stderr, flush=True)
    return points


def summarize_log(log: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [r["latency_s"] for r in log if r["latency_s"] is not None]
    return {"annotations": len(log), "from_next": sum(r["from_next"] for r in log),
            "latency_s": stats(latencies), "misses": sum(r["outcome"] == "miss" for r in log),
            "outcomes": dict(Counter(r["outcome"] for r in log)),
            "misses_by_status": dict(Counter(str(r["fast_status"]) for r in log if r["outcome"] == "miss")),
            "misses_while_training": sum(r["outcome"] == "miss" and r["training"] for r in log),
            "served_with_prediction": sum(bool(r["held_predictions_of"]) for r in log),
            "annotations_while_a_finetune_ran": sum(bool(r.get("training_running")) for r in log),
            "most_jobs_waiting": {k: max((r.get("waiting_jobs") or {}).get(k, 0) for r in log)
                                  for k in ("fast", "scoring", "training")} if log else {}}


def run_one(config: BackendBenchConfig, spec: str, seed: int, deployment: str, ls_srv: Any, redis_url: str,
            root: Path, log_root: Path) -> dict[str, Any]:
    """One corpus x seed x deployment, on a backend started (and stopped) here; its logs stay in
    `log_root`/<corpus>-<deployment>-seed<k>/."""
    from backend.experiments.label_efficiency import load_corpus

    loop, started = config.loop, time.perf_counter()
    corpus = load_corpus(spec, config.pool, loop.test_size)
    if corpus.pool.schema.task_type is not TaskType.CLASSIFICATION:
        raise ValueError(f"the service loop needs a classification corpus; {spec!r} is tagging")
    budgets = sorted(b for b in set(loop.budgets) if b < len(corpus.pool))
    env, settings = loop_env(config, seed, ls_srv, redis_url, root)
    workers = DEPLOYMENTS[deployment]
    ls = LabelStudioAdmin(ls_srv.url, ls_srv.token, timeout=300)
    out: dict[str, Any] = {
        "corpus": corpus.name, "seed": seed, "deployment": deployment, "workers": describe_workers(workers),
        "settings": settings, "pool": len(corpus.pool), "test": len(corpus.test),
        "labels": list(corpus.pool.schema.labels), "budgets": budgets, "update_timeout_s": loop.update_timeout,
        "machine": {"cpus": os.cpu_count(), "load_start": load_avg()}}
    logs = log_root / f"{corpus.name}-{deployment}-seed{seed}"
    out["logs"] = str(logs)
    with BackendProcesses(env, logs, startup_timeout=300, workers=workers) as stack:
        try:
            backend = BackendHttp(stack.url)
            project = create_project(ls, backend, corpus, f"service-loop {corpus.name} {deployment} {seed} "
                                     f"{secrets.token_hex(2)}")
            annotator = Annotator(ls, backend, project, loop.update_timeout, waiting_jobs(redis_url, env["KEY_PREFIX"]))
            out["points"] = annotate(annotator, budgets,
                                     lambda: held_out_accuracy(backend, project, corpus.test, loop.predict_batch))
            final = backend.state(project.id)
        except Exception:
            print(stack.log_tail(4000), file=sys.stderr)
            raise
    out.update(summarize_log(annotator.log), iterations=final.get("iteration"), annotation_log=annotator.log,
               wall_seconds=round(time.perf_counter() - started, 1))
    out["machine"]["load_end"] = load_avg()
    return out


def measure(config: BackendBenchConfig, ls_srv: Any, redis_url: str, root: Path, out_dir: Path,
            log_root: Path | None = None) -> list[dict[str, Any]]:
    """Every run of the configuration against a running Label Studio and Redis (`ls_srv`:
    ``.url`` / ``.token``); each run's JSON is written as soon as it ends (the backend's logs under
    `log_root`, default `root`/logs)."""
    runs: list[dict[str, Any]] = []
    for spec in config.loop.corpus:
        for seed in config.loop.seeds:
            for deployment in config.loop.workers:
                print(f"service loop: {spec}, seed {seed}, {deployment} workers...", file=sys.stderr, flush=True)
                run_root = root / f"{len(runs)}"
                logs = log_root or root / "logs"
                run = run_one(config, spec, seed, deployment, ls_srv, redis_url, run_root, logs)
                write_run(out_dir, run)
                runs.append(run)
    return runs


def run_service_loop(config: BackendBenchConfig) -> int:
    """Run every configured loop, then print and write the report (table, JSON, PNG)."""
    out_dir = Path(config.output_dir or DEFAULT_OUTPUT)
    with stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="service-loop-") as tmp, \
            RedisServer() as redis_srv:
        print("starting Label Studio...", file=sys.stderr)
        with LabelStudioServer(data_dir=Path(tmp) / "ls", startup_timeout=600) as ls_srv:
            measure(config, ls_srv, redis_srv.url, Path(tmp), out_dir, LOG_ROOT)
    text, json_path, png_path = report(out_dir, config.loop.compare)
    print(text)
    print(f"\nwrote {json_path} and {png_path}")
    return 0
