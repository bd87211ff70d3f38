"""Acquisition checkpoints on disk and scoring tasks with them.

Shared by the web process (``/predict`` for never-scored tasks) and the workers (pool chunks), so
both turn a task into the same Label Studio result, confidence and uncertainty. A checkpoint is
``MODEL_DIR/<project>/<version>/``: the transformers files written atomically by
`TransformerModel.save`, plus the label config it was trained for and the fitted query strategy.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.engine.acquisition.strategies import QueryStrategy
from backend.engine.models.transformer import SCHEMA_FILE, TrainingConfig, TransformerModel
from backend.engine.types import TaskType
from backend.labeling import (
    LabelConfig,
    classification_results,
    parse_label_config,
    tagging_results,
    unlabeled_examples,
)
from backend.service.store import ScoreEntry

log = logging.getLogger(__name__)

LABEL_CONFIG_FILE = "label_config.xml"
BACKEND_META_FILE = "backend_meta.json"
STRATEGY_FILE = "strategy.pkl"
# A task with no usable text gets an empty result that sorts last (nothing to learn from it).
NO_TEXT_ENTRY = ScoreEntry([], 1.0, 0.0)


class CheckpointMissingError(FileNotFoundError):
    """The checkpoint of a published version is not on this machine's MODEL_DIR (not shared?)."""


def checkpoint_dir(model_dir: Path, project_id: int, version: str) -> Path:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid model version {version!r}")
    return Path(model_dir) / str(int(project_id)) / version


def write_checkpoint_extras(
    directory: Path, config: LabelConfig, label_config_xml: str, strategy: QueryStrategy, meta: dict
) -> None:
    """Next to the model files: the label config it was trained for, the fitted strategy, and
    provenance. Written before the version is published, so no reader sees it half-written."""
    (directory / LABEL_CONFIG_FILE).write_text(label_config_xml, encoding="utf-8")
    with open(directory / STRATEGY_FILE, "wb") as fh:
        pickle.dump(strategy, fh)
    (directory / BACKEND_META_FILE).write_text(
        json.dumps({**meta, "control_name": config.control_name}, indent=2, default=str), encoding="utf-8"
    )


def prune_checkpoints(model_dir: Path, project_id: int, keep: Sequence[str]) -> list[str]:
    """Delete the project's checkpoint folders not named in `keep` (and leftover temp folders)."""
    root = Path(model_dir) / str(int(project_id))
    removed = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


@dataclass
class LoadedCheckpoint:
    project_id: int
    version: str
    model: TransformerModel
    config: LabelConfig
    strategy: QueryStrategy
    lock: threading.Lock

    def score(self, tasks: Sequence[dict]) -> tuple[list[ScoreEntry], int]:
        """One entry per task, in order, and how many tasks the model ran on (those with text);
        the model runs once over the batch."""
        examples, positions = [], []
        for pos, task in enumerate(tasks):
            report = unlabeled_examples([task], self.config)
            if report.examples:
                examples.append(report.examples[0])
                positions.append(pos)
        entries = [NO_TEXT_ENTRY] * len(tasks)
        if not examples:
            return entries, 0
        with self.lock:  # one inference at a time per model: threads would only fight over cores
            preds = self.model.predict(examples, return_embeddings=self.strategy.needs_embeddings)
        scores = self.strategy.score(preds)
        for i, pos in enumerate(positions):
            if self.config.task_type is TaskType.CLASSIFICATION:
                result = classification_results(preds.probs[i], self.config)
            else:
                result = tagging_results(examples[i], preds.probs[i], self.config)  # type: ignore[arg-type]
            entries[pos] = ScoreEntry(result, float(scores.confidence[i]), float(scores.uncertainty[i]))
        return entries, len(examples)


class CheckpointCache:
    """Keeps the last few loaded checkpoints per process; loads lazily, once, under a lock."""

    def __init__(self, model_dir: Path, size: int = 2, device: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.size = size
        self.device = device
        self._items: OrderedDict[tuple[int, str], LoadedCheckpoint] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project_id: int, version: str) -> LoadedCheckpoint:
        key = (int(project_id), version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loaded = self._load(*key)
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return loaded

    def _load(self, project_id: int, version: str) -> LoadedCheckpoint:
        directory = checkpoint_dir(self.model_dir, project_id, version)
        if not (directory / LABEL_CONFIG_FILE).is_file():
            raise CheckpointMissingError(
                f"checkpoint for project {project_id} version {version} not found at {directory}; "
                "the web process and the workers must share MODEL_DIR"
            )
        start = time.perf_counter()
        meta = json.loads((directory / BACKEND_META_FILE).read_text(encoding="utf-8"))
        config = parse_label_config((directory / LABEL_CONFIG_FILE).read_text(encoding="utf-8"),
                                    meta.get("control_name") or None)
        saved = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8")).get("training", {})
        known = {k: v for k, v in saved.items() if k in TrainingConfig.__dataclass_fields__}
        model = TransformerModel.load(directory, TrainingConfig(**{**known, "device": self.device}))
        with open(directory / STRATEGY_FILE, "rb") as fh:
            strategy = pickle.load(fh)  # our own file, written by the training job
        log.info("loaded project %s version %s in %.2fs (pid %s)", project_id, version,
                 time.perf_counter() - start, os.getpid())
        return LoadedCheckpoint(project_id, version, model, config, strategy, threading.Lock())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
