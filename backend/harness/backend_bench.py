"""`feasible-al bench-backend`: the backend measured end to end, as Label Studio uses it.

Starts a private redis-server, a real Label Studio (``scripts/install_label_studio.sh``; see
`backend.harness.label_studio`), gunicorn and one RQ worker on free ports, sets up a project from a
real corpus (default: the packaged ``rotten_tomatoes``) served by a real model (default: the
packaged ``all-MiniLM-L6-v2``; ``--model`` also takes a local checkpoint directory), and measures:

* ``/webhook`` latency (p50/p99 over N events) while a training job runs, and idle;
* ``/predict`` latency for the tasks the store already holds scores for;
* one full iteration (fit, score, push) for the pool, split into train / inference / push, and
  the UPS iteration after it.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
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
    load_examples,
    summary_ms,
)
from backend.harness.config import BackendBenchConfig
from backend.harness.label_studio import LabelStudioServer
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin
from backend.harness.processes import BackendProcesses, RedisServer, stopped_on_sigterm

DEFAULT_OUTPUT = "runs/bench-backend"
EXTRA_LABELS = 10  # annotated before the second (UPS) iteration


def run_bench(config: BackendBenchConfig) -> int:
    """Run the benchmark, print its table and write ``<output_dir>/bench_backend.json``."""
    model, dataset = bench_model(config.model), config.dataset
    labels, examples = load_examples(dataset, config.pool + config.labeled)
    out_dir = Path(config.output_dir or DEFAULT_OUTPUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"pool_size": config.pool, "labeled": config.labeled, "device": config.device,
                               "model": model, "dataset": dataset,
                               "full_rescore_iterations": config.rescore,
                               "torch_threads": config.torch_threads,
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="bench-backend-") as tmp, \
            RedisServer() as redis_srv:
        root = Path(tmp)
        print("starting Label Studio (first start runs migrations, ~30 s)...", file=sys.stderr)
        with LabelStudioServer(data_dir=root / "ls") as ls_srv:
            env = backend_env(config, ls_srv.url, ls_srv.token, redis_srv.url, root)
            with BackendProcesses(env, root / "logs", startup_timeout=120) as stack:
                try:
                    ls = LabelStudioAdmin(ls_srv.url, ls_srv.token, timeout=120)
                    _measure(results, config, ls, BackendHttp(stack.url), labels, examples)
                except Exception:
                    print(stack.log_tail(3000), file=sys.stderr)
                    raise
    (out_dir / "bench_backend.json").write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"\nwrote {out_dir / 'bench_backend.json'}")
    return 0


def _measure(results: dict[str, Any], config: BackendBenchConfig, ls: LabelStudioAdmin, backend: BackendHttp,
             labels: tuple[str, ...], examples: list[ClassificationExample]) -> None:
    project = ls.create_project(f"bench-backend-{secrets.token_hex(3)}", label_config(labels))
    pid = project["id"]
    t0 = time.perf_counter()
    ids = ls.import_tasks(pid, [{"text": ex.text} for ex in examples])
    results["import_seconds"] = time.perf_counter() - t0
    ml = ls.connect_ml_backend(pid, backend.url, "feasible-al")
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    labeled = ids[: config.labeled]
    for task_id, ex in zip(labeled, examples):
        ls.create_annotation(task_id, choice_result(ex.labels[0]))

    # Webhook latency, idle then while iteration 1 trains and scores the pool.
    results["webhook_idle"] = summary_ms(backend.webhook_latencies(pid, config.webhook_events, labeled))
    ls.start_training(ml.id)
    backend.wait_running(pid)
    busy = backend.webhook_latencies(pid, config.webhook_events, labeled)
    still_running = bool(backend.state(pid)["running_job"])
    results["webhook_during_training"] = {**summary_ms(busy), "training_running_at_end": still_running}
    results["iteration_1"] = backend.wait_iteration(pid, 1)["last_iteration"]

    # /predict for tasks the store holds scores for (what LS sends on Retrieve predictions).
    tasks = list(ls.iter_tasks(pid, only_labeled=False, fields="task_only"))[: config.predict_tasks]
    body = {"tasks": tasks, "project": f"{pid}.0", "label_config": project["label_config"],
            "params": {"context": None}}
    scored_before = backend.state(pid)["model_scored_total"]
    times = backend.predict_latencies(body, config.predict_repeats)
    results["predict_cached"] = {**summary_ms(times), "tasks": len(tasks),
                                 "model_runs": backend.state(pid)["model_scored_total"] - scored_before}

    # Iteration 2: a UPS iteration (a few more labels first).
    more = slice(config.labeled, config.labeled + EXTRA_LABELS)
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
