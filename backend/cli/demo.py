"""`feasible-al demo`: active learning in a real Label Studio, then a PLASM successor.

Plain argparse: the flags are the demo's sizes and where the services are, not an engine config.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.cli.args import Subcommands


def cmd_demo(args: argparse.Namespace) -> int:
    from backend.demo.run import DemoOptions, run_demo
    from backend.demo.stack import StackOptions

    stack = StackOptions(label_studio_url=args.label_studio_url or "", api_key=args.api_key or "",
                         redis_url=args.redis_url or "", backend_url=args.backend_url or "")
    opts = DemoOptions(task=args.task, rounds=args.rounds, per_round=args.per_round, pool_size=args.pool_size,
                       held_out=args.held_out, seed=args.seed, output_dir=Path(args.output_dir),
                       no_wait=args.no_wait, stack=stack)
    for name in ("rounds", "per_round", "pool_size", "held_out"):
        if getattr(opts, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if opts.rounds * opts.per_round >= opts.pool_size:
        raise ValueError("--rounds x --per-round must leave unlabeled tasks in --pool-size")
    try:
        return run_demo(opts)
    except KeyboardInterrupt:
        return 130


def register(sub: Subcommands) -> None:
    """Add `demo` to the `feasible-al` subcommands."""
    demo = sub.add_parser(
        "demo", help="the backend in a real Label Studio: rounds of active learning, then a PLASM successor",
        description="Start Redis, Label Studio, the backend and two workers (one on every queue, one on the fast queue "
                    "alone) on free 127.0.0.1 ports (or use yours), "
                    "label a packaged corpus in rounds through Label Studio's /next, retrain after each round, "
                    "build and download a PLASM successor, and keep everything running until Ctrl-C.")
    demo.add_argument("--task", choices=("classification", "ner"), default="classification",
                      help="classification: rotten_tomatoes reviews (fresh/rotten); ner: wnut16 tweets")
    demo.add_argument("--rounds", type=int, default=4, help="annotate-then-retrain rounds")
    demo.add_argument("--per-round", type=int, default=40, help="tasks annotated per round")
    demo.add_argument("--pool-size", type=int, default=400, help="tasks imported into Label Studio")
    demo.add_argument("--held-out", type=int, default=500, help="gold texts kept out of Label Studio to measure models")
    demo.add_argument("--seed", type=int, default=0, help="corpus sample and successor seed")
    demo.add_argument("--output-dir", default="runs/demo", help="summary.json, the successor, the backend's logs")
    demo.add_argument("--no-wait", action="store_true", help="exit after printing (stop what was started)")
    demo.add_argument("--label-studio-url", help="use this Label Studio (with --api-key) instead of starting one")
    demo.add_argument("--api-key", help="its personal access token or legacy token")
    demo.add_argument("--redis-url", help="the Redis the started backend uses, instead of starting one")
    demo.add_argument("--backend-url", help="use this running backend (and its workers) instead of starting one")
    demo.set_defaults(func=cmd_demo)
