"""What the project manager's signals keep between updates: which shown tasks were audits (drawn
uniformly from the pool, so their labels estimate the model's quality honestly), which labeled
tasks the project marked as ground truth, the stopping signal's stop set and state, the last
quality estimate and the suspect labels."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from backend.service.records import json_default
from backend.service.store.keys import StoreBase

AUDIT_TTL = 90 * 24 * 3600  # an audit task shown and never labeled is forgotten after 90 days
STOP_SET_FIELD, STOP_STATE_FIELD = "stop_set", "stop_state"
GROUND_TRUTH_FIELD = "ground_truth_tasks"
QUALITY_FIELD, SUSPECTS_FIELD = "quality_estimate", "suspects"


class PmSignals(StoreBase):
    """``P:project:<id>:audit`` (task id -> when shown) and the signals' project-hash fields."""

    def record_audits(self, project_id: int, task_ids: Sequence[int], labeled: int, version: str,
                      ordered_ids: Sequence[int] = ()) -> None:
        """`task_ids` were shown as audits by `version`; `ordered_ids` were shown by its order, so a
        label they get now was chosen by uncertainty: an earlier version's audit mark goes (else
        over many updates most of the pool would be marked, and the held-out labels biased)."""
        key = self.key(project_id, "audit")
        with self.r.pipeline() as pipe:
            if ordered_ids:
                pipe.hdel(key, *(str(int(t)) for t in ordered_ids))
            if task_ids:
                shown = json.dumps({"labeled": int(labeled), "version": version})
                pipe.hset(key, mapping={str(int(t)): shown for t in task_ids})
                pipe.expire(key, AUDIT_TTL)
            pipe.execute()

    def audit_ids(self, project_id: int) -> set[int]:
        return {int(t) for t in self._text.hkeys(self.key(project_id, "audit"))}

    def ground_truth_ids(self, project_id: int) -> set[int]:
        """The labeled tasks whose annotation the project marked as ground truth (last fast update's read)."""
        return {int(t) for t in self._json_field(project_id, GROUND_TRUTH_FIELD) or []}

    def set_ground_truth_ids(self, project_id: int, task_ids: Sequence[int] | set[int]) -> None:
        self._set_json_field(project_id, GROUND_TRUTH_FIELD, sorted(int(t) for t in task_ids))

    def _json_field(self, project_id: int, name: str) -> Any:
        raw = self._text.hget(self.key(project_id), name)
        return json.loads(raw) if raw else None

    def _set_json_field(self, project_id: int, name: str, value: Any) -> None:
        self.r.hset(self.key(project_id), name, json.dumps(value, default=json_default))

    def stop_set_ids(self, project_id: int) -> list[int] | None:
        raw = self._json_field(project_id, STOP_SET_FIELD)
        return [int(t) for t in raw] if raw is not None else None

    def set_stop_set_ids(self, project_id: int, task_ids: Sequence[int]) -> None:
        self._set_json_field(project_id, STOP_SET_FIELD, [int(t) for t in task_ids])

    def stop_state(self, project_id: int) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._json_field(project_id, STOP_STATE_FIELD)
        return value

    def set_stop_state(self, project_id: int, state: Mapping[str, Any]) -> None:
        self._set_json_field(project_id, STOP_STATE_FIELD, dict(state))

    def quality_estimate(self, project_id: int) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._json_field(project_id, QUALITY_FIELD)
        return value

    def set_quality_estimate(self, project_id: int, estimate: Mapping[str, Any]) -> None:
        self._set_json_field(project_id, QUALITY_FIELD, dict(estimate))

    def suspects(self, project_id: int) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._json_field(project_id, SUSPECTS_FIELD)
        return value

    def set_suspects(self, project_id: int, record: Mapping[str, Any]) -> None:
        self._set_json_field(project_id, SUSPECTS_FIELD, dict(record))
