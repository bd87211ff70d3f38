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
from backend.engine.types import FloatArray, IndexArray
from backend.labeling import LabelConfig, MissingTextFieldError, classification_results, parse_label_config, task_text
from backend.service.features import EncoderCache
from backend.service.records import ScoreEntry

SCORES_FILE = "scores.npz"
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
