"""Pool features for the fast path, on disk beside the checkpoints.

``MODEL_DIR/<project>/features/<encoder key>/shard-*.npz``: each shard holds task ids (int64) and
their mean-pooled, L2-normalised float16 features (`backend.engine.proxy.FeatureEncoder`), written
atomically by one chunk job (or by a fast update encoding a few new tasks on demand). Reading
concatenates the shards (the newest shard wins for a task written twice) and is cached per process
until the shard listing changes, so a fast update reads 10k x 384 features once, not per event.

The encoder key names what produced the features: ``base-<name>`` for a pretrained checkpoint
(FEATURE_MODEL, else ACQUISITION_MODEL), ``ft-<version>`` for a fine-tuned acquisition checkpoint
(aligned features), ``words-<name>`` for a tagging project's per-word features (``words-ft-<version>``
from a fine-tuned tagger's encoder)
(`backend.engine.word_features.WordFeatures`: float16 word vectors, shape bytes, word counts per
task; 14.9 kB per WNUT-16 sentence at 384 dims, 1.5 GB per 100k sentences of ~19.5 words).
A project's complete set is named in its state (``ProjectState.feature_key``).
"""
from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.engine.io import atomic_file
from backend.engine.proxy import FEATURE_DTYPE, FeatureEncoder
from backend.engine.types import BoolArray, FloatArray, IndexArray, TaskType
from backend.engine.word_features import WordFeatures, offsets_of

FEATURES_DIR = "features"  # the reserved folder in MODEL_DIR/<project>/ (never a version name)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def base_key(model: str) -> str:
    """The key of features from a pretrained encoder: readable and unique per name/path."""
    tail = _SAFE.sub("_", Path(model.rstrip("/")).name or model)[:40]
    return f"base-{tail}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"


def word_key(model: str) -> str:
    """The key of a tagging project's per-word features from a pretrained encoder."""
    return "words-" + base_key(model).removeprefix("base-")


def is_word_key(key: str) -> bool:
    return key.startswith("words-")


def finetuned_key(version: str, task_type: TaskType | None = None) -> str:
    """The key of features from the fine-tuned checkpoint `version` (per word for tagging)."""
    return f"{'words-' if task_type is TaskType.TAGGING else ''}ft-{version}"


def features_root(model_dir: Path, project_id: int) -> Path:
    return Path(model_dir) / str(int(project_id)) / FEATURES_DIR


class _TaskIndex:
    """Rows of tasks in a feature set whose `ids` are sorted."""

    ids: IndexArray

    def rows(self, task_ids: list[int]) -> tuple[IndexArray, BoolArray]:
        """(row index per task, found mask): -1 where the task has no features."""
        wanted = np.asarray(task_ids, dtype=np.int64)
        if len(self.ids) == 0 or len(wanted) == 0:
            return np.full(len(wanted), -1, dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        pos = np.clip(np.searchsorted(self.ids, wanted), 0, len(self.ids) - 1)
        found = self.ids[pos] == wanted
        return np.where(found, pos, -1), found

    def missing(self, task_ids: list[int]) -> list[int]:
        _, found = self.rows(task_ids)
        return [t for t, ok in zip(task_ids, found) if not ok]


@dataclass
class FeatureSet(_TaskIndex):
    """All features one encoder produced for a project: `ids` sorted, `matrix` rows aligned."""

    ids: IndexArray  # (n,) int64, ascending
    matrix: FloatArray  # (n, dim) float16


@dataclass
class WordFeatureSet(_TaskIndex):
    """A tagging project's per-word features: `ids` sorted, sentence i of `words` is task ids[i]."""

    ids: IndexArray
    words: WordFeatures


class FeatureStore:
    """Shards of one project's features per encoder key; reads cached per process."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self._cache: dict[tuple[int, str], tuple[tuple[str, ...], FeatureSet]] = {}
        self._word_cache: dict[tuple[int, str], tuple[tuple[str, ...], WordFeatureSet]] = {}
        self._lock = threading.Lock()

    def directory(self, project_id: int, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid feature key {key!r}")
        return features_root(self.model_dir, project_id) / key

    def write(self, project_id: int, key: str, task_ids: list[int], features: FloatArray) -> Path | None:
        """Add one shard (atomically: readers see all of it or none)."""
        if len(task_ids) == 0:
            return None
        if len(task_ids) != len(features):
            raise ValueError(f"{len(task_ids)} task ids for {len(features)} feature rows")
        target = self.directory(project_id, key) / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, ids=np.asarray(task_ids, dtype=np.int64), features=np.asarray(features, FEATURE_DTYPE))
        return target

    def write_words(self, project_id: int, key: str, task_ids: list[int], features: WordFeatures) -> Path | None:
        """Add one shard of per-word features (atomically)."""
        if len(task_ids) == 0:
            return None
        if len(task_ids) != len(features):
            raise ValueError(f"{len(task_ids)} task ids for {len(features)} sentences")
        target = self.directory(project_id, key) / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, ids=np.asarray(task_ids, dtype=np.int64), words=features.matrix,
                         shapes=features.shapes, lengths=features.lengths)
        return target

    def load_words(self, project_id: int, key: str) -> WordFeatureSet:
        """Every per-word feature written under `key` (an empty set when none); later shards win."""
        directory = self.directory(project_id, key)
        shards = tuple(sorted(p.name for p in directory.glob("shard-*.npz"))) if directory.is_dir() else ()
        with self._lock:
            cached = self._word_cache.get((int(project_id), key))
            if cached is not None and cached[0] == shards:
                return cached[1]
        ids_parts, parts, mtimes = [], [], []
        for name in shards:
            try:
                with np.load(directory / name, allow_pickle=False) as data:
                    ids_parts.append(data["ids"].astype(np.int64))
                    parts.append(WordFeatures(data["words"].astype(FEATURE_DTYPE), data["shapes"].astype(np.uint8),
                                              offsets_of(data["lengths"])))
                mtimes.append((directory / name).stat().st_mtime_ns)
            except FileNotFoundError:  # pruned meanwhile: read what is left
                continue
        if ids_parts:
            order = np.argsort(mtimes, kind="stable")
            ids = np.concatenate([ids_parts[i] for i in order])
            words = WordFeatures.concat([parts[i] for i in order]) if len(order) > 1 else parts[0]
            uniq, first_rev = np.unique(ids[::-1], return_index=True)
            keep = len(ids) - 1 - first_rev  # the last occurrence of each id, in id order
            result = WordFeatureSet(uniq, words if np.array_equal(keep, np.arange(len(ids))) else words.take(keep))
        else:
            result = WordFeatureSet(np.zeros(0, np.int64), WordFeatures.empty(0))
        with self._lock:
            self._word_cache[(int(project_id), key)] = (shards, result)
        return result

    def load(self, project_id: int, key: str) -> FeatureSet:
        """Every feature written under `key` (an empty set when none)."""
        directory = self.directory(project_id, key)
        shards = tuple(sorted(p.name for p in directory.glob("shard-*.npz"))) if directory.is_dir() else ()
        with self._lock:
            cached = self._cache.get((int(project_id), key))
            if cached is not None and cached[0] == shards:
                return cached[1]
        ids_parts, feat_parts, mtimes = [], [], []
        for name in shards:
            try:
                with np.load(directory / name, allow_pickle=False) as data:
                    ids_parts.append(data["ids"].astype(np.int64))
                    feat_parts.append(data["features"].astype(FEATURE_DTYPE))
                mtimes.append((directory / name).stat().st_mtime_ns)
            except FileNotFoundError:  # pruned meanwhile: read what is left
                continue
        if ids_parts:
            order = np.argsort(mtimes, kind="stable")  # later shards win for a task written twice
            ids = np.concatenate([ids_parts[i] for i in order])
            matrix = np.concatenate([feat_parts[i] for i in order])
            # keep the last occurrence of each id
            rev_ids = ids[::-1]
            uniq, first_rev = np.unique(rev_ids, return_index=True)
            keep = len(ids) - 1 - first_rev
            result = FeatureSet(uniq, matrix[keep])
        else:
            result = FeatureSet(np.zeros(0, np.int64), np.zeros((0, 0), FEATURE_DTYPE))
        with self._lock:
            self._cache[(int(project_id), key)] = (shards, result)
        return result

    def drop_others(self, project_id: int, keep: set[str]) -> list[str]:
        """Delete the project's feature sets not named in `keep` (superseded encoders)."""
        import shutil

        root = features_root(self.model_dir, project_id)
        removed = []
        if root.is_dir():
            for child in root.iterdir():
                if child.is_dir() and child.name not in keep:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child.name)
        return removed


class EncoderCache:
    """One loaded `FeatureEncoder` per source per process (loading MiniLM takes ~1 s)."""

    def __init__(self, max_length: int, device: str, batch_size: int | None = None) -> None:
        self.max_length, self.device, self.batch_size = max_length, device, batch_size
        self._items: dict[str, FeatureEncoder] = {}
        self._lock = threading.Lock()

    def get(self, source: str) -> FeatureEncoder:
        with self._lock:
            if source not in self._items:
                if len(self._items) >= 2:
                    self._items.pop(next(iter(self._items)))
                self._items[source] = FeatureEncoder(source, max_length=self.max_length, device=self.device,
                                                     batch_size=self.batch_size)
            return self._items[source]
