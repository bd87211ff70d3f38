"""`feasible-al serve | worker | bench-backend`: the backend's processes, as CLI subcommands.

`serve` and `worker` read their settings through `Settings.from_env()` (flags only override the
environment): plain argparse, since those flags mirror environment variables, not a dataclass.
`bench-backend`'s flags are generated from its typed configuration (`backend.harness.config`,
`backend.cli.args`), as `bench-labels`' are.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TYPE_CHECKING, Literal

from backend.cli.args import arguments, build
from backend.harness.config import DEPLOYMENT_NAMES, BackendBenchConfig, FastLatencyConfig, ServiceLoopConfig
from backend.service.runtime import QUEUE_KINDS
from backend.service.settings import Settings

if TYPE_CHECKING:
    from backend.cli.args import Subcommands

Bench = arguments(BackendBenchConfig, "benchmark (every mode; the rest: iterations)")
FastLatency = arguments(FastLatencyConfig, "fast path latency (--mode fast-latency)",
                        overrides={"fast_worker_queues": {"choices": QUEUE_KINDS}})
ServiceLoop = arguments(ServiceLoopConfig, "service loop label efficiency (--mode label-efficiency)",
                        overrides={"workers": {"choices": DEPLOYMENT_NAMES}})


def _settings_with(overrides: dict[str, object]) -> tuple[Settings, dict[str, str]]:
    """Settings from the environment with CLI overrides applied (validated), and the environment
    a child process needs to see the same values."""
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is not None:
            env[name.upper()] = str(value)
    return Settings.from_env(env), env


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving `backend._wsgi:app` (gthread workers)."""
    settings, env = _settings_with({"host": args.host, "port": args.port, "workers": args.workers,
                                    "threads": args.threads})
    if shutil.which("gunicorn") is None and not _has_module("gunicorn"):
        raise RuntimeError("gunicorn is not installed: pip install gunicorn")
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(settings.workers),
        "--threads", str(settings.threads),
        # gthread whose own error pages (bad request line, headers) are JSON like the API's.
        "--worker-class", "backend.service.http_worker.JsonErrorWorker",
        # /predict may run the model for never-scored tasks; LS itself waits 100 s.
        "--timeout", str(args.timeout),
        "--graceful-timeout", "30",
        # gunicorn's largest request line, so long ids reach the app and get its JSON 404; a
        # longer line gets gunicorn's 414 (JSON through the worker class).
        "--limit-request-line", "8190",
        "--keep-alive", "5",
        "--access-logfile", "-" if args.access_log else "/dev/null",
        "backend._wsgi:app",
    ]
    print(f"serving on http://{settings.host}:{settings.port} "
          f"({settings.workers} workers x {settings.threads} threads), Redis {settings.describe()['redis_url']}",
          file=sys.stderr)
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def cmd_worker(args: argparse.Namespace) -> int:
    """Run until stopped; survives Redis and Label Studio outages, exits 1 only when it cannot recover."""
    from backend.service.jobs.worker import WorkerStoppedError, run_worker

    settings, _ = _settings_with({})
    kinds = tuple(args.queues)
    print(f"RQ worker on {', '.join(f'{settings.key_prefix}-{k}' for k in kinds)} "
          f"(Redis {settings.describe()['redis_url']}, {'fork per job' if args.fork else 'in-process jobs'})",
          file=sys.stderr)
    try:
        run_worker(settings, kinds, burst=args.burst, fork=args.fork, name=args.name)
    except WorkerStoppedError as exc:
        print(f"feasible-al worker: {exc}", file=sys.stderr)
        return 1
    return 0


def bench_config(args: argparse.Namespace) -> BackendBenchConfig:
    """The parsed bench-backend flags as its typed configuration."""
    config: BackendBenchConfig = build(args, Bench, fast=build(args, FastLatency), loop=build(args, ServiceLoop))
    return config


def cmd_bench_backend(args: argparse.Namespace) -> int:
    config = bench_config(args)
    task: Literal["classification", "ner"] = "ner" if getattr(args, "task", None) == "ner" else "classification"
    if task != "classification" and config.mode != "fast-latency":
        raise ValueError(f"--task {task} is a fast-latency option (--mode fast-latency)")
    if config.mode == "fast-latency":
        from backend.harness.fast_latency import run_fast_latency

        return run_fast_latency(config, task)
    if config.mode == "label-efficiency":
        from backend.harness.service_loop import run_service_loop

        return run_service_loop(config)
    from backend.harness.backend_bench import run_bench

    return run_bench(config)


def register(sub: Subcommands) -> None:
    """Add serve, worker and bench-backend to the `feasible-al` subcommands."""
    epilog = "environment variables:\n" + Settings.help_text()
    _register_serve(sub, epilog)
    _register_worker(sub, epilog)
    bench = sub.add_parser(
        "bench-backend", dataclass_types=[Bench, FastLatency, ServiceLoop],
        help="benchmark the backend end to end (real Redis, Label Studio, gunicorn, RQ workers): iterations, "
             "fast-path latency (classification, or tagging with --task ner), or the service loop's label efficiency",
    )
    bench.add_argument(
        "--task", choices=("classification", "ner"), default="classification",
        help="fast-latency: ner measures tagging's fast path (token head, spans pushed) on a span-labeling "
             "project of a tagging corpus (--dataset, default wnut16; sentences repeat with a ' #k' suffix "
             "beyond the corpus), its compute alone on --compute-pool synthetic sentences (~19.5 words, 384-d "
             "float16) and the per-word features' memory; writes docs/benchmarks/fast-latency-ner by default")
    bench.set_defaults(func=cmd_bench_backend)


def _register_serve(sub: Subcommands, epilog: str) -> None:
    serve = sub.add_parser("serve", help="run the ML backend HTTP server (gunicorn, backend._wsgi:app)",
                           epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=None, help="default: HOST (0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="default: PORT (9090)")
    serve.add_argument("--workers", type=int, default=None, help="default: WORKERS (1)")
    serve.add_argument("--threads", type=int, default=None, help="default: THREADS (8)")
    serve.add_argument("--timeout", type=int, default=120, help="gunicorn worker timeout, seconds")
    serve.add_argument("--access-log", action="store_true", help="log every request to stdout")
    serve.set_defaults(func=cmd_serve)


def _register_worker(sub: Subcommands, epilog: str) -> None:
    worker = sub.add_parser("worker", help="run an RQ worker for training, scoring and successor jobs",
                            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--queues", nargs="+", default=list(QUEUE_KINDS), choices=QUEUE_KINDS,
                        help="queue kinds to serve, in priority order")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--fork", action="store_true",
                        help="fork a child per job (default: run jobs in-process, keeping models and CUDA)")
    worker.add_argument("--name", default=None, help="worker name (default: host and pid)")
    worker.set_defaults(func=cmd_worker)
