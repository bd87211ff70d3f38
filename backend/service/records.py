"""Typed records the service keeps in Redis and passes between its processes (web, jobs).

Each record is a dataclass; flat ones are stored as Redis hashes through one codec
(`to_hash` / `from_hash`, driven by the field types), so no caller compares ``"1"`` strings or
restates field lists. Nested values (dicts, lists) are stored as JSON inside the hash.
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from backend.engine.selection import ServedModel, ServingDecision
from backend.engine.types import TaskType

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "UNTRAINED", "RESULT_TTL", "ScoreEntry", "TrainingRequest", "ProjectState", "IterationInfo",
    "IterationRecord", "PipelineStatus", "FastStatus", "HistoryPoint", "to_hash", "from_hash", "encode_values",
    "json_default",
]

UNTRAINED = "untrained"


# not StrEnum: that would change str() and format() of a member (the value instead of FastStatus.NAME)
class FastStatus(str, Enum):  # noqa: UP042
    """A fast update's outcome (``GET /projects/<id>`` → ``fast_path.status``)."""

    PUBLISHED = "published"  # a new order is in Label Studio
    SKIPPED = "skipped"  # bad or too little input: the order is unchanged, the message says why
    OFF = "off"  # the fast path does not run for this project now (the message says why)
    WAITING_FOR_FEATURES = "waiting_for_features"  # the pool's features are being computed
    BUILDING_FEATURES = "building_features"  # the feature build's chunk jobs are running
    SUPERSEDED = "superseded"  # a fast update with a later sequence number published first
    FAILED = "failed"  # Label Studio refused, or a bug: the message says which
# How long finished jobs, their status and in-progress iteration counters are kept (7 days).
RESULT_TTL = 7 * 24 * 3600

R = TypeVar("R", bound="DataclassInstance")


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; anything else unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _encode(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Enum):
        return _encode(value.value)  # the service's enums hold strings
    if isinstance(value, ServingDecision):
        return json.dumps(value.to_dict(), default=json_default)
    if isinstance(value, (int, float, str)):
        return value
    if value is None:
        return ""
    return json.dumps(value, default=json_default)


def _decode(hint: Any, raw: str) -> Any:
    kind = _base_type(hint)
    origin = typing.get_origin(kind) or kind
    if kind is bool:
        return raw == "1"
    if kind in (int, float, str) or (isinstance(kind, type) and issubclass(kind, Enum)):
        return kind(float(raw)) if kind is int and "." in raw else kind(raw)
    if origin in (dict, list, tuple):
        return json.loads(raw)
    if origin is Literal:
        return raw
    if kind is ServingDecision:
        return ServingDecision.from_dict(json.loads(raw))
    raise TypeError(f"no hash decoding for {hint!r}")


def encode_values(values: typing.Mapping[str, Any]) -> dict[str, str | int | float]:
    """Values as Redis hash fields (``None`` -> ``""``, bools -> ``"1"``/``"0"``, dicts -> JSON)."""
    return {k: _encode(v) for k, v in values.items()}


def to_hash(record: Any) -> dict[str, str | int | float]:
    """The record as a flat Redis hash mapping (see `encode_values`)."""
    return encode_values({f.name: getattr(record, f.name) for f in fields(record)})


def from_hash(cls: type[R], h: typing.Mapping[str, str], **given: Any) -> R:
    """Build `cls` from a hash: a missing or empty field takes its default; other keys are ignored."""
    hints = _hints(cls)
    values: dict[str, Any] = dict(given)
    for f in fields(cls):
        if f.name in values:
            continue
        raw = h.get(f.name)
        if raw is None or raw == "":
            if f.default is MISSING and f.default_factory is MISSING:
                raise KeyError(f"{cls.__name__}: field {f.name!r} missing from the stored hash")
            continue
        values[f.name] = _decode(hints[f.name], raw)
    return cls(**values)


@dataclass(frozen=True)
class ScoreEntry:
    """What a version says about one task: the LS result list, its confidence (the prediction
    score LS sorts by) and the strategy's uncertainty (what UPS ranks by)."""

    result: list[dict[str, Any]]
    score: float
    uncertainty: float

    def to_json(self) -> str:
        return json.dumps({"result": self.result, "score": self.score, "u": self.uncertainty}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> ScoreEntry:
        data = json.loads(raw)
        return cls(data["result"], float(data["score"]), float(data.get("u", math.nan)))


@dataclass(frozen=True)
class HistoryPoint:
    """One published version as the project manager's curve shows it: when, on how many labels,
    which model served, its quality estimates (each None where not measured) and what the update
    cost. `estimate` is the honest one with its interval where the project has one (audit labels
    or Label Studio ground truth); `cv` is the proxy head's cross-validation on all labels (chosen
    by uncertainty: optimistic); `heldout` the fine-tune's score on labels that came after it."""

    at: float
    version: str
    kind: Literal["fast", "iteration"]
    labeled: int
    serving: str
    metric: str = "accuracy"  # or "span F1"
    estimate: dict[str, Any] | None = None  # {"value", "low", "high", "n", "method"}
    cv: float | None = None
    heldout: float | None = None
    seconds: float | None = None  # annotation -> published (fast) or the iteration's wall time
    scored: int | None = None  # pool tasks the update re-scored
    pool: int | None = None
    stop: dict[str, Any] | None = None  # the stopping signal after this version

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HistoryPoint:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


TrainingOutcome = Literal["enqueue", "queued", "deferred"]


@dataclass(frozen=True)
class TrainingRequest:
    """Outcome of asking for a retrain: ``enqueue`` (caller must enqueue `job_id`), ``queued``
    (one is already waiting: it will see the new labels), ``deferred`` (one is running: it runs
    once more after it)."""

    outcome: TrainingOutcome
    job_id: str


@dataclass
class ProjectState:
    """The project hash (see the key layout in `backend.service.store`)."""

    project_id: int
    label_config: str = ""
    control_name: str = ""
    value_key: str = ""
    task_type: TaskType | None = None
    version: str = UNTRAINED
    iteration: int = 0
    pending: int = 0
    queued_job: str | None = None
    running_job: str | None = None
    stage_job: str | None = None
    dirty: bool = False
    last_job: str | None = None
    last_error: str | None = None
    last_error_job: str | None = None
    last_error_at: float | None = None
    pool_stale: bool = False
    pool_value_key: str = ""
    pool_refreshed_iteration: int = 0
    model_scored_total: int = 0
    # the fast path (proxy head on pool features) and which model serves
    acq_version: str = UNTRAINED  # the last fine-tuned version (UPS draws and carries from it)
    serving_model: str = ""  # "proxy" | "finetuned" | "" (untrained)
    finetune_won: bool = False  # the fine-tuned model's measured estimate beat the proxy's
    serving_reason: ServingDecision | None = None  # the numbers the choice was made on
    fast_status: dict[str, Any] | None = None  # the last fast update's outcome and message
    feature_key: str = ""  # the complete pool-feature set the proxy works on
    feature_source: str = ""  # the encoder that made it (a model name or checkpoint folder)
    feature_source_version: str = ""  # the fine-tuned version whose encoder made it ("" = pretrained)
    fast_seq: int = 0
    fast_published_seq: int = 0

    @classmethod
    def from_hash(cls, project_id: int, h: typing.Mapping[str, str]) -> ProjectState:
        return from_hash(cls, h, project_id=int(project_id))

    @property
    def trained(self) -> bool:
        return self.version != UNTRAINED

    def public(self) -> dict[str, Any]:
        """The state as shown by ``GET /projects/<id>`` (no label config XML)."""
        return {
            "project": self.project_id, "version": self.version, "iteration": self.iteration,
            "task_type": self.task_type.value if self.task_type else None,
            "control_name": self.control_name or None,
            "pending_annotations": self.pending, "queued_job": self.queued_job,
            "running_job": self.running_job, "rerun_after_current": self.dirty, "last_job": self.last_job,
            "last_error": self.last_error, "last_error_job": self.last_error_job,
            "last_error_at": self.last_error_at, "model_scored_total": self.model_scored_total,
            "acquisition_version": self.acq_version,
            "serving": {"model": self.serving_model or None, "finetune_won": self.finetune_won,
                        "why": self.serving_reason.to_dict() if self.serving_reason else None},
            "features": {"key": self.feature_key or None, "encoder": self.feature_source or None,
                         "aligned_with": self.feature_source_version or None},
            "fast_path": self.fast_status,
        }


@dataclass
class IterationInfo:
    """An iteration in progress (hash ``P:project:<id>:iter:<version>``): written by the training
    job, counted up by the scoring chunks, read by the finisher. The pool snapshot is stored
    beside it (`ProjectStore.iteration_pool`), so reading the info never parses the pool."""

    iteration: int
    version: str
    pipeline: str
    value_key: str
    prev_version: str = UNTRAINED
    pool_size: int = 0
    subset_size: int = 0
    never_scored: int = 0
    full_rescore: bool = True
    pool_refreshed: bool = False
    labeled: int = 0
    conversion: dict[str, Any] = field(default_factory=dict)  # ConversionReport.as_dict() of the labels
    chunks: int = 0
    started_at: float = 0.0
    fetch_seconds: float = 0.0
    train_seconds: float = 0.0
    fit_steps: int = 0
    fit_loss: float | None = None
    scoring_started: float = 0.0
    selection: ServingDecision | None = None  # proxy vs fine-tuned estimates (which serves)
    # counters the scoring chunks add to
    scored: int = 0
    inference_seconds: float = 0.0
    chunks_done: int = 0

    def to_hash(self) -> dict[str, str | int | float]:
        return to_hash(self)

    @classmethod
    def from_hash(cls, h: typing.Mapping[str, str]) -> IterationInfo:
        return from_hash(cls, h)


@dataclass
class IterationRecord:
    """A finished iteration, as ``GET /projects/<id>`` shows it in ``last_iteration`` (JSON list
    ``P:project:<id>:iterations``). `conversion` says which annotated tasks were left out and why."""

    iteration: int
    version: str
    previous_version: str
    pipeline: str
    labeled: int
    pool_size: int
    subset_size: int
    scored_by_model: int
    kept_stale: int
    unscored: int
    rescored_share: float
    full_rescore: bool
    pool_refreshed: bool
    chunks: int
    pushed: int
    seconds: dict[str, float]
    started_at: float
    finished_at: float
    conversion: dict[str, Any] = field(default_factory=dict)
    selection: ServingDecision | None = None  # which model serves after it, and why
    served: ServedModel = "finetuned"  # "finetuned" (whole pool pushed) or "proxy" (a fast version pushed)
    fast_version: str = ""  # the fast version the proxy published when it took over after this iteration

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["selection"] = self.selection.to_dict() if self.selection else {}
        return out


PipelineKind = Literal["training", "successor"]


@dataclass
class PipelineStatus:
    """What ``GET /jobs/<id>`` shows about a pipeline beyond RQ's own status: one record per
    training pipeline or successor job (hash ``P:status:<job id>``), written by every stage
    (queue, train, score chunks, finish, failure, cancel) and read as is."""

    project: int
    kind: PipelineKind = "training"
    pipeline: str | None = None
    stage: str | None = None
    progress: float | None = None
    version: str | None = None
    status: str | None = None  # running / skipped / finished / failed (training pipelines)
    error: str | None = None
    # scoring (training pipelines): chunk counters
    subset_size: int = 0
    chunks: int = 0
    scored: int = 0
    chunks_done: int = 0
    iteration: dict[str, Any] | None = None  # the IterationRecord once published
    # successor jobs
    stage_done: int | None = None
    stage_total: int | None = None
    sizes: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None  # {"gold": ConversionReport.as_dict(), "pool": ...}
    ls_pruned: dict[str, Any] | None = None  # superseded versions' LS predictions deleted after publishing

    def to_hash(self) -> dict[str, str | int | float]:
        return to_hash(self)

    @classmethod
    def from_hash(cls, h: typing.Mapping[str, str]) -> PipelineStatus:
        return from_hash(cls, h)

    def scoring_view(self) -> dict[str, int]:
        return {"scored": self.scored, "subset_size": self.subset_size, "chunks": self.chunks,
                "chunks_done": self.chunks_done}

    def scoring_progress(self) -> float:
        return round(self.scored / self.subset_size, 4) if self.subset_size else 1.0
