"""The Redis half of `ProjectStore` that holds task data: the cached unlabeled pool and the
scores each version holds (key layout in `backend.service.store`). Kept apart from the
project/training state so each file reads as one concern; `ProjectStore` mixes it in."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import redis

from backend.service.records import UNTRAINED, ScoreEntry


class PoolAndScores:
    """Pool cache (``...:pool``) and per-version scores (``...:pred:<version>``)."""

    r: redis.Redis

    def key(self, project_id: int, *parts: str) -> str:  # pragma: no cover - defined by ProjectStore
        raise NotImplementedError

    def _pred_key(self, project_id: int, version: str) -> str:
        return self.key(project_id, "pred", version)

    # ------------------------------------------------------------------ scores
    def get_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> dict[int, ScoreEntry]:
        """Entries `version` holds for these tasks (missing ones left out); one round trip."""
        raw = self.get_raw_scores(project_id, version, task_ids)
        return {int(t): ScoreEntry.from_json(v) for t, v in zip(task_ids, raw) if v is not None}

    def get_raw_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> list[str | None]:
        if not task_ids:
            return []
        return self.r.hmget(self._pred_key(project_id, version), [int(t) for t in task_ids])

    def put_scores(self, project_id: int, version: str, entries: Mapping[int, ScoreEntry | str]) -> None:
        if not entries:
            return
        mapping = {int(t): (e if isinstance(e, str) else e.to_json()) for t, e in entries.items()}
        self.r.hset(self._pred_key(project_id, version), mapping=mapping)

    def uncertainties(self, project_id: int, version: str, task_ids: Sequence[int]) -> np.ndarray:
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
        self.r.hincrby(self.key(project_id), "model_scored_total", int(n))

    # ------------------------------------------------------------------ pool
    def pool_ids(self, project_id: int) -> list[int]:
        return sorted(int(t) for t in self.r.hkeys(self.key(project_id, "pool")))

    def pool_size(self, project_id: int) -> int:
        return int(self.r.hlen(self.key(project_id, "pool")))

    def pool_exists(self, project_id: int) -> bool:
        return bool(self.r.exists(self.key(project_id, "pool")))

    def pool_texts(self, project_id: int, task_ids: Sequence[int]) -> list[str | None]:
        if not task_ids:
            return []
        return self.r.hmget(self.key(project_id, "pool"), [int(t) for t in task_ids])

    def pool_replace(self, project_id: int, texts: Mapping[int, str], value_key: str, iteration: int) -> None:
        """Swap in a freshly listed pool (atomically: readers never see half of it)."""
        key = self.key(project_id, "pool")
        tmp = f"{key}:tmp"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        items = [(int(t), text) for t, text in texts.items()]
        for start in range(0, len(items), 5000):
            pipe.hset(tmp, mapping=dict(items[start : start + 5000]))
        if items:
            pipe.rename(tmp, key)
        else:
            pipe.delete(key)
        pipe.hset(self.key(project_id), mapping={
            "pool_value_key": value_key, "pool_stale": "0", "pool_refreshed_iteration": iteration,
        })
        pipe.execute()

    def pool_add(self, project_id: int, texts: Mapping[int, str]) -> None:
        if texts and self.pool_exists(project_id):  # no cache yet: the next training lists the pool
            self.r.hset(self.key(project_id, "pool"), mapping={int(t): v for t, v in texts.items()})

    def pool_remove(self, project_id: int, task_ids: Iterable[int]) -> int:
        ids = [int(t) for t in task_ids]
        return int(self.r.hdel(self.key(project_id, "pool"), *ids)) if ids else 0

    def mark_pool_stale(self, project_id: int) -> None:
        self.r.hset(self.key(project_id), "pool_stale", "1")
