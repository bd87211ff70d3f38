"""The only module that calls Label Studio's API (through ``label-studio-sdk`` 2.x).

Everything the backend needs from Label Studio goes through :class:`LabelStudioClient`:
reading the project and its tasks, pushing predictions in bulk, and setting the project's
``model_version`` (Label Studio's prediction-score ordering and *Uncertainty sampling* only count
predictions of that version). Calls that *administer* Label Studio (create a project, import
tasks, annotate, connect an ML backend, start training) are in `backend.service.ls_admin`, for
the benchmark, demos and tests; the backend itself never makes them.

The connection is always ``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY`` from the backend's own
settings. The ``hostname`` / ``access_token`` Label Studio sends in ``/setup`` are unauthenticated
input and are never used to call out (SSRF).

The client is assembled from its parts: `backend.service.ls_session` (the SDK client, retries,
timeouts, error translation), `backend.service.ls_tasks` (listing and counting tasks) and
`backend.service.ls_predictions` (pushing predictions, model versions). The calls the service's
jobs make are the `backend.service.ls_protocol.LabelStudioApi` protocol, which this class satisfies.

Errors are precise and never carry the API key (`backend.service.ls_errors`, re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend.service.ls_errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
    safe_url,
)
from backend.service.ls_predictions import PredictionWrites
from backend.service.ls_tasks import TaskFields, TaskReads

if TYPE_CHECKING:
    from backend.service.ls_protocol import LabelStudioApi

__all__ = [
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailableError",
    "LabelStudioAuthError",
    "LabelStudioNotFoundError",
    "TaskFields",
]


class LabelStudioClient(TaskReads, PredictionWrites):
    """Typed access to one Label Studio instance: ``LabelStudioClient(url, api_key, timeout=30,
    max_retries=2)`` (see `backend.service.ls_session.LabelStudioSession` for the key and the retries)."""

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient(url={safe_url(self.url)!r})"

    # ------------------------------------------------------------------ projects

    def get_project(self, project_id: int) -> dict[str, Any]:
        """``{id, title, label_config, model_version, sampling}`` of a project."""
        project = self._call(
            f"read project {project_id}",
            lambda: self._sdk.projects.get(id=int(project_id), request_options=self._request_options()),
        )
        return {
            "id": project.id,
            "title": project.title,
            "label_config": project.label_config,
            "model_version": project.model_version or "",
            "sampling": getattr(project, "sampling", None),
        }

    def set_model_version(self, project_id: int, version: str) -> None:
        """PATCH the project's ``model_version``: LS orders by / samples on predictions of this
        version only.

        LS 1.23.2 validates the value: it must be the title of an ML backend connected to the
        project or the ``model_version`` of at least one existing prediction, else HTTP 400
        (:class:`LabelStudioError`, ``status_code == 400``). Import the version's predictions first.
        """
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        self._call(
            f"set model_version of project {project_id}",
            lambda: self._sdk.projects.update(
                id=int(project_id), model_version=version, request_options=self._request_options()
            ),
        )


if TYPE_CHECKING:  # mypy checks that the real client has every call of the protocol, with its signature
    _satisfies: type[LabelStudioApi] = LabelStudioClient
