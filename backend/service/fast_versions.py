"""A fast version on disk: the proxy head that made it and its scores of the whole pool.

``MODEL_DIR/<project>/fast-<n>-.../``: ``proxy_head.npz/.json`` (`ProxyHead.save`), ``scores.npz``
(task ids, float16 class probabilities, confidence and uncertainty per pool task), the label config
and ``backend_meta.json`` (the feature encoder). Scores live here rather than as one Redis entry
per task: a 100k-task pool is ~1 MB of arrays written once, and /predict builds the Label Studio
result only for the tasks it is asked about. Tasks the pool did not hold (created since) are
encoded and scored by the head on demand, so /predict always answers.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.order import proxy_strategy, score_probabilities
from backend.engine.acquisition.strategies import QueryStrategy
from backend.engine.io import atomic_directory
from backend.engine.proxy import ProxyHead
from backend.engine.token_head import TagOutputs, TokenHead, TokenScorer
from backend.engine.types import FloatArray, IndexArray, TaggingExample
from backend.engine.word_features import WordEncoder, offsets_of
from backend.labeling import (
    LabelConfig,
    MissingTextFieldError,
    classification_results,
    decoded_tagging_results,
    parse_label_config,
    task_text,
    text_to_example,
)
from backend.service.features import EncoderCache
from backend.service.records import ScoreEntry

SCORES_FILE = "scores.npz"
SHOWN_FILE = "shown.npz"  # tagging: the decoded tags of the sentences pushed to Label Studio
META_FILE = "backend_meta.json"
LABEL_CONFIG_FILE = "label_config.xml"
NO_TEXT = ScoreEntry([], 1.0, 0.0)  # same as checkpoints.NO_TEXT_ENTRY: sorts last


def entry(probs_row: FloatArray, confidence: float, uncertainty: float, config: LabelConfig) -> ScoreEntry:
    return ScoreEntry(classification_results(np.asarray(probs_row, np.float32), config), float(confidence),
                      float(uncertainty))


def save_fast_version(
    directory: Path, head: ProxyHead, label_config_xml: str, task_ids: IndexArray, probs: FloatArray,
    confidence: FloatArray, uncertainty: FloatArray, meta: dict[str, Any],
) -> None:
    with atomic_directory(directory) as tmp:
        head.save(tmp)
        order = np.argsort(task_ids, kind="stable")
        np.savez(tmp / SCORES_FILE, ids=np.asarray(task_ids, np.int64)[order],
                 probs=np.asarray(probs, np.float16)[order], confidence=confidence[order],
                 uncertainty=uncertainty[order])
        (tmp / LABEL_CONFIG_FILE).write_text(label_config_xml, encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


@dataclass
class FastCheckpoint:
    """A loaded fast version: answers /predict from its pool scores, encodes the rest."""

    project_id: int
    version: str
    head: ProxyHead
    config: LabelConfig
    strategy: QueryStrategy
    ids: IndexArray
    probs: FloatArray
    confidence: FloatArray
    uncertainty: FloatArray
    encoder_source: str
    encoders: EncoderCache | None = None  # set by the cache that loads it
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, directory: Path, project_id: int, version: str) -> FastCheckpoint:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        config = parse_label_config((directory / LABEL_CONFIG_FILE).read_text(encoding="utf-8"),
                                    meta.get("control_name") or None)
        with np.load(directory / SCORES_FILE, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("ids", "probs", "confidence", "uncertainty")}
        return cls(project_id, version, ProxyHead.load(directory), config, proxy_strategy(meta.get("strategy", "auto")),
                   arrays["ids"], arrays["probs"], arrays["confidence"], arrays["uncertainty"],
                   str(meta["encoder"]))

    def lookup(self, task_ids: Sequence[int]) -> dict[int, ScoreEntry]:
        """Entries for the tasks the pool scores hold."""
        wanted = np.asarray(list(task_ids), np.int64)
        if len(self.ids) == 0 or len(wanted) == 0:
            return {}
        pos = np.clip(np.searchsorted(self.ids, wanted), 0, len(self.ids) - 1)
        out = {}
        for t, p in zip(wanted.tolist(), pos.tolist()):
            if self.ids[p] == t:
                out[t] = entry(self.probs[p], self.confidence[p], self.uncertainty[p], self.config)
        return out

    def score(self, tasks: Sequence[dict[str, Any]]) -> tuple[list[ScoreEntry], int]:
        """One entry per task, in order, and how many texts the encoder ran on."""
        ids = [t.get("id") if isinstance(t, dict) else None for t in tasks]
        known = self.lookup([int(i) for i in ids if isinstance(i, int)])
        entries: list[ScoreEntry] = [NO_TEXT] * len(tasks)
        texts, positions = [], []
        for pos, (task, task_id) in enumerate(zip(tasks, ids)):
            if isinstance(task_id, int) and task_id in known:
                entries[pos] = known[task_id]
                continue
            try:
                text = task_text(task, self.config) if isinstance(task, dict) else ""
            except MissingTextFieldError:
                text = ""
            if text.strip():
                texts.append(text)
                positions.append(pos)
        if texts:
            if self.encoders is None:
                raise RuntimeError("no encoder cache attached to the fast version")
            with self.lock:
                features = self.encoders.get(self.encoder_source).encode(texts)
            probs = self.head.predict_proba(features)
            conf, unc = score_probabilities(probs, self.config.schema.multi_label, self.strategy)
            for i, pos in enumerate(positions):
                entries[pos] = entry(probs[i], conf[i], unc[i], self.config)
        return entries, len(texts)


# ------------------------------------------------------------------------------------ tagging
def save_tagging_version(
    directory: Path, head: TokenHead, label_config_xml: str, task_ids: IndexArray, confidence: FloatArray,
    uncertainty: FloatArray, shown_ids: IndexArray, shown: TagOutputs, meta: dict[str, Any],
) -> None:
    """A tagging fast version: the token head, every scored pool task's confidence and
    uncertainty, and the decoded tags of the sentences shown (the rest decode on demand)."""
    with atomic_directory(directory) as tmp:
        head.save(tmp)
        order = np.argsort(task_ids, kind="stable")
        np.savez(tmp / SCORES_FILE, ids=np.asarray(task_ids, np.int64)[order], confidence=confidence[order],
                 uncertainty=uncertainty[order])
        np.savez(tmp / SHOWN_FILE, ids=np.asarray(shown_ids, np.int64), tags=shown.tags, tag_probs=shown.tag_probs,
                 lengths=np.diff(shown.offsets))
        (tmp / LABEL_CONFIG_FILE).write_text(label_config_xml, encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps({**meta, "task": "tagging"}, indent=2), encoding="utf-8")


def is_tagging_version(directory: Path) -> bool:
    return (directory / SHOWN_FILE).is_file()


def stale_tagging_scores(directory: Path, feature_key: str, ids: IndexArray) -> tuple[FloatArray, FloatArray] | None:
    """A tagging fast version's (confidence, uncertainty) for each of `ids` (NaN where it scored no
    such task), when it ordered the same feature set (`feature_key`): the stale scores a UPS
    re-score keeps. None when there is no such version."""
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("feature_key") != feature_key or not (directory / SHOWN_FILE).is_file():
            return None
        with np.load(directory / SCORES_FILE, allow_pickle=False) as data:
            known_ids, confidence, uncertainty = data["ids"], data["confidence"], data["uncertainty"]
    except (OSError, ValueError, KeyError):
        return None
    wanted = np.asarray(ids, np.int64)
    out_confidence = np.full(len(wanted), np.nan, np.float32)
    out_uncertainty = np.full(len(wanted), np.nan, np.float32)
    if len(known_ids):
        pos = np.clip(np.searchsorted(known_ids, wanted), 0, len(known_ids) - 1)
        found = known_ids[pos] == wanted
        out_confidence[found], out_uncertainty[found] = confidence[pos[found]], uncertainty[pos[found]]
    return out_confidence, out_uncertainty


@dataclass
class TaggingFastCheckpoint:
    """A loaded tagging fast version: answers /predict with the head's spans (stored for the
    sentences shown, decoded on demand for the rest) and the pool score of each task."""

    project_id: int
    version: str
    head: TokenHead
    config: LabelConfig
    ids: IndexArray
    confidence: FloatArray
    uncertainty: FloatArray
    shown: dict[int, tuple[IndexArray, FloatArray]]
    encoder_source: str
    encoders: EncoderCache | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, directory: Path, project_id: int, version: str) -> TaggingFastCheckpoint:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        config = parse_label_config((directory / LABEL_CONFIG_FILE).read_text(encoding="utf-8"),
                                    meta.get("control_name") or None)
        with np.load(directory / SCORES_FILE, allow_pickle=False) as data:
            ids, confidence, uncertainty = data["ids"], data["confidence"], data["uncertainty"]
        with np.load(directory / SHOWN_FILE, allow_pickle=False) as data:
            offsets = offsets_of(data["lengths"])
            shown = {int(t): (data["tags"][offsets[k]:offsets[k + 1]], data["tag_probs"][offsets[k]:offsets[k + 1]])
                     for k, t in enumerate(data["ids"].tolist())}
        return cls(project_id, version, TokenHead.load(directory), config, ids, confidence, uncertainty, shown,
                   str(meta["encoder"]))

    def _pool_score(self, task_id: int) -> tuple[float, float] | None:
        if len(self.ids) == 0:
            return None
        p = int(np.clip(np.searchsorted(self.ids, task_id), 0, len(self.ids) - 1))
        return (float(self.confidence[p]), float(self.uncertainty[p])) if self.ids[p] == task_id else None

    def score(self, tasks: Sequence[dict[str, Any]]) -> tuple[list[ScoreEntry], int]:
        """One entry per task, in order, and how many sentences the encoder ran on."""
        entries: list[ScoreEntry] = [NO_TEXT] * len(tasks)
        todo: list[tuple[int, TaggingExample, tuple[float, float] | None]] = []
        for pos, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, dict) else None
            try:
                text = task_text(task, self.config) if isinstance(task, dict) else ""
            except MissingTextFieldError:
                text = ""
            example = text_to_example(text, self.config)
            if not isinstance(example, TaggingExample):
                continue
            known = self._pool_score(task_id) if isinstance(task_id, int) else None
            stored = self.shown.get(task_id) if isinstance(task_id, int) else None
            if stored is not None and len(stored[0]) == len(example.words) and known is not None:
                entries[pos] = ScoreEntry(decoded_tagging_results(example, *stored, self.config), *known)
            else:
                todo.append((pos, example, known))
        if todo:
            if self.encoders is None:
                raise RuntimeError("no encoder cache attached to the fast version")
            with self.lock:
                features = WordEncoder(self.encoders.get(self.encoder_source)).encode([e.words for _, e, _ in todo])
            scores = TokenScorer(self.head).score_pool(features)
            decoded = scores.outputs.decode()
            for k, (pos, example, known) in enumerate(todo):
                confidence, uncertainty = known or (float(scores.confidence[k]), float(scores.uncertainty[k]))
                entries[pos] = ScoreEntry(decoded_tagging_results(example, *decoded.sentence(k), self.config),
                                          confidence, uncertainty)
        return entries, len(todo)
