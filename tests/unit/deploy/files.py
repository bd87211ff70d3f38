"""Readers for the deployment files (Dockerfile, docker/docker-compose.yml, .dockerignore), shared by
the tests beside this module. No Docker engine is needed: the files are parsed, not built."""
from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"

_VAR_RE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT / CMD / HEALTHCHECK CMD."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        return json.loads(text.strip())


def dockerfile() -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comments inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(args.split())))
    return out


def dockerfile_args() -> dict[str, str]:
    """ARG name -> default (every ARG here has one)."""
    result = {}
    for ins in dockerfile():
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            result[name] = default
    return result


def dockerfile_env() -> dict[str, str]:
    result = {}
    for ins in dockerfile():
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                name, _, value = token.partition("=")
                result[name] = value
    return result


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def variable(value: Any) -> tuple[str, str] | None:
    """``'${NAME:-default}'`` -> ``('NAME', 'default')``; None for a literal value."""
    match = _VAR_RE.fullmatch(str(value))
    if match is None:
        return None
    return match["name"], match["default"] or ""


def interpolate(value: Any, env: Mapping[str, str] | None = None) -> str:
    """Compose's ``${NAME:-default}`` substitution (set and non-empty wins, else the default)."""
    env = env or {}
    return _VAR_RE.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), str(value))


def settings_variables() -> set[str]:
    """The variables `Settings.from_env` reads, observed by running it on a recording mapping."""
    from backend.service.settings import Settings

    seen: set[str] = set()

    class Recorder(dict):
        def get(self, key, default=None):  # noqa: D401 - Mapping.get
            seen.add(key)
            return super().get(key, default)

    Settings.from_env(Recorder())
    assert seen == {f.name.upper() for f in fields(Settings)}, "from_env reads something besides the fields"
    return seen


def environ_reads_in_backend() -> set[str]:
    """Literal names read with os.environ.get / os.environ[...] / os.getenv anywhere in backend/."""
    names: set[str] = set()
    for path in (ROOT / "backend").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
                    key = node.args[0].value
                elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                    key = node.args[0].value
            elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            if isinstance(key, str):
                names.add(key)
    return names


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` only: a bare ``environ`` in backend/ is a WSGI environ (service/limits.py), and
    the settings' own reads are found through ``Settings.from_env`` (`settings_variables`)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)
            and node.value.id == "os")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())
