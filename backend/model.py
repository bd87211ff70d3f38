"""The model class Label Studio talks to, in the upstream ``label_studio_ml`` 2.x shape:
``setup()``, ``predict(tasks, context=None, **kwargs)``, ``fit(event, data, **kwargs)``.

It never trains or scores the pool itself: ``predict`` answers from the scores the last iteration
stored (running the model only for tasks no iteration scored), and ``fit`` records the event and
queues work for the RQ workers (`backend.service.jobs.iteration`). `Backend` is the per-process runtime (settings,
Redis store, queues, loaded checkpoints) the model objects share.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backend.service.settings import Settings
from backend.service.jobs.iteration import JobContext, request_training
from backend.labeling import LabelConfig, parse_label_config, prediction_entry
from backend.service.checkpoints import CheckpointMissingError
from backend.service.store import UNTRAINED, ProjectState, ScoreEntry

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
TASK_EVENTS = ("TASKS_CREATED", "TASKS_DELETED")
HANDLED_EVENTS = (*ANNOTATION_EVENTS, *TASK_EVENTS, "PROJECT_UPDATED", "START_TRAINING")
UNTRAINED_SCORE = 0.0


class UnknownProjectError(LookupError):
    """The backend holds nothing about this project and the request does not carry its label config."""


class ModelUnavailableError(RuntimeError):
    """The serving checkpoint cannot be loaded here (MODEL_DIR not shared with the workers?)."""


class InvalidRequestError(ValueError):
    """A request body is well-formed JSON but not what the protocol expects."""


class Backend(JobContext):
    """Per-process runtime shared by every request (the same parts a worker's job context has)."""

    def model(self, project_id: int, label_config: str | None = None) -> "FeasibleALModel":
        return FeasibleALModel(project_id, label_config, backend=self)


@dataclass
class FeasibleALModel:
    """One project's view of the backend, created per request (state lives in Redis)."""

    project_id: int
    label_config: str | None = None
    backend: Backend | None = None

    def __post_init__(self) -> None:
        if self.backend is None:
            raise ValueError("FeasibleALModel needs a Backend")
        self.settings: Settings = self.backend.settings
        self.store = self.backend.store

    # ------------------------------------------------------------------ setup
    def parse_config(self, xml: str) -> LabelConfig:
        """Raises `LabelConfigError` / `UnsupportedLabelConfigError` with what is wrong."""
        return parse_label_config(xml, self.settings.label_control_name or None)

    def _register(self, xml: str) -> LabelConfig:
        config = self.parse_config(xml)
        self.store.register_project(self.project_id, xml, config.control_name, config.value_key,
                                    config.task_type.value)
        return config

    def state(self) -> ProjectState:
        """The project's state, registering the label config the request carries when it is new."""
        state = self.store.get_project(self.project_id)
        if self.label_config and (state is None or state.label_config != self.label_config):
            self._register(self.label_config)
            state = self.store.get_project(self.project_id)
        if state is None:
            raise UnknownProjectError(
                f"unknown project {self.project_id}: connect this backend to the project in Label Studio "
                "(it calls /setup with the label config) or send label_config with the request"
            )
        return state

    def setup(self) -> str:
        """Check and remember the label config; return the version serving the project."""
        if not self.label_config:
            raise InvalidRequestError("/setup needs the project's label config in 'schema'")
        self._register(self.label_config)
        return self.model_version

    @property
    def model_version(self) -> str:
        return self.store.current_version(self.project_id)

    # ------------------------------------------------------------------ predict
    def predict(self, tasks: Sequence[dict], context: dict | None = None, **kwargs: Any) -> list[dict]:
        """Exactly one entry per task, in order. Tasks the serving version holds a score for are
        answered from Redis; only the others run the model (and are stored for next time)."""
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, dict) for t in tasks):
            raise InvalidRequestError("'tasks' must be a list of task objects")
        state = self.state()
        version = state.version
        if version == UNTRAINED:
            return [prediction_entry([], UNTRAINED_SCORE, UNTRAINED) for _ in tasks]
        ids = [_task_id(t) for t in tasks]
        cached = self.store.get_scores(self.project_id, version, [i for i in ids if i is not None])
        todo = [pos for pos, i in enumerate(ids) if i is None or i not in cached]
        fresh: dict[int, ScoreEntry] = {}
        if todo:
            try:
                checkpoint = self.backend.checkpoints.get(self.project_id, version)  # type: ignore[union-attr]
            except CheckpointMissingError as exc:
                raise ModelUnavailableError(str(exc)) from None
            entries, ran = checkpoint.score([tasks[pos] for pos in todo])
            fresh = dict(zip(todo, entries))
            to_store = {ids[pos]: e for pos, e in fresh.items() if ids[pos] is not None}
            self.store.put_scores(self.project_id, version, to_store)  # type: ignore[arg-type]
            self.store.add_model_scored(self.project_id, ran)
        out = []
        for pos, task_id in enumerate(ids):
            entry = fresh.get(pos) or cached[task_id]  # type: ignore[index]
            out.append(prediction_entry(entry.result, entry.score, version))
        return out

    # ------------------------------------------------------------------ fit (events)
    def fit(self, event: str, data: dict, **kwargs: Any) -> dict[str, Any]:
        """Record a Label Studio event and queue a retrain when due; returns what happened."""
        before = self.store.get_project(self.project_id)
        state = self.state()
        pid = self.project_id
        answer: dict[str, Any] = {"action": event, "project": pid}
        due, reason = False, ""
        if event == "START_TRAINING":
            due, reason = True, "Start training"
        elif event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            annotation = data.get("annotation") if isinstance(data.get("annotation"), dict) else {}
            if not annotation.get("was_cancelled"):
                task_id = _task_id(data.get("task")) or _as_int(annotation.get("task"))
                if task_id is not None:
                    self.store.pool_remove(pid, [task_id])
                due, reason = self._count(1, answer)
        elif event == "ANNOTATIONS_CREATED":
            annotations = [a for a in _as_list(data.get("annotation")) if isinstance(a, dict)]
            live = [a for a in annotations if not a.get("was_cancelled")]
            task_ids = [t for t in (_as_int(a.get("task")) for a in live) if t is not None]
            task_ids += [t for t in (_task_id(t) for t in _as_list(data.get("task"))) if t is not None]
            self.store.pool_remove(pid, set(task_ids))
            due, reason = self._count(len(live), answer)
        elif event == "ANNOTATIONS_DELETED":
            self.store.mark_pool_stale(pid)  # the tasks are not named: re-list the pool next time
            due, reason = self._count(max(1, len(_as_list(data.get("annotations")))), answer)
        elif event == "TASKS_CREATED":
            key = state.value_key
            texts = {}
            for task in _as_list(data.get("tasks")):
                task_id = _task_id(task)
                if task_id is not None and not (task.get("annotations") or task.get("total_annotations")):
                    value = (task.get("data") or {}).get(key) if isinstance(task.get("data"), dict) else None
                    texts[task_id] = value if isinstance(value, str) else ""
            self.store.pool_add(pid, texts)
            answer["pool_added"] = len(texts)
        elif event == "TASKS_DELETED":
            ids = [t for t in (_task_id(t) for t in _as_list(data.get("tasks"))) if t is not None]
            answer["pool_removed"] = self.store.pool_remove(pid, ids)
        elif event == "PROJECT_UPDATED":
            answer["label_config_changed"] = before is not None and before.label_config != state.label_config
        else:
            answer["status"] = "ignored"
            return answer
        if due:
            request = request_training(self.backend, pid, reason)  # type: ignore[arg-type]
            answer.update(training=request.outcome, job=request.job_id)
        answer.setdefault("status", "ok")
        return answer

    def _count(self, n: int, answer: dict[str, Any]) -> tuple[bool, str]:
        every = self.settings.train_every_n
        due, count = self.store.count_annotations(self.project_id, n, every)
        answer["annotations_since_training"] = 0 if due else count
        return due, f"{every} annotation events" if due else ""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _task_id(task: Any) -> int | None:
    if isinstance(task, dict):
        return _as_int(task.get("id"))
    return _as_int(task)


def _as_list(value: Any) -> list:
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
    project_id = _as_int(value)
    if project_id is None or project_id < 0:
        raise InvalidRequestError(f"invalid or missing project id {value!r}: expected a Label Studio project id")
    return project_id
