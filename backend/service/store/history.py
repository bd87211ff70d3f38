"""What each published version measured, oldest first: the project manager's learning curve
(``/ui/projects/<id>``). One short JSON entry per publish (fast or full iteration), capped."""
from __future__ import annotations

import json

from backend.service.records import HistoryPoint
from backend.service.store.keys import StoreBase

MAX_HISTORY = 2000  # entries kept per project (a fast update per annotation: ~0.3 kB each)


class QualityHistory(StoreBase):
    """``P:project:<id>:history``: `HistoryPoint` JSON per published version."""

    def append_history(self, project_id: int, point: HistoryPoint) -> None:
        key = self.key(project_id, "history")
        with self.r.pipeline() as pipe:
            pipe.rpush(key, json.dumps(point.to_dict()))
            pipe.ltrim(key, -MAX_HISTORY, -1)
            pipe.execute()

    def history(self, project_id: int, limit: int = MAX_HISTORY) -> list[HistoryPoint]:
        raw = self._text.lrange(self.key(project_id, "history"), -limit, -1)
        return [HistoryPoint.from_dict(json.loads(x)) for x in raw]
