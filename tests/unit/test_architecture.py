"""The package's shape, checked from the source with `ast`: layers import only downwards, no file
imports its way back to itself (function-local imports count), and no module or function grows
past the size a new engineer can read at once."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "backend"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
EXEMPT_MODULES = {"backend.engine.models.classical"}  # the standalone CNN / BiLSTM-CRF successors
# What the product (web process and workers) is made of; the harness, demo, CLI and experiments sit
# above it and may import it, never the other way round.
PRODUCT = ("backend.engine", "backend.labeling", "backend.service", "backend.model", "backend._wsgi")
ABOVE_PRODUCT = ("backend.harness", "backend.demo", "backend.cli", "backend.experiments")
FRAMEWORKS = ("flask", "redis", "rq", "label_studio_sdk", "werkzeug", "gunicorn")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> Iterator[str]:
    """Every module `module` imports, at any depth of its code (TYPE_CHECKING blocks excepted)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _internal(name: str) -> str | None:
    """The project module a dotted import name lands in (a submodule, or the module defining a name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


GRAPH = {m: {t for t in map(_internal, _imports(m)) if t and t != m and not m.startswith(f"{t}.")}
         for m in MODULES}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def test_no_import_cycle_between_files() -> None:
    """Tarjan's strongly connected components over file-level imports; a package's __init__
    re-exporting its own modules is not a cycle of files."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def edges(m: str) -> set[str]:
        return {t for t in GRAPH[m] if not (MODULES[t].name == "__init__.py" and m.startswith(f"{t}."))}

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for t in edges(m):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in MODULES:
        if m not in index:
            visit(m)
    assert cycles == []


def test_nothing_below_the_model_class_imports_it() -> None:
    offenders = sorted(m for m in MODULES if _within(m, ("backend.service", "backend.engine", "backend.labeling"))
                       and "backend.model" in GRAPH[m])
    assert offenders == []


def test_the_product_never_imports_the_harness_demo_cli_or_experiments() -> None:
    offenders = sorted((m, t) for m in MODULES if _within(m, PRODUCT) for t in GRAPH[m] if _within(t, ABOVE_PRODUCT))
    assert offenders == []


def test_engine_and_labeling_import_no_service_and_no_web_or_queue_framework() -> None:
    offenders = []
    for m in MODULES:
        if _within(m, ("backend.engine", "backend.labeling")):
            names = set(_imports(m))
            offenders += [(m, n) for n in names if _within(n, ("backend.service", "backend.model", *FRAMEWORKS))]
            if _within(m, ("backend.engine",)):
                offenders += [(m, n) for n in names if _within(n, ("backend.labeling",))]
    assert sorted(set(offenders)) == []


@pytest.mark.parametrize("module", sorted(set(MODULES) - EXEMPT_MODULES))
def test_module_size(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines"


def test_no_function_over_the_size_limit() -> None:
    long = []
    for module, path in MODULES.items():
        if module in EXEMPT_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {length}")
    assert long == []
