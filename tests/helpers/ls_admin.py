"""Label Studio calls only the tests make: inspecting what Label Studio would serve or holds.

Project set-up (create, import, annotate, connect, train) is `backend.harness.ls_admin`,
shared with ``feasible-al bench-backend``.
"""
from __future__ import annotations

from backend.harness.ls_admin import (
    UNCERTAINTY_SAMPLING,
    LabelStudioAdmin,
    MLBackendInfo,
)

__all__ = ["UNCERTAINTY_SAMPLING", "LabelStudioTestClient", "MLBackendInfo"]


class LabelStudioTestClient(LabelStudioAdmin):
    """`LabelStudioAdmin` plus read-backs the tests assert on."""

    def unlabeled_task_ids(self, project_id: int, page_size: int = 1000) -> list[int]:
        """Ids of tasks with no non-cancelled annotation, ascending."""
        tasks = self.iter_tasks(project_id, only_labeled=False, fields="task_only", page_size=page_size,
                                include=("id",))
        return [int(t["id"]) for t in tasks]

    def list_ml_backends(self, project_id: int) -> list[MLBackendInfo]:
        backends = self._call(
            f"list the ML backends of project {project_id}",
            lambda: self._sdk.ml.list(project=int(project_id), request_options=self._request_options()),
        )
        return [MLBackendInfo.from_sdk(b) for b in backends]
