"""The model class Label Studio talks to, in the upstream ``label_studio_ml`` 2.x shape:
``setup()``, ``predict(tasks, context=None, **kwargs)``, ``fit(event, data, **kwargs)``.

It never trains or scores the pool itself: ``predict`` answers from the scores the last iteration
stored (running the model only for tasks no iteration scored), and ``fit`` records the event and
queues work for the RQ workers (`backend.service.jobs.iteration`). The per-process runtime the
model objects share (settings, Redis store, queues, loaded checkpoints) is
`backend.service.runtime.Backend`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.labeling import LabelConfig, prediction_entry
from backend.service.checkpoints import CheckpointMissingError
from backend.service.ids import as_id
from backend.service.jobs.fast_update import request_fast_update
from backend.service.jobs.iteration import request_training
from backend.service.protocol import (  # re-exported: users look for the protocol's names here
    ANNOTATION_EVENTS,
    HANDLED_EVENTS,
    TASK_EVENTS,
    InvalidRequestError,
    ModelUnavailableError,
    UnknownProjectError,
    as_list,
    parse_project_id,
    task_id,
)
from backend.service.store import UNTRAINED, ProjectState, ScoreEntry

if TYPE_CHECKING:
    from backend.service.runtime import Backend

__all__ = ["ANNOTATION_EVENTS", "HANDLED_EVENTS", "TASK_EVENTS", "FeasibleALModel", "InvalidRequestError",
           "ModelUnavailableError", "UnknownProjectError", "parse_project_id"]

log = logging.getLogger(__name__)

UNTRAINED_SCORE = 0.0


@dataclass
class _Event:
    """One webhook being handled: the handler adds to `answer` and says whether a retrain is due."""

    data: dict[str, Any]
    state: ProjectState
    before: ProjectState | None
    answer: dict[str, Any]
    due: bool = False
    reason: str = ""


@dataclass
class FeasibleALModel:
    """One project's view of the backend, created per request (state lives in Redis)."""

    project_id: int
    backend: Backend
    label_config: str | None = None
    _handlers: dict[str, Callable[[_Event], None]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.settings = self.backend.settings
        self.store = self.backend.store
        self._handlers = {
            "START_TRAINING": self._on_start_training,
            "ANNOTATION_CREATED": self._on_annotation,
            "ANNOTATION_UPDATED": self._on_annotation,
            "ANNOTATIONS_CREATED": self._on_annotations_created,
            "ANNOTATIONS_DELETED": self._on_annotations_deleted,
            "TASKS_CREATED": self._on_tasks_created,
            "TASKS_DELETED": self._on_tasks_deleted,
            "PROJECT_UPDATED": self._on_project_updated,
        }

    # ------------------------------------------------------------------ setup
    def _register(self, xml: str) -> LabelConfig:
        """Raises `LabelConfigError` / `UnsupportedLabelConfigError` with what is wrong."""
        return self.store.register_label_config(self.project_id, xml, self.settings.label_control_name)

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
    def predict(self, tasks: Sequence[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> list[dict[str, Any]]:
        """Exactly one entry per task, in order. Tasks the serving version holds a score for are
        answered from Redis; only the others run the model (and are stored for next time)."""
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, dict) for t in tasks):
            raise InvalidRequestError("'tasks' must be a list of task objects")
        version = self.state().version
        if version == UNTRAINED:
            return [prediction_entry([], UNTRAINED_SCORE, UNTRAINED) for _ in tasks]
        ids = [task_id(t) for t in tasks]
        cached = self.store.get_scores(self.project_id, version, [i for i in ids if i is not None])
        todo = [pos for pos, i in enumerate(ids) if i is None or i not in cached]
        fresh = self._score_now(version, tasks, ids, todo) if todo else {}
        out = []
        for pos, tid in enumerate(ids):
            entry = fresh.get(pos) or cached[tid]  # type: ignore[index]
            out.append(prediction_entry(entry.result, entry.score, version))
        return out

    def _score_now(self, version: str, tasks: Sequence[dict[str, Any]], ids: list[int | None], todo: list[int]
                   ) -> dict[int, ScoreEntry]:
        """Run the serving checkpoint on the tasks no iteration scored (a fast version answers from
        its pool scores on disk, encoding only tasks created since); store what has an id."""
        try:
            checkpoint = self.backend.checkpoints.get(self.project_id, version)
        except CheckpointMissingError as exc:
            raise ModelUnavailableError(str(exc)) from None
        entries, ran = checkpoint.score([tasks[pos] for pos in todo])
        fresh = dict(zip(todo, entries))
        self.store.put_scores(self.project_id, version,
                              {ids[pos]: e for pos, e in fresh.items() if ids[pos] is not None})  # type: ignore[misc]
        self.store.add_model_scored(self.project_id, ran)
        return fresh

    # ------------------------------------------------------------------ fit (events)
    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Record a Label Studio event and queue a retrain when due; returns what happened."""
        before = self.store.get_project(self.project_id)
        ev = _Event(data, self.state(), before, {"action": event, "project": self.project_id})
        handler = self._handlers.get(event)
        if handler is None:
            ev.answer["status"] = "ignored"
            return ev.answer
        handler(ev)
        if ev.due:
            request = request_training(self.backend, self.project_id, ev.reason)
            ev.answer.update(training=request.outcome, job=request.job_id)
        ev.answer.setdefault("status", "ok")
        return ev.answer

    def _on_start_training(self, ev: _Event) -> None:
        ev.due, ev.reason = True, "Start training"

    def _on_annotation(self, ev: _Event) -> None:
        raw = ev.data.get("annotation")
        annotation: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if annotation.get("was_cancelled"):
            return
        tid = task_id(ev.data.get("task")) or as_id(annotation.get("task"))
        if tid is not None:
            self.store.pool_remove(self.project_id, [tid])
        self._count(ev, [annotation])

    def _on_annotations_created(self, ev: _Event) -> None:
        annotations = [a for a in as_list(ev.data.get("annotation")) if isinstance(a, dict)]
        live = [a for a in annotations if not a.get("was_cancelled")]
        task_ids = [t for t in (as_id(a.get("task")) for a in live) if t is not None]
        task_ids += [t for t in (task_id(t) for t in as_list(ev.data.get("task"))) if t is not None]
        self.store.pool_remove(self.project_id, set(task_ids))
        self._count(ev, live)

    def _on_annotations_deleted(self, ev: _Event) -> None:
        self.store.mark_pool_stale(self.project_id)  # the tasks are not named: re-list the pool next time
        deleted = [a if isinstance(a, dict) else {"id": a} for a in as_list(ev.data.get("annotations"))]
        self._count(ev, deleted or [{}])

    def _on_tasks_created(self, ev: _Event) -> None:
        key = ev.state.value_key
        texts = {}
        for task in as_list(ev.data.get("tasks")):
            tid = task_id(task)
            if tid is not None and not (task.get("annotations") or task.get("total_annotations")):
                value = (task.get("data") or {}).get(key) if isinstance(task.get("data"), dict) else None
                texts[tid] = value if isinstance(value, str) else ""
        self.store.pool_add(self.project_id, texts)
        ev.answer["pool_added"] = len(texts)

    def _on_tasks_deleted(self, ev: _Event) -> None:
        ids = [t for t in (task_id(t) for t in as_list(ev.data.get("tasks"))) if t is not None]
        ev.answer["pool_removed"] = self.store.pool_remove(self.project_id, ids)

    def _on_project_updated(self, ev: _Event) -> None:
        ev.answer["label_config_changed"] = ev.before is not None and ev.before.label_config != ev.state.label_config

    def _count(self, ev: _Event, annotations: list[dict[str, Any]]) -> None:
        """Count one event per annotation, each at most once: Label Studio posts an event once per
        project webhook with our URL (its automatic one plus any the user added), with the same
        annotation id and update time; annotations without an id always count."""
        action = str(ev.answer["action"])
        events = [f"{action}:{i}:{a.get('updated_at') or ''}" for a in annotations
                  if (i := as_id(a.get("id"))) is not None]
        every = self.settings.train_every_n
        due, count, fresh = self.store.count_annotation_events(
            self.project_id, len(annotations) - len(events), every, events)
        ev.answer["annotations_since_training"] = 0 if due else count
        if fresh:  # new labels: a new order from the proxy head within seconds (a duplicate delivery: none)
            ev.answer.update(request_fast_update(self.backend, self.project_id, action))
        if due:
            ev.due, ev.reason = True, f"{every} annotation events"

