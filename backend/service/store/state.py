"""The project hash's identity and bookkeeping: the registered label config, the typed
`ProjectState` view, generic field writes and the last error. The training flags, versions and
fast-path fields on the same hash have their own modules."""
from __future__ import annotations

import time
from typing import Any

from backend.labeling import LabelConfig, parse_label_config
from backend.service.records import UNTRAINED, ProjectState, encode_values
from backend.service.store.connection import hash_fields
from backend.service.store.keys import StoreBase


class ProjectStateStore(StoreBase):
    """Registering projects and reading their state."""

    def register_project(
        self, project_id: int, label_config: str, control_name: str, value_key: str, task_type: str
    ) -> bool:
        """Remember the project's label config; True when it differs from the stored one. The
        cached pool holds the texts of one task field, so only a change of that field marks the
        pool stale (a reformatted or relabeled config does not cost a re-listing)."""
        key = self.key(project_id)
        old_config, old_key = self._text.hmget(key, "label_config", "value_key")
        pipe = self.r.pipeline()
        pipe.sadd(self._projects_key(), int(project_id))
        pipe.hset(key, mapping={
            "label_config": label_config, "control_name": control_name, "value_key": value_key,
            "task_type": task_type, "updated_at": time.time(),
        })
        pipe.hsetnx(key, "version", UNTRAINED)
        pipe.hsetnx(key, "created_at", time.time())
        if old_key is not None and old_key != value_key:
            pipe.hset(key, "pool_stale", "1")
        pipe.execute()
        return old_config is not None and old_config != label_config

    def register_label_config(self, project_id: int, xml: str, control_name: str | None = None) -> LabelConfig:
        """Parse the label config (raising `LabelConfigError` / `UnsupportedLabelConfigError` with
        what is wrong) and remember it for the project: the one way a config enters the store."""
        config = parse_label_config(xml, control_name or None)
        self.register_project(project_id, xml, config.control_name, config.value_key, config.task_type.value)
        return config

    def get_project(self, project_id: int) -> ProjectState | None:
        """The project's typed state; None for a project never registered."""
        h = self._text.hgetall(self.key(project_id))
        return ProjectState.from_hash(int(project_id), h) if h else None

    def project_ids(self) -> list[int]:
        return sorted(int(p) for p in self._text.smembers(self._projects_key()))

    def current_version(self, project_id: int) -> str:
        """The serving version (one field read, for the hot /predict path)."""
        return self._text.hget(self.key(project_id), "version") or UNTRAINED

    def set_fields(self, project_id: int, **values: Any) -> None:
        """Write project-hash fields (encoded as `encode_values` does); the names must be in the
        key layout's field list (`backend.service.store.keys`)."""
        if values:
            self.r.hset(self.key(project_id), mapping=hash_fields(encode_values(values)))

    def record_error(self, project_id: int, job_id: str | None, message: str) -> None:
        """Keep the last failure for ``GET /projects/<id>`` (message cut at 2000 characters)."""
        self.r.hset(self.key(project_id), mapping=hash_fields(encode_values({
            "last_error": message[:2000], "last_error_job": job_id or "", "last_error_at": time.time()})))

    def clear_error(self, project_id: int) -> None:
        self.r.hdel(self.key(project_id), "last_error", "last_error_job", "last_error_at")
