"""Label Studio calls only the tests make: inspecting what Label Studio would serve or holds.

Project set-up (create, import, annotate, connect, train) is `backend.service.ls_admin`,
shared with ``feasible-al bench-backend``.
"""
from __future__ import annotations

from backend.service.ls_admin import (
    UNCERTAINTY_SAMPLING,
    LabelStudioAdmin,
    MLBackendInfo,
)
from backend.service.ls_errors import error_detail, response_body

__all__ = ["UNCERTAINTY_SAMPLING", "LabelStudioTestClient", "MLBackendInfo"]


class LabelStudioTestClient(LabelStudioAdmin):
    """`LabelStudioAdmin` plus read-backs the tests assert on."""

    def unlabeled_task_ids(self, project_id: int, page_size: int = 1000) -> list[int]:
        """Ids of tasks with no non-cancelled annotation, ascending."""
        tasks = self.iter_tasks(project_id, only_labeled=False, fields="task_only", page_size=page_size,
                                include=("id",))
        return [int(t["id"]) for t in tasks]

    def next_task(self, project_id: int) -> dict | None:
        """``GET /api/projects/<id>/next``: the task LS would show the API user next (None when
        there is none). Under *Uncertainty sampling* that is the lowest-score prediction of the
        project's ``model_version`` (random among the first few when several annotators exist)."""
        what = f"get the next task of project {project_id}"
        response = self._raw(what, "GET", f"api/projects/{int(project_id)}/next", ok=(404,))
        if response.status_code == 404:
            body = response_body(response)
            if "no tasks" in error_detail(body).lower():
                return None
            raise self._errors.for_status(what, 404, body)
        return self._json(response, what)

    def list_ml_backends(self, project_id: int) -> list[MLBackendInfo]:
        backends = self._call(
            f"list the ML backends of project {project_id}",
            lambda: self._sdk.ml.list(project=int(project_id), request_options=self._request_options()),
        )
        return [MLBackendInfo.from_sdk(b) for b in backends]
