"""`feasible-al`: the paper's experiments, PLASM, benchmarks, and the backend's server and workers.

Engine commands take their flags from the engine's config dataclasses (`HfArgumentParser`, one
argument group per dataclass, see `backend.cli.args`); `simulate` and `simulate-plasm` replay a
run with `--config <results.json>`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from transformers import HfArgumentParser

from backend.engine.errors import ActiveLearningError
from backend.engine.threads import wait_passively


class CommandParser(argparse.ArgumentParser):
    """The `feasible-al` parser, with each subcommand's parser by name (read by `replay` for --config)."""

    commands: dict[str, HfArgumentParser]


def build_parser() -> CommandParser:
    from backend.cli import demo, docs, experiments, plasm, service

    parser = CommandParser(prog="feasible-al", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO and show tracebacks")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: one per core; 1 avoids oversubscription on a busy machine)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    experiments.register(sub)
    plasm.register(sub)
    service.register(sub)
    demo.register(sub)
    docs.register(sub)
    parser.commands = sub.choices  # name -> the subcommand's parser (for --config)
    return parser


def replay(parser: CommandParser, args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """With `--config`, parse again with the saved run's values as defaults: flags given win."""
    if not getattr(args, "config", None):
        return args
    from backend.cli.args import replay_defaults

    command = parser.commands[args.command]
    command.set_defaults(**replay_defaults(args.config, command, getattr(args, "replay_aliases", None)))
    return parser.parse_args(argv)


def is_user_error(exc: BaseException) -> bool:
    """Bad input, reported in one line: the engine's errors, a missing file, or a `ValueError` the
    project's own validation raised (config `__post_init__`, model kinds). Anything else is a bug
    and keeps its traceback."""
    if isinstance(exc, (ActiveLearningError, FileNotFoundError)):
        return True
    if isinstance(exc, ValueError):
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("backend.")
    return False


def main(argv: list[str] | None = None) -> int:
    wait_passively()  # before anything loads torch (`backend.engine.threads`)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = replay(parser, args, argv)
        from backend.engine.device import quiet_transformers

        quiet_transformers()
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        code: int = args.func(args)
        return code
    except Exception as exc:
        if args.verbose or not is_user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
