"""The checkpoint repository: acquisition checkpoints on disk, and scoring tasks with them.

Shared by the web process (``/predict`` for never-scored tasks) and the workers (pool chunks), so
both turn a text into the same Label Studio result, confidence and uncertainty. A checkpoint is
``MODEL_DIR/<project>/<version>/``: the transformers files written atomically by
`TransformerModel.save`, plus the label config it was trained for, the fitted query strategy
(``strategy.json`` + ``strategy.npz``, never a pickle) and provenance (``backend_meta.json``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.strategies import QueryStrategy, load_strategy, save_strategy
from backend.engine.io import atomic_write_json, atomic_write_text
from backend.engine.models.transformer import SCHEMA_FILE, TrainingConfig, TransformerModel
from backend.engine.proxy import FEATURE_DTYPE
from backend.engine.types import FloatArray, TaskType
from backend.labeling import (
    LabelConfig,
    MissingTextFieldError,
    classification_results,
    parse_label_config,
    tagging_results,
    task_text,
    text_to_example,
)
from backend.service.fast_versions import FastCheckpoint, TaggingFastCheckpoint, is_tagging_version
from backend.service.features import FEATURES_DIR, EncoderCache
from backend.service.records import ScoreEntry

log = logging.getLogger(__name__)

LABEL_CONFIG_FILE = "label_config.xml"
BACKEND_META_FILE = "backend_meta.json"
LEGACY_STRATEGY_FILE = "strategy.pkl"  # written by backends before strategies were saved as JSON
# A task with no usable text gets an empty result that sorts last (nothing to learn from it).
NO_TEXT_ENTRY = ScoreEntry([], 1.0, 0.0)
FAST_PREFIX = "fast-"  # versions made by the fast path (a proxy head), not a fine-tune


class CheckpointMissingError(FileNotFoundError):
    """The checkpoint of a published version is not on this machine's MODEL_DIR (not shared?)."""


class OutdatedCheckpointError(CheckpointMissingError):
    """The checkpoint was written by an older backend (a pickled strategy); it is never unpickled:
    the project has to be retrained."""


def checkpoint_dir(model_dir: Path, project_id: int, version: str) -> Path:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid model version {version!r}")
    return Path(model_dir) / str(int(project_id)) / version


def write_checkpoint_extras(
    directory: Path, config: LabelConfig, label_config_xml: str, strategy: QueryStrategy, meta: dict[str, Any]
) -> None:
    """Next to the model files: the label config it was trained for, the fitted strategy, and
    provenance. Written before the version is published, so no reader sees it half-written."""
    atomic_write_text(directory / LABEL_CONFIG_FILE, label_config_xml)
    save_strategy(strategy, directory)
    atomic_write_json(directory / BACKEND_META_FILE, {**meta, "control_name": config.control_name})


def fast_seq(name: str) -> int | None:
    """The update number in a fast version's folder name (``fast-<seq>-...``, or the temporary
    ``.fast-<seq>-...tmp-...`` folder it is written in); None for any other folder."""
    base = name.lstrip(".")
    if not base.startswith(FAST_PREFIX):
        return None
    head = base[len(FAST_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def prune_checkpoints(model_dir: Path, project_id: int, keep: Collection[str], published_fast_seq: int) -> list[str]:
    """Delete the project's checkpoint folders not named in `keep` (and leftover temp folders);
    the pool features' folder stays, and so does every fast version of an update after
    `published_fast_seq` (being written or about to be published: deleting it then left the
    project serving a version with no folder)."""
    root = Path(model_dir) / str(int(project_id))
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        if not child.is_dir() or child.name in keep or child.name == FEATURES_DIR:
            continue
        seq = fast_seq(child.name)
        if seq is not None and seq > published_fast_seq:
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child.name)
    return removed


def _text_of(task: dict[str, Any], config: LabelConfig) -> str | None:
    try:
        return task_text(task, config)
    except MissingTextFieldError:
        return None


@dataclass
class LoadedCheckpoint:
    project_id: int
    version: str
    model: TransformerModel
    config: LabelConfig
    strategy: QueryStrategy
    lock: threading.Lock

    def score(self, tasks: Sequence[dict[str, Any]]) -> tuple[list[ScoreEntry], int]:
        """One entry per Label Studio task, in order (see `score_texts`)."""
        return self.score_texts([_text_of(t, self.config) if isinstance(t, dict) else None for t in tasks])

    def score_texts(self, texts: Sequence[str | None]) -> tuple[list[ScoreEntry], int]:
        """One entry per text, in order, and how many texts the model ran on (the usable ones);
        the model runs once over the batch."""
        entries, ran, _ = self.score_and_encode(texts, with_features=False)
        return entries, ran

    def score_and_encode(
        self, texts: Sequence[str | None], with_features: bool = True
    ) -> tuple[list[ScoreEntry], int, FloatArray | None]:
        """`score_texts`, plus the proxy's features from the same forward pass (aligned features:
        float16, a zero row for a text the model could not run on, as `FeatureEncoder` stores them)."""
        examples, positions = [], []
        for pos, text in enumerate(texts):
            example = text_to_example(text, self.config) if text is not None else None
            if example is not None:
                examples.append(example)
                positions.append(pos)
        entries = [NO_TEXT_ENTRY] * len(texts)
        features = np.zeros((len(texts), self.model.model.config.hidden_size), FEATURE_DTYPE) if with_features else None
        if not examples:
            return entries, 0, features
        with self.lock:  # one inference at a time per model: threads would only fight over cores
            preds = self.model.predict(examples, return_embeddings=self.strategy.needs_embeddings,
                                       return_features=with_features)
        scores = self.strategy.score(preds)
        for i, pos in enumerate(positions):
            if self.config.task_type is TaskType.CLASSIFICATION:
                result = classification_results(preds.probs[i], self.config)
            else:
                result = tagging_results(examples[i], preds.probs[i], self.config)  # type: ignore[arg-type]
            entries[pos] = ScoreEntry(result, float(scores.confidence[i]), float(scores.uncertainty[i]))
        if features is not None and preds.features is not None:
            features[positions] = preds.features
        return entries, len(examples), features


def _training_config(directory: Path, device: str) -> TrainingConfig:
    """The training config saved with the model (`TrainingConfig.from_dict`, as
    `TransformerModel.load` reads it), on this process's device."""
    saved = json.loads((directory / SCHEMA_FILE).read_text(encoding="utf-8")).get("training", {})
    return replace(TrainingConfig.from_dict(saved), device=device)


def _load_checkpoint_strategy(directory: Path, project_id: int, version: str) -> QueryStrategy:
    try:
        return load_strategy(directory)
    except FileNotFoundError:
        if (directory / LEGACY_STRATEGY_FILE).exists():
            raise OutdatedCheckpointError(
                f"checkpoint for project {project_id} version {version} was written by an older version of "
                f"the backend ({LEGACY_STRATEGY_FILE}, which is never unpickled); retrain the project: press "
                "Start training in Label Studio"
            ) from None
        raise CheckpointMissingError(f"checkpoint for project {project_id} version {version} at {directory} "
                                     "has no saved strategy; retrain the project (Start training)") from None


def load_checkpoint(directory: Path, project_id: int, version: str, device: str) -> LoadedCheckpoint:
    """Load a checkpoint written by the training job; raises `CheckpointMissingError` (or
    `OutdatedCheckpointError`) saying what to do."""
    if not (directory / LABEL_CONFIG_FILE).is_file():
        raise CheckpointMissingError(
            f"checkpoint for project {project_id} version {version} not found at {directory}; "
            "the web process and the workers must share MODEL_DIR"
        )
    strategy = _load_checkpoint_strategy(directory, project_id, version)
    meta = json.loads((directory / BACKEND_META_FILE).read_text(encoding="utf-8"))
    config = parse_label_config((directory / LABEL_CONFIG_FILE).read_text(encoding="utf-8"),
                                meta.get("control_name") or None)
    model = TransformerModel.load(directory, _training_config(directory, device))
    return LoadedCheckpoint(project_id, version, model, config, strategy, threading.Lock())


AnyCheckpoint = LoadedCheckpoint | FastCheckpoint | TaggingFastCheckpoint


class CheckpointCache:
    """Keeps the last few loaded checkpoints per process; loads lazily, once, under a lock."""

    def __init__(self, model_dir: Path, size: int = 2, device: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.size = size
        self.device = device
        self._items: OrderedDict[tuple[int, str], AnyCheckpoint] = OrderedDict()
        self._lock = threading.Lock()
        self.encoders: EncoderCache | None = None  # for fast versions (set by the runtime)

    def get(self, project_id: int, version: str) -> AnyCheckpoint:
        key = (int(project_id), version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            start = time.perf_counter()
            directory = checkpoint_dir(self.model_dir, *key)
            loaded: AnyCheckpoint
            if version.startswith(FAST_PREFIX):
                if not (directory / "scores.npz").is_file():
                    raise CheckpointMissingError(f"fast version {version} of project {project_id} not found at "
                                                 f"{directory}; the web process and the workers must share MODEL_DIR")
                kind = TaggingFastCheckpoint if is_tagging_version(directory) else FastCheckpoint
                fast = kind.load(directory, *key)
                fast.encoders = self.encoders
                loaded = fast
            else:
                loaded = load_checkpoint(directory, *key, self.device)
            log.info("loaded project %s version %s in %.2fs (pid %s)", project_id, version,
                     time.perf_counter() - start, os.getpid())
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return loaded

    def get_finetuned(self, project_id: int, version: str) -> LoadedCheckpoint:
        """`get` for a version the training pipeline wrote (a fine-tune); a fast version is a ValueError."""
        loaded = self.get(project_id, version)
        if not isinstance(loaded, LoadedCheckpoint):
            raise ValueError(f"version {version} of project {project_id} is a fast version, not a fine-tune")
        return loaded
