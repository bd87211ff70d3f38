"""The tests' one Label Studio stand-in: `InMemoryLabelStudio`, an in-memory project that implements
`backend.service.ls_protocol.LabelStudioApi` (the calls the backend's jobs make), checked by mypy
below and by ``isinstance`` in tests/unit/service/test_label_studio_api.py.

A test hands it to the backend through the constructor,
``Backend.from_settings(settings, label_studio=InMemoryLabelStudio(...))``, and then reads and
changes the project directly: ``tasks`` (Label Studio task JSON by id), ``predictions``,
``model_version``, ``annotate()``, ``next_task()``. It answers the way Label Studio 1.23.2 does
where the backend depends on it (the real client against a real Label Studio is covered by the
integration tests):

- labeled = at least one annotation that is not cancelled (skipped tasks stay unlabeled);
- tasks come ordered by id; ``unlabeled_tasks`` returns only the ``include`` keys (default id, data);
- predictions are validated like `LabelStudioClient` validates them (`prediction_entry`);
- ``set_model_version`` refuses a version no prediction has (HTTP 400, `LabelStudioError`), and
  records the refusal in ``refused_versions``;
- deleting the project's ``model_version`` clears it.

Faults: ``fail = True`` makes every call raise `LabelStudioUnavailableError` (Label Studio down).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from backend.service.ls_errors import LabelStudioError, LabelStudioNotFoundError, LabelStudioUnavailableError
from backend.service.ls_predictions import prediction_entry

if TYPE_CHECKING:
    from backend.service.ls_protocol import LabelStudioApi

__all__ = ["InMemoryLabelStudio", "choice_result"]

URL = "http://label-studio.invalid"
UPDATED_AT = "2025-01-01T00:00:00Z"


def choice_result(label: str, from_name: str = "sentiment", to_name: str = "text") -> list[dict[str, Any]]:
    """An annotation / prediction ``result`` choosing one label (the sentiment config's names)."""
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def _is_labeled(task: Mapping[str, Any]) -> bool:
    return any(not a.get("was_cancelled") for a in task.get("annotations") or [])


class InMemoryLabelStudio:
    """One Label Studio project in memory. ``project_id`` (when given) is the only project it has:
    a call for another one is a 404, as in Label Studio."""

    def __init__(self, tasks: Iterable[Mapping[str, Any]] = (), label_config: str = "", *,
                 project_id: int | None = None, title: str = "in-memory project") -> None:
        self.label_config = label_config
        self.project_id = project_id
        self.title = title
        self.tasks: dict[int, dict[str, Any]] = {}
        self.predictions: list[dict[str, Any]] = []
        self.model_version = ""
        self.refused_versions: list[str] = []
        self.fail = False
        self._next_annotation = 1
        for task in tasks:
            self.add_task(task)

    def __repr__(self) -> str:
        return f"InMemoryLabelStudio(project_id={self.project_id}, tasks={len(self.tasks)})"

    # ------------------------------------------------------------------ the test's side

    def add_task(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """Add a task given as Label Studio JSON (``id``, ``data``, optional ``annotations``)."""
        stored = copy.deepcopy(dict(task))
        stored.setdefault("annotations", [])
        self.tasks[int(stored["id"])] = stored
        ids = [int(a["id"]) for a in stored["annotations"] if a.get("id") is not None]
        self._next_annotation = max([self._next_annotation, *(i + 1 for i in ids)])
        return stored

    def add_texts(self, texts: Iterable[str], start_id: int | None = None) -> list[int]:
        """One task per text (``data.text``), with consecutive ids after the highest one; their ids."""
        first = start_id if start_id is not None else max(self.tasks, default=0) + 1
        return [int(self.add_task({"id": first + i, "data": {"text": text}})["id"]) for i, text in enumerate(texts)]

    def annotate(self, task_id: int, result: str | list[dict[str, Any]], *,
                 was_cancelled: bool = False) -> dict[str, Any]:
        """Annotate a task (a label string: one sentiment choice); the annotation, as LS sends it."""
        annotation = {"id": self._next_annotation, "task": task_id, "was_cancelled": was_cancelled,
                      "result": choice_result(result) if isinstance(result, str) else result,
                      "updated_at": UPDATED_AT}
        self._next_annotation += 1
        self.tasks[task_id]["annotations"].append(annotation)
        return annotation

    def next_task(self) -> int:
        """What *Uncertainty sampling* serves: the unlabeled task whose prediction of the project's
        ``model_version`` has the lowest score."""
        held: dict[int, float] = {p["task"]: p["score"] for p in self.predictions
                if p.get("model_version") == self.model_version and not _is_labeled(self.tasks[p["task"]])}
        if not held:
            raise LookupError(f"no unlabeled task holds a prediction of {self.model_version!r}")
        return min(held, key=lambda task_id: held[task_id])

    # ------------------------------------------------------------------ LabelStudioApi

    def _check(self, what: str, project_id: int | None = None) -> None:
        if self.fail:
            raise LabelStudioUnavailableError(
                f"Label Studio at {URL} is unreachable (in-memory stand-in, fail=True) while trying to {what}")
        if project_id is not None and self.project_id is not None and int(project_id) != self.project_id:
            raise LabelStudioNotFoundError(
                f"Label Studio at {URL}: not found (HTTP 404) while trying to {what}", status_code=404)

    def get_project(self, project_id: int) -> dict[str, Any]:
        self._check(f"read project {project_id}", project_id)
        return {"id": int(project_id), "title": self.title, "label_config": self.label_config,
                "model_version": self.model_version, "sampling": None}

    def set_model_version(self, project_id: int, version: str) -> None:
        self._check(f"set model_version of project {project_id}", project_id)
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        if version not in self.model_versions(project_id):
            self.refused_versions.append(version)
            raise LabelStudioError(
                f"Label Studio at {URL} answered HTTP 400 while trying to set model_version of project "
                f"{project_id}: no prediction of model version {version!r}", status_code=400)
        self.model_version = version

    def _sorted(self, labeled: bool) -> list[dict[str, Any]]:
        return [t for _, t in sorted(self.tasks.items()) if _is_labeled(t) == labeled]

    def labeled_tasks(self, project_id: int, page_size: int = 1000) -> list[dict[str, Any]]:
        self._check(f"list tasks of project {project_id}", project_id)
        out = []
        for task in self._sorted(labeled=True):
            full = copy.deepcopy(task)
            full["predictions"] = [dict(p) for p in self.predictions if p["task"] == full["id"]]
            full.setdefault("drafts", [])
            out.append(full)
        return out

    def unlabeled_tasks(self, project_id: int, page_size: int = 1000,
                        include: Sequence[str] | None = ("id", "data")) -> list[dict[str, Any]]:
        self._check(f"list tasks of project {project_id}", project_id)
        nested = ("annotations", "predictions", "drafts")  # fields="task_only" leaves them out
        return [copy.deepcopy({k: v for k, v in t.items() if (k in include if include else k not in nested)})
                for t in self._sorted(labeled=False)]

    def count_tasks(self, project_id: int) -> int:
        self._check(f"count the tasks of project {project_id}", project_id)
        return len(self.tasks)

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]],
                           batch_size: int = 50_000, timeout: float | None = None) -> int:
        self._check(f"import {len(predictions)} predictions into project {project_id}", project_id)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self._add_predictions(predictions)

    def create_predictions(self, predictions: Sequence[Mapping[str, Any]], workers: int = 4) -> int:
        self._check(f"create {len(predictions)} predictions")
        return self._add_predictions(predictions)

    def _add_predictions(self, predictions: Sequence[Mapping[str, Any]]) -> int:
        entries = [prediction_entry(p) for p in predictions]
        self.predictions.extend(entries)
        return len(entries)

    def model_versions(self, project_id: int) -> dict[str, int]:
        self._check(f"list the model versions of project {project_id}", project_id)
        out: dict[str, int] = {}
        for p in self.predictions:
            if p.get("model_version") is not None:
                out[p["model_version"]] = out.get(p["model_version"], 0) + 1
        return out

    def delete_model_version(self, project_id: int, version: str, timeout: float | None = None) -> int:
        self._check(f"delete the predictions of model version {version!r} in project {project_id}", project_id)
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        before = len(self.predictions)
        self.predictions = [p for p in self.predictions if p.get("model_version") != version]
        if self.model_version == version:  # LS clears the project's model_version with it
            self.model_version = ""
        return before - len(self.predictions)


if TYPE_CHECKING:  # mypy checks that the stand-in has every call of the protocol, with its signature
    _satisfies: type[LabelStudioApi] = InMemoryLabelStudio
