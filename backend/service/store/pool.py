"""Task data in Redis: the cached unlabeled pool (``P:project:<id>:pool``) and the scores each
version holds (``P:project:<id>:pred:<version>``). Kept apart from the project/training state so
each file reads as one concern; `ProjectStore` mixes it in."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from backend.service.records import UNTRAINED, ScoreEntry
from backend.service.store.connection import hash_fields
from backend.service.store.keys import StoreBase

POOL_WRITE_BATCH = 5000  # tasks per HSET while a pool is replaced (bounded command size)


class PoolAndScores(StoreBase):
    """Pool cache and per-version scores."""

    # ------------------------------------------------------------------ scores
    def get_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> dict[int, ScoreEntry]:
        """Entries `version` holds for these tasks (missing ones left out); one round trip."""
        raw = self.get_raw_scores(project_id, version, task_ids)
        return {int(t): ScoreEntry.from_json(v) for t, v in zip(task_ids, raw, strict=True) if v is not None}

    def get_raw_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> list[str | None]:
        """The stored JSON per task (None where `version` never scored it), for callers that pass it on."""
        if not task_ids:
            return []
        return list(self._text.hmget(self._pred_key(project_id, version), [int(t) for t in task_ids]))

    def put_scores(self, project_id: int, version: str, entries: Mapping[int, ScoreEntry | str]) -> None:
        if not entries:
            return
        mapping = {int(t): (e if isinstance(e, str) else e.to_json()) for t, e in entries.items()}
        self.r.hset(self._pred_key(project_id, version), mapping=hash_fields(mapping))

    def uncertainties(self, project_id: int, version: str, task_ids: Sequence[int]) -> npt.NDArray[np.float64]:
        """Stale uncertainty per task for UPS; NaN where `version` never scored the task."""
        out = np.full(len(task_ids), np.nan, dtype=np.float64)
        if version == UNTRAINED or not task_ids:
            return out
        for i, raw in enumerate(self.get_raw_scores(project_id, version, task_ids)):
            if raw is not None:
                u = json.loads(raw).get("u")
                out[i] = np.nan if u is None else float(u)
        return out

    def scored_count(self, project_id: int, version: str) -> int:
        return int(self.r.hlen(self._pred_key(project_id, version)))

    def add_model_scored(self, project_id: int, n: int) -> None:
        """Count `n` more tasks the model ran on (``model_scored_total``, all paths)."""
        self.r.hincrby(self.key(project_id), "model_scored_total", int(n))

    # ------------------------------------------------------------------ pool
    def _pool_key(self, project_id: int) -> str:
        return self.key(project_id, "pool")

    def pool_ids(self, project_id: int) -> list[int]:
        return sorted(int(t) for t in self._text.hkeys(self._pool_key(project_id)))

    def pool_size(self, project_id: int) -> int:
        return int(self.r.hlen(self._pool_key(project_id)))

    def pool_exists(self, project_id: int) -> bool:
        return bool(self.r.exists(self._pool_key(project_id)))

    def pool_texts(self, project_id: int, task_ids: Sequence[int]) -> list[str | None]:
        if not task_ids:
            return []
        return list(self._text.hmget(self._pool_key(project_id), [int(t) for t in task_ids]))

    def pool_replace(self, project_id: int, texts: Mapping[int, str], value_key: str, iteration: int) -> None:
        """Swap in a freshly listed pool (atomically: readers never see half of it)."""
        key = self._pool_key(project_id)
        tmp = f"{key}:tmp"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        items = [(int(t), text) for t, text in texts.items()]
        for start in range(0, len(items), POOL_WRITE_BATCH):
            pipe.hset(tmp, mapping=dict(items[start : start + POOL_WRITE_BATCH]))
        if items:
            pipe.rename(tmp, key)
        else:
            pipe.delete(key)
        pipe.hset(self.key(project_id), mapping={
            "pool_value_key": value_key, "pool_stale": "0", "pool_refreshed_iteration": iteration,
        })
        pipe.execute()

    def pool_add(self, project_id: int, texts: Mapping[int, str]) -> None:
        """Add new tasks to the cached pool; without a cache, nothing (the next training lists the pool)."""
        if texts and self.pool_exists(project_id):
            self.r.hset(self._pool_key(project_id), mapping={int(t): v for t, v in texts.items()})

    def pool_remove(self, project_id: int, task_ids: Iterable[int]) -> int:
        ids = [int(t) for t in task_ids]
        return int(self.r.hdel(self._pool_key(project_id), *ids)) if ids else 0

    def mark_pool_stale(self, project_id: int) -> None:
        """The next training lists the pool again instead of trusting the cache."""
        self.r.hset(self.key(project_id), "pool_stale", "1")
