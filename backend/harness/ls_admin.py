"""Administering a Label Studio: what a person does in its UI, as API calls.

The backend itself never makes these calls (it only reads tasks and pushes predictions, see
`backend.service.ls_client`). They set up a project the way a user would, for
``feasible-al bench-backend``, ``feasible-al demo`` and the integration tests: create a project,
import tasks, connect an ML backend, choose *Uncertainty sampling*, take the next task from
``/next`` and annotate it, press *Start training*.

Calls that create something are never retried, so a retried request cannot create twice.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from backend.service.ls_client import LabelStudioClient
from backend.service.ls_errors import LabelStudioError, error_detail, response_body

Sampling = Literal["Uncertainty sampling", "Sequential sampling", "Uniform sampling"]
UNCERTAINTY_SAMPLING: Sampling = "Uncertainty sampling"
SEQUENTIAL_SAMPLING: Sampling = "Sequential sampling"
UNIFORM_SAMPLING: Sampling = "Uniform sampling"


@dataclass(frozen=True)
class MLBackendInfo:
    """An ML backend as Label Studio records it (``state`` is e.g. ``"CO"`` once connected)."""

    id: int
    url: str
    title: str
    state: str | None = None
    model_version: str | None = None
    project: int | None = None

    @classmethod
    def from_sdk(cls, backend: Any) -> MLBackendInfo:
        return cls(id=backend.id, url=backend.url, title=backend.title, state=getattr(backend, "state", None),
                   model_version=getattr(backend, "model_version", None),
                   project=getattr(backend, "project", None))


class LabelStudioAdmin(LabelStudioClient):
    """:class:`LabelStudioClient` plus the calls that set up projects and drive Label Studio."""

    def create_project(self, title: str, label_config: str, **settings: Any) -> dict[str, Any]:
        """Create a project; returns :meth:`get_project`'s dict."""
        created = self._call(
            "create a project",
            lambda: self._sdk.projects.create(title=title, label_config=label_config,
                                              request_options=self._request_options(retry=False), **settings),
        )
        if created.id is None:  # the SDK's model leaves it optional; a created project has one
            raise LabelStudioError(f"create a project: Label Studio answered without a project id: {created!r}")
        return self.get_project(created.id)

    def delete_project(self, project_id: int) -> None:
        self._call(
            f"delete project {project_id}",
            lambda: self._sdk.projects.delete(id=int(project_id), request_options=self._request_options()),
        )

    def set_sampling(self, project_id: int, sampling: Sampling = UNCERTAINTY_SAMPLING) -> None:
        """PATCH the project's task sampling (what the labeling stream serves next)."""
        if sampling not in get_args(Sampling):
            raise ValueError(f"unknown sampling {sampling!r}")
        self._call(
            f"set sampling of project {project_id}",
            lambda: self._sdk.projects.update(id=int(project_id), sampling=sampling,
                                              request_options=self._request_options()),
        )

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (each ``{"data": {...}}`` or a bare data dict); returns the new task ids."""
        result = self._call(
            f"import {len(tasks)} tasks into project {project_id}",
            lambda: self._sdk.projects.import_tasks(
                # the SDK annotates ImportApiRequest models; the endpoint (and the SDK's serialiser) take
                # plain task dicts, and bare data dicts too
                id=int(project_id), request=[dict(t) for t in tasks], return_task_ids=True,  # type: ignore[misc]
                commit_to_project=True, request_options=self._request_options(retry=False),
            ),
        )
        return [int(i) for i in (getattr(result, "task_ids", None) or [])]

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], *, was_cancelled: bool = False,
        ground_truth: bool = False,
    ) -> dict[str, Any]:
        """Annotate a task as the API user."""
        annotation = self._call(
            f"annotate task {task_id}",
            lambda: self._sdk.annotations.create(
                id=int(task_id), result=result, was_cancelled=was_cancelled, ground_truth=ground_truth,
                request_options=self._request_options(retry=False),
            ),
        )
        dumped: dict[str, Any] = annotation.model_dump(mode="json", exclude_none=True)
        return dumped

    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        *,
        basic_auth_user: str | None = None,
        basic_auth_pass: str | None = None,
        is_interactive: bool = False,
        timeout: float | None = None,
    ) -> MLBackendInfo:
        """Connect an ML backend to a project (LS calls its ``/health`` and ``/setup`` while doing
        so, and sets the project's ``model_version`` to ``title``)."""
        kwargs: dict[str, Any] = {"project": int(project_id), "url": url, "title": title,
                                  "is_interactive": is_interactive, "auth_method": "NONE"}
        if basic_auth_user:
            kwargs.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth_user,
                          basic_auth_pass=basic_auth_pass or "")
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        backend = self._call(
            f"connect an ML backend to project {project_id}",
            lambda: self._sdk.ml.create(**kwargs, request_options=self._request_options(retry=False)),
        )
        return MLBackendInfo.from_sdk(backend)

    def next_task(self, project_id: int) -> dict[str, Any] | None:
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
        task: dict[str, Any] = self._json(response, what)
        return task

    def start_training(self, ml_backend_id: int) -> None:
        """What *Start training* does: LS posts ``/webhook {"action": "START_TRAINING"}`` to the backend."""
        self._call(
            f"start training of ML backend {ml_backend_id}",
            lambda: self._sdk.ml.train(id=int(ml_backend_id), request_options=self._request_options(retry=False)),
        )
