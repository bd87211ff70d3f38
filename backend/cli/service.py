"""`feasible-al serve | worker | bench-backend`: the backend's processes, as CLI subcommands.

Every command reads its settings through `Settings.from_env()` (flags only override the
environment). Plain argparse here: these flags mirror environment variables, not a dataclass.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from backend.service.settings import Settings
from backend.service.runtime import QUEUE_KINDS


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


def cmd_bench_backend(args: argparse.Namespace) -> int:
    if args.fast_latency:
        from backend.harness.fast_latency import run_fast_latency

        return run_fast_latency(args)
    from backend.harness.backend_bench import run_bench

    return run_bench(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add serve, worker and bench-backend to the `feasible-al` subcommands."""
    epilog = "environment variables:\n" + Settings.help_text()
    serve = sub.add_parser("serve", help="run the ML backend HTTP server (gunicorn, backend._wsgi:app)",
                           epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=None, help="default: HOST (0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="default: PORT (9090)")
    serve.add_argument("--workers", type=int, default=None, help="default: WORKERS (1)")
    serve.add_argument("--threads", type=int, default=None, help="default: THREADS (8)")
    serve.add_argument("--timeout", type=int, default=120, help="gunicorn worker timeout, seconds")
    serve.add_argument("--access-log", action="store_true", help="log every request to stdout")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ worker for training, scoring and successor jobs",
                            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--queues", nargs="+", default=list(QUEUE_KINDS), choices=QUEUE_KINDS,
                        help="queue kinds to serve, in priority order")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--fork", action="store_true",
                        help="fork a child per job (default: run jobs in-process, keeping models and CUDA)")
    worker.add_argument("--name", default=None, help="worker name (default: host and pid)")
    worker.set_defaults(func=cmd_worker)

    bench = sub.add_parser(
        "bench-backend",
        help="benchmark the backend end to end (real Redis, Label Studio, gunicorn, RQ worker)",
    )
    bench.add_argument("--model", default="tiny",
                       help="acquisition model: 'tiny' (built on the fly, CPU) or a hub name / directory")
    bench.add_argument("--pool-size", type=int, default=2000, help="unlabeled tasks in the project")
    bench.add_argument("--labeled", type=int, default=40, help="annotated tasks before training")
    bench.add_argument("--webhook-events", type=int, default=200)
    bench.add_argument("--predict-tasks", type=int, default=1000)
    bench.add_argument("--predict-repeats", type=int, default=5)
    bench.add_argument("--epochs", type=int, default=None, help="training epochs (default: the paper's)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--torch-threads", type=int, default=0, help="TORCH_THREADS for the backend (0 = torch default)")
    bench.add_argument("--full-rescore-iterations", default="1",
                       help="FULL_RESCORE_ITERATIONS for the run (default '1': iteration 2 is a UPS one)")
    bench.add_argument("--output-dir", default=None,
                       help="default: runs/bench-backend; docs/benchmarks/fast-latency with --fast-latency")
    bench.add_argument("--dataset", default="rotten_tomatoes", help="packaged classification corpus or local path")
    fast = bench.add_argument_group("fast path latency (--fast-latency)")
    fast.add_argument("--fast-latency", action="store_true",
                      help="measure annotation -> LS serving a new fast version, instead of the iteration benchmark")
    fast.add_argument("--pool-sizes", type=int, nargs="*", default=[1000, 10000],
                      help="tasks per project measured (texts repeat beyond the corpus)")
    fast.add_argument("--annotations", type=int, default=12, help="measured annotations per project")
    fast.add_argument("--held-pool", type=int, default=10000,
                      help="the pool size on which --fast-updates and --full-iterations run before LS's "
                           "predictions are counted")
    fast.add_argument("--fast-updates", type=int, default=30)
    fast.add_argument("--full-iterations", type=int, default=3)
    fast.add_argument("--no-concurrent-training", dest="keep_training", action="store_false",
                      help="do not keep a full fine-tune running during the measured annotations")
    fast.add_argument("--think-s", type=float, default=3.0,
                      help="seconds between /next serving a task and its annotation (the annotator reading it)")
    fast.add_argument("--fast-worker-queues", nargs="+", default=["fast", "scoring"], choices=QUEUE_KINDS,
                      help="queues of the second worker (the first serves all)")
    fast.add_argument("--fast-top-k", type=int, default=0, help="FAST_TOP_K for the run (0: the default)")
    fast.add_argument("--compute-pool", type=int, default=100_000,
                      help="synthetic 384-d float16 pool for the compute-alone measurement (0: skip)")
    fast.add_argument("--compute-labeled", type=int, default=200)
    fast.add_argument("--max-texts", type=int, default=12_000, help="distinct corpus texts used at most")
    fast.add_argument("--features-timeout", type=float, default=1800.0,
                      help="seconds allowed for the pool features / the full iterations")
    bench.set_defaults(func=cmd_bench_backend)
