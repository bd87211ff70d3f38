"""`feasible-al bench-backend`: the backend measured end to end, as Label Studio uses it.

Starts a private redis-server and a real Label Studio (the test harness's launchers, so it runs
from a source checkout with ``scripts/install_label_studio.sh`` done), then gunicorn and one RQ
worker on free ports, and measures:

* ``/webhook`` latency (p50/p99 over N events) while a training job runs, and idle;
* ``/predict`` latency for 1,000 tasks the store already holds scores for;
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def _harness():
    try:
        from tests.helpers.servers import LabelStudioServer, RedisServer, free_port, stop_process_group, wait_http
        from tests.helpers.tiny_models import build_tiny_model
        from tests.helpers.toy_data import toy_classification
    except ImportError as exc:  # pragma: no cover - installed without the repository
        raise RuntimeError(
            "bench-backend runs from a source checkout: it starts Redis and Label Studio with tests/helpers "
            f"({exc})"
        ) from None
    return LabelStudioServer, RedisServer, free_port, wait_http, build_tiny_model, toy_classification, stop_process_group


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": _percentile(ms, 50), "p99_ms": _percentile(ms, 99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms)}



class _Backend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def state(self, project_id: int) -> dict:
        return self.http.get(f"{self.url}/projects/{project_id}", timeout=30).json()

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


def run_bench(args: argparse.Namespace) -> int:
    LabelStudioServer, RedisServer, free_port, wait_http, build_tiny_model, toy_classification, stop_process_group = _harness()
    from backend.service.ls_client import UNCERTAINTY_SAMPLING, LabelStudioClient

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = (REPO_ROOT / "label_config_examples" / "text_classification.xml").read_text()
    names = {"pos": "Positive", "neg": "Negative"}
    results: dict[str, Any] = {"pool_size": args.pool_size, "labeled": args.labeled, "device": args.device,
                               "full_rescore_iterations": args.full_rescore_iterations,
                               "torch_threads": args.torch_threads,
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="bench-backend-") as tmp, RedisServer() as redis_srv:
        tmp_path = Path(tmp)
        model = args.model
        if model == "tiny":
            model = str(build_tiny_model(tmp_path / "tiny-bert", "bert"))
        results["model"] = args.model
        print("starting Label Studio (first start runs migrations, ~30 s)...", file=sys.stderr)
        with LabelStudioServer(data_dir=tmp_path / "ls") as ls_srv:
            port = free_port()
            env = {
                **os.environ, "TOKENIZERS_PARALLELISM": "false", "LABEL_STUDIO_URL": ls_srv.url,
                "LABEL_STUDIO_API_KEY": ls_srv.token, "REDIS_URL": redis_srv.url, "MODEL_DIR": str(tmp_path / "models"),
                "ACQUISITION_MODEL": model, "DEVICE": args.device, "TRAIN_EVERY_N": "0", "WORKERS": "1",
                "THREADS": "8", "LOG_LEVEL": "WARNING", "FULL_RESCORE_ITERATIONS": args.full_rescore_iterations,
                "TORCH_THREADS": str(args.torch_threads),
            }
            if args.epochs:
                env["EPOCHS"] = str(args.epochs)
            procs = [
                subprocess.Popen([sys.executable, "-m", "backend.cli", *cmd], cwd=REPO_ROOT, env=env,
                                 stdout=open(tmp_path / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
                for name, cmd in (("gunicorn", ["serve", "--host", "127.0.0.1", "--port", str(port)]),
                                  ("worker", ["worker"]))
            ]
            try:
                url = f"http://127.0.0.1:{port}"
                wait_http(f"{url}/health", 120, alive=lambda: procs[0].poll() is None)
                _run(results, args, xml, names, url, ls_srv, LabelStudioClient, UNCERTAINTY_SAMPLING,
                     toy_classification)
            except Exception:
                for log in sorted(tmp_path.glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
                raise
            finally:
                for proc in procs:
                    stop_process_group(proc, grace=20)
    (out_dir / "bench_backend.json").write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"\nwrote {out_dir / 'bench_backend.json'}")
    return 0


def _run(results, args, xml, names, url, ls_srv, LabelStudioClient, sampling, toy_classification) -> None:
    ls = LabelStudioClient(ls_srv.url, ls_srv.token, timeout=120)
    backend = _Backend(url)
    examples = toy_classification(args.pool_size + args.labeled + 20, seed=5)
    project = ls.create_project(f"bench-backend-{secrets.token_hex(3)}", xml)
    pid = project["id"]
    t0 = time.perf_counter()
    ids = ls.import_tasks(pid, [{"text": ex.text} for ex in examples[: args.pool_size + args.labeled]])
    results["import_seconds"] = time.perf_counter() - t0
    ml = ls.connect_ml_backend(pid, url, "feasible-al")
    ls.set_sampling(pid, sampling)
    labeled = ids[: args.labeled]
    for task_id, ex in zip(labeled, examples):
        ls.create_annotation(task_id, [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                        "value": {"choices": [names[ex.labels[0]]]}}])

    # Webhook latency, idle then while iteration 1 trains and scores the pool.
    results["webhook_idle"] = _summary(backend.webhook_latencies(pid, args.webhook_events, labeled))
    ls.start_training(ml["id"])
    deadline = time.monotonic() + 300
    while not backend.state(pid)["running_job"]:
        if time.monotonic() > deadline:
            raise TimeoutError("training did not start")
        time.sleep(0.01)
    busy = backend.webhook_latencies(pid, args.webhook_events, labeled)
    still_running = bool(backend.state(pid)["running_job"])
    results["webhook_during_training"] = {**_summary(busy), "training_running_at_end": still_running}
    first = backend.wait_iteration(pid, 1)
    results["iteration_1"] = first["last_iteration"]

    # /predict for tasks the store holds scores for (what LS sends on Retrieve predictions).
    tasks = [t for t in ls.iter_tasks(pid, only_labeled=False, fields="task_only")][: args.predict_tasks]
    body = {"tasks": tasks, "project": f"{pid}.0", "label_config": ls.get_project(pid)["label_config"],
            "params": {"context": None}}
    scored_before = backend.state(pid)["model_scored_total"]
    times = []
    for _ in range(args.predict_repeats):
        t0 = time.perf_counter()
        r = backend.http.post(f"{url}/predict", json=body, timeout=100)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        assert len(r.json()["results"]) == len(tasks)
    results["predict_cached"] = {**_summary(times), "tasks": len(tasks),
                                 "model_runs": backend.state(pid)["model_scored_total"] - scored_before}

    # Iteration 2: a UPS iteration (a few more labels first).
    more = ids[args.labeled : args.labeled + 10]
    for task_id, ex in zip(more, examples[args.labeled : args.labeled + 10]):
        ls.create_annotation(task_id, [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                        "value": {"choices": [names[ex.labels[0]]]}}])
    ls.start_training(ml["id"])
    results["iteration_2"] = backend.wait_iteration(pid, 2)["last_iteration"]


def _print_table(results: dict[str, Any]) -> None:
    print(f"\nbackend benchmark: pool {results['pool_size']} tasks, {results['labeled']} labeled, "
          f"model {results['model']}, device {results['device']}, {results['machine']['cpus']} CPUs, "
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
