"""What the backend's jobs need from Label Studio, as a `typing.Protocol`.

`LabelStudioApi` lists exactly the calls the service makes through ``JobContext.ls`` (the training
pipeline in `backend.service.jobs.stages`, the fast path in `backend.service.jobs.fast_update`, the successor
build in `backend.service.jobs.successor`). :class:`backend.service.ls_client.LabelStudioClient` is the
real implementation (checked by mypy there); the tests' in-memory stand-in
(``tests/helpers/fake_label_studio.py``) implements it too, and a `JobContext` takes either through
its ``label_studio`` parameter.

Task and project payloads are Label Studio's JSON as dicts (see `LabelStudioClient` for the shapes).
Failures raise `backend.service.ls_errors.LabelStudioError` subclasses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["LabelStudioApi"]


@runtime_checkable
class LabelStudioApi(Protocol):
    """The Label Studio calls of the backend's jobs (one project id per call)."""

    def get_project(self, project_id: int) -> dict[str, Any]:
        """``{id, title, label_config, model_version, sampling}`` of a project."""
        ...

    def set_model_version(self, project_id: int, version: str) -> None:
        """Make ``version`` the project's ``model_version`` (LS refuses one it holds no prediction of)."""
        ...

    def labeled_tasks(self, project_id: int, page_size: int = ...) -> list[dict[str, Any]]:
        """Full tasks with at least one non-cancelled annotation, ordered by id."""
        ...

    def unlabeled_tasks(
        self, project_id: int, page_size: int = ..., include: Sequence[str] | None = ...
    ) -> list[dict[str, Any]]:
        """Tasks without a non-cancelled annotation, by default only ``id`` and ``data``."""
        ...

    def count_tasks(self, project_id: int) -> int:
        """Number of tasks in the project."""
        ...

    def import_predictions(
        self,
        project_id: int,
        predictions: Sequence[Mapping[str, Any]],
        batch_size: int = ...,
        timeout: float | None = ...,
    ) -> int:
        """Bulk-create predictions (``{task, result, score, model_version}``); how many were created."""
        ...

    def create_predictions(self, predictions: Sequence[Mapping[str, Any]], workers: int = ...) -> int:
        """Create predictions one request each (a few dozen); how many were created."""
        ...

    def model_versions(self, project_id: int) -> dict[str, int]:
        """``{model_version: number of predictions}`` of the project."""
        ...

    def delete_model_version(self, project_id: int, version: str, timeout: float | None = ...) -> int:
        """Delete every prediction of one model version; how many were deleted."""
        ...
