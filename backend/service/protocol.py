"""The Label Studio ML protocol's vocabulary, below every module that speaks it: the events the
backend handles, the errors a request can end in, how ids arrive, and the shape of the per-project
model object the routes call (`backend.model.FeasibleALModel` is the one `backend/_wsgi.py` hands
to `create_app`, as upstream's ``init_app(model_class=...)`` does)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from backend.service.ids import as_id

if TYPE_CHECKING:
    from backend.service.records import ProjectState
    from backend.service.runtime import Backend

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
TASK_EVENTS = ("TASKS_CREATED", "TASKS_DELETED")
HANDLED_EVENTS = (*ANNOTATION_EVENTS, *TASK_EVENTS, "PROJECT_UPDATED", "START_TRAINING")


class UnknownProjectError(LookupError):
    """The backend holds nothing about this project and the request does not carry its label config."""


class ModelUnavailableError(RuntimeError):
    """The serving checkpoint cannot be loaded here (MODEL_DIR not shared with the workers?)."""


class InvalidRequestError(ValueError):
    """A request body is well-formed JSON but not what the protocol expects."""


class ProjectModel(Protocol):
    """What the routes call on one project's model object (upstream ``label_studio_ml`` 2.x shape)."""

    @property
    def model_version(self) -> str: ...

    def state(self) -> ProjectState: ...

    def setup(self) -> str: ...

    def predict(self, tasks: Sequence[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> list[dict[str, Any]]: ...

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]: ...


class ModelClass(Protocol):
    """A model class: built per request from the project id, the process's runtime and the label config."""

    def __call__(self, project_id: int, backend: Backend, label_config: str | None = None) -> ProjectModel: ...


def task_id(task: Any) -> int | None:
    """A task's id, from a task object or a bare id."""
    return as_id(task.get("id")) if isinstance(task, dict) else as_id(task)


def as_list(value: Any) -> list[Any]:
    """Label Studio sends one object or a list of them for the same field."""
    if isinstance(value, list):
        return value
    return [value] if value is not None else []


def parse_project_id(value: Any) -> int:
    """Label Studio sends ``"<id>.<created timestamp>"`` in /setup and /predict, a project object
    in webhooks, and plain ids elsewhere."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str):
        value = value.split(".", 1)[0].strip()
    project_id = as_id(value)
    if project_id is None or project_id < 0:
        raise InvalidRequestError(f"invalid or missing project id {value!r}: expected a Label Studio project id")
    return project_id
