"""`feasible-al settings`: the backend's environment variables, generated from `Settings`.

The README's variable table is this command's `--markdown` output, kept between two markers
(`--write README.md` refreshes it, `--check README.md` fails on drift), so a default or a help
text changes in one place: the `Settings` dataclass.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.service.settings import SECRET_FIELDS, Settings

if TYPE_CHECKING:
    from backend.cli.args import Subcommands

BEGIN = "<!-- settings:begin (generated: feasible-al settings --markdown --write README.md) -->"
END = "<!-- settings:end -->"


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, its default as the environment would spell it, its help."""

    name: str
    default: str
    help: str
    secret: bool


def _spelled(value: Any) -> str:
    """A default as one would write it in the environment (`1,2,5,9`, `models`, empty for None)."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f"Settings.{f.name} has no default")  # every setting has one (from_env reads them)


def variables() -> list[Variable]:
    """Every variable `Settings.from_env` reads, in the dataclass's order."""
    return [Variable(f.name.upper(), _spelled(_default(f)), f.metadata.get("help", ""), f.name in SECRET_FIELDS)
            for f in fields(Settings)]


def _cell(text: str) -> str:
    """Table-safe Markdown: `|` escaped; `<`, `>` escaped outside code spans (else read as HTML)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def markdown_table() -> str:
    """The variables as a Markdown table (no markers)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for v in variables():
        default = f"`{v.default}`" if v.default else "(empty)"
        rows.append(f"| `{v.name}` | {_cell(default)} | {_cell(v.help)} |")
    return "\n".join(rows)


def env_file() -> str:
    """The variables as a commented `.env` file holding the defaults (secrets left empty)."""
    return "\n".join(f"# {v.help}\n{v.name}={'' if v.secret else v.default}" for v in variables())


def with_table(text: str, table: str) -> str:
    """`text` with the part between the markers replaced by `table`; `ValueError` without markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} ... {END!r} are missing")
    return text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:]


def cmd_settings(args: argparse.Namespace) -> int:
    target = args.write or args.check
    if target is None:
        print(markdown_table() if args.markdown else env_file())
        return 0
    table = markdown_table()  # a file's table is always the Markdown one
    path = Path(target)
    current = path.read_text(encoding="utf-8")
    wanted = with_table(current, table)
    if args.check:
        if current != wanted:
            print(f"{path}: the settings table is out of date: run feasible-al settings --markdown --write {path}",
                  file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        path.write_text(wanted, encoding="utf-8")
        print(f"{path}: settings table updated", file=sys.stderr)
    return 0


def register(sub: Subcommands) -> None:
    """Add `settings` to the `feasible-al` subcommands."""
    parser = sub.add_parser("settings", help="print the backend's environment variables and their defaults")
    parser.add_argument("--markdown", action="store_true",
                        help="a Markdown table (the README's) instead of a commented .env file; "
                             "implied by --write/--check")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write", metavar="FILE", help=f"replace the table between {BEGIN} and {END} in FILE")
    where.add_argument("--check", metavar="FILE", help="exit 1 when FILE's table differs from the generated one")
    parser.set_defaults(func=cmd_settings)
