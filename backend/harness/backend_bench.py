"""`feasible-al bench-backend`: the backend measured end to end, as Label Studio uses it.

Starts a private redis-server, a real Label Studio (``scripts/install_label_studio.sh``; see
`backend.harness.processes`), gunicorn and one RQ worker on free ports, sets up a project from a
real corpus (default: the packaged ``rotten_tomatoes``) served by a real model (default: the
packaged ``all-MiniLM-L6-v2``; ``--model`` also takes a local checkpoint directory), and measures:

* ``/webhook`` latency (p50/p99 over N events) while a training job runs, and idle;
* ``/predict`` latency for the tasks the store already holds scores for;
* one full iteration (fit, score, push) for the pool, split into train / inference / push, and
  the UPS iteration after it.
"""
from __future__ import annotations

import argparse
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
from xml.sax.saxutils import quoteattr

import requests

from backend.engine.data import load_dataset
from backend.engine.types import ClassificationExample, TaskType
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import BackendProcesses, LabelStudioServer, RedisServer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_DATASET = "rotten_tomatoes"
CONTROL, OBJECT = "label", "text"
EXTRA_LABELS = 10  # annotated before the second (UPS) iteration


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": _percentile(ms, 50), "p99_ms": _percentile(ms, 99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms)}


def label_config(labels: tuple[str, ...]) -> str:
    """A single-choice text classification config over `labels`."""
    choices = "".join(f"<Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View><Text name="{OBJECT}" value="$text"/>'
            f'<Choices name="{CONTROL}" toName="{OBJECT}" choice="single">{choices}</Choices></View>')


def choice_result(label: str) -> list[dict]:
    """The annotation result choosing `label`."""
    return [{"from_name": CONTROL, "to_name": OBJECT, "type": "choices", "value": {"choices": [label]}}]


def load_examples(spec: str, n: int) -> tuple[tuple[str, ...], list[ClassificationExample]]:
    """`n` examples of a classification corpus (seeded subsample) and its labels."""
    dataset = load_dataset(spec, max_examples=n, seed=5)
    if dataset.task_type is not TaskType.CLASSIFICATION:
        raise ValueError(f"bench-backend needs a classification corpus; {spec!r} is {dataset.task_type.value}")
    if len(dataset) < n:
        raise ValueError(f"{spec!r} has {len(dataset)} examples; --pool-size plus --labeled needs {n}")
    return dataset.schema.labels, list(dataset.examples)  # type: ignore[arg-type]


class BackendHttp:
    """The benchmark's HTTP client of the running backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def state(self, project_id: int) -> dict:
        return self.http.get(f"{self.url}/projects/{project_id}", timeout=30).json()

    def wait_running(self, project_id: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.state(project_id)["running_job"]:
            if time.monotonic() > deadline:
                raise TimeoutError("training did not start")
            time.sleep(0.01)

    def wait_iteration(self, project_id: int, iteration: int, timeout: float = 1800) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(project_id)
            idle = not state["running_job"] and not state["queued_job"]
            if idle and state["iteration"] >= iteration:
                return state
            if idle and state.get("last_error"):
                raise RuntimeError(f"training failed: {state['last_error']}")
            time.sleep(0.2)
        raise TimeoutError(f"iteration {iteration} not done after {timeout}s")

    def webhook_latencies(self, project_id: int, n: int, task_ids: list[int]) -> list[float]:
        out = []
        for i in range(n):
            event = {"action": "ANNOTATION_UPDATED", "project": {"id": project_id},
                     "task": {"id": task_ids[i % len(task_ids)]}, "annotation": {"id": i, "result": []}}
            t0 = time.perf_counter()
            r = self.http.post(f"{self.url}/webhook", json=event, timeout=10)
            out.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
        return out

    def predict_latencies(self, body: dict, repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = self.http.post(f"{self.url}/predict", json=body, timeout=100)
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            assert len(r.json()["results"]) == len(body["tasks"])
        return times


def _backend_env(args: argparse.Namespace, ls_srv: LabelStudioServer, redis_srv: RedisServer, root: Path,
                 model: str) -> dict[str, str]:
    env = {
        **os.environ, "TOKENIZERS_PARALLELISM": "false", "LABEL_STUDIO_URL": ls_srv.url,
        "LABEL_STUDIO_API_KEY": ls_srv.token, "REDIS_URL": redis_srv.url, "MODEL_DIR": str(root / "models"),
        "ACQUISITION_MODEL": model, "DEVICE": args.device, "TRAIN_EVERY_N": "0", "WORKERS": "1",
        "THREADS": "8", "LOG_LEVEL": "WARNING", "FULL_RESCORE_ITERATIONS": str(args.full_rescore_iterations),
        "TORCH_THREADS": str(args.torch_threads),
    }
    if args.epochs:
        env["EPOCHS"] = str(args.epochs)
    return env


def _model(args: argparse.Namespace) -> str:
    # "tiny" was a random test model built from the test tree, which does not ship: use the real one.
    return DEFAULT_MODEL if getattr(args, "model", None) in (None, "", "tiny") else str(args.model)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print its table and write ``<output_dir>/bench_backend.json``."""
    model, dataset = _model(args), getattr(args, "dataset", None) or DEFAULT_DATASET
    labels, examples = load_examples(dataset, args.pool_size + args.labeled)
    out_dir = Path(args.output_dir or "runs/bench-backend")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"pool_size": args.pool_size, "labeled": args.labeled, "device": args.device,
                               "model": model, "dataset": dataset,
                               "full_rescore_iterations": args.full_rescore_iterations,
                               "torch_threads": args.torch_threads,
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="bench-backend-") as tmp, RedisServer() as redis_srv:
        root = Path(tmp)
        print("starting Label Studio (first start runs migrations, ~30 s)...", file=sys.stderr)
        with LabelStudioServer(data_dir=root / "ls") as ls_srv:
            env = _backend_env(args, ls_srv, redis_srv, root, model)
            with BackendProcesses(env, root / "logs", startup_timeout=120) as stack:
                try:
                    ls = LabelStudioAdmin(ls_srv.url, ls_srv.token, timeout=120)
                    _measure(results, args, ls, BackendHttp(stack.url), labels, examples)
                except Exception:
                    print(stack.log_tail(3000), file=sys.stderr)
                    raise
    (out_dir / "bench_backend.json").write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"\nwrote {out_dir / 'bench_backend.json'}")
    return 0


def _measure(results: dict[str, Any], args: argparse.Namespace, ls: LabelStudioAdmin, backend: BackendHttp,
             labels: tuple[str, ...], examples: list[ClassificationExample]) -> None:
    project = ls.create_project(f"bench-backend-{secrets.token_hex(3)}", label_config(labels))
    pid = project["id"]
    t0 = time.perf_counter()
    ids = ls.import_tasks(pid, [{"text": ex.text} for ex in examples])
    results["import_seconds"] = time.perf_counter() - t0
    ml = ls.connect_ml_backend(pid, backend.url, "feasible-al")
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    labeled = ids[: args.labeled]
    for task_id, ex in zip(labeled, examples):
        ls.create_annotation(task_id, choice_result(ex.labels[0]))

    # Webhook latency, idle then while iteration 1 trains and scores the pool.
    results["webhook_idle"] = _summary(backend.webhook_latencies(pid, args.webhook_events, labeled))
    ls.start_training(ml.id)
    backend.wait_running(pid)
    busy = backend.webhook_latencies(pid, args.webhook_events, labeled)
    still_running = bool(backend.state(pid)["running_job"])
    results["webhook_during_training"] = {**_summary(busy), "training_running_at_end": still_running}
    results["iteration_1"] = backend.wait_iteration(pid, 1)["last_iteration"]

    # /predict for tasks the store holds scores for (what LS sends on Retrieve predictions).
    tasks = list(ls.iter_tasks(pid, only_labeled=False, fields="task_only"))[: args.predict_tasks]
    body = {"tasks": tasks, "project": f"{pid}.0", "label_config": project["label_config"],
            "params": {"context": None}}
    scored_before = backend.state(pid)["model_scored_total"]
    times = backend.predict_latencies(body, args.predict_repeats)
    results["predict_cached"] = {**_summary(times), "tasks": len(tasks),
                                 "model_runs": backend.state(pid)["model_scored_total"] - scored_before}

    # Iteration 2: a UPS iteration (a few more labels first).
    more = slice(args.labeled, args.labeled + EXTRA_LABELS)
    for task_id, ex in zip(ids[more], examples[more]):
        ls.create_annotation(task_id, choice_result(ex.labels[0]))
    ls.start_training(ml.id)
    results["iteration_2"] = backend.wait_iteration(pid, 2)["last_iteration"]


def _print_table(results: dict[str, Any]) -> None:
    print(f"\nbackend benchmark: {results['dataset']}, pool {results['pool_size']} tasks, {results['labeled']} "
          f"labeled, model {results['model']}, device {results['device']}, {results['machine']['cpus']} CPUs, "
          f"TORCH_THREADS={results['torch_threads'] or 'default'}")
    print(f"{'measurement':<44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for key, label in (("webhook_idle", "/webhook, idle"),
                       ("webhook_during_training", "/webhook, while a training job runs"),
                       ("predict_cached", f"/predict, {results['predict_cached']['tasks']} cached tasks")):
        s = results[key]
        name = f"{label} (n={s['n']})"
        print(f"{name:<44}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['max_ms']:>10.1f}")
    print(f"\n{'iteration':<26}{'scored':>9}{'pool':>7}{'train s':>9}{'infer s':>9}{'push s':>8}"
          f"{'fetch s':>9}{'total s':>9}")
    for key in ("iteration_1", "iteration_2"):
        it = results[key]
        sec = it["seconds"]
        kind = "full" if it["full_rescore"] else "UPS"
        name = f"{it['iteration']} ({kind})"
        print(f"{name:<26}{it['scored_by_model']:>9}{it['pool_size']:>7}"
              f"{sec['train']:>9.2f}{sec['inference']:>9.2f}{sec['push']:>8.2f}{sec['fetch']:>9.2f}{sec['total']:>9.2f}")
    print(f"\nwebhook events sent while training ran: {results['webhook_during_training']['n']} "
          f"(still running at the end: {results['webhook_during_training']['training_running_at_end']}); "
          f"/predict model runs for cached tasks: {results['predict_cached']['model_runs']}")
