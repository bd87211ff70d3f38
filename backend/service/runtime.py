"""The per-process runtime: settings, Redis store, RQ queues, metrics and loaded checkpoints,
built once from the settings and handed to every request (`Backend`) and every job (`context()`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from backend.service.checkpoints import CheckpointCache
from backend.service.features import EncoderCache, FeatureStore
from backend.service.settings import Settings
from backend.service.store import ProjectStore, connect_redis
from backend.service.telemetry import Metrics

if TYPE_CHECKING:
    from backend.service.ls_protocol import LabelStudioApi

QUEUE_KINDS = ("fast", "scoring", "training", "successor")  # worker order: fast updates first, then
# finish an iteration before the next


class LabelStudioNotConfiguredError(RuntimeError):
    """Training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment."""


class JobQueues:
    """The backend's RQ queues, named ``<KEY_PREFIX>-<kind>``. Needs a bytes (non-decoding) client."""

    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self.fast = Queue(f"{prefix}-fast", connection=connection)
        self.training = Queue(f"{prefix}-training", connection=connection)
        self.scoring = Queue(f"{prefix}-scoring", connection=connection)
        self.successor = Queue(f"{prefix}-successor", connection=connection)

    def all(self, kinds: tuple[str, ...] = QUEUE_KINDS) -> list[Queue]:
        unknown = set(kinds) - set(QUEUE_KINDS)
        if unknown:
            raise ValueError(f"unknown queue kinds {sorted(unknown)}; choose from {QUEUE_KINDS}")
        return [getattr(self, kind) for kind in kinds]

    def fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return None


@dataclass
class JobContext:
    """Everything a job needs, built once per worker process from the settings."""

    settings: Settings
    store: ProjectStore
    queues: JobQueues
    metrics: Metrics
    checkpoints: CheckpointCache
    features: FeatureStore
    encoders: EncoderCache
    # The Label Studio the jobs call (`ls`): given (e.g. a test's stand-in), or the real client from the settings
    label_studio: LabelStudioApi | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, label_studio: LabelStudioApi | None = None) -> Self:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        timeout = cls.redis_command_timeout(settings)
        store = ProjectStore(connect_redis(settings, timeout=timeout), settings.key_prefix)
        checkpoints = CheckpointCache(settings.model_dir, settings.model_cache_size, settings.device)
        encoders = EncoderCache(settings.max_length, settings.device, settings.inference_batch_size)
        checkpoints.encoders = encoders
        return cls(
            settings=settings,
            store=store,
            queues=JobQueues(connect_redis(settings, decode=False, timeout=timeout), settings.key_prefix),
            metrics=Metrics(store.r, settings.key_prefix),
            checkpoints=checkpoints,
            features=FeatureStore(settings.model_dir),
            encoders=encoders,
            label_studio=label_studio,
        )

    @staticmethod
    def redis_command_timeout(settings: Settings) -> float | None:
        """Workers keep the store's longer Redis timeouts (None)."""
        return None

    def require_label_studio(self, what: str = "training") -> None:
        """Raise `LabelStudioNotConfiguredError` unless the backend can call Label Studio."""
        if not self.settings.label_studio_configured:
            raise LabelStudioNotConfiguredError(
                f"{what} needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment"
            )

    @property
    def ls(self) -> LabelStudioApi:
        """The Label Studio the jobs call: the one given as ``label_studio``, else the real client
        from the settings (created on first use: only the jobs need it)."""
        if self.label_studio is None:
            self.require_label_studio()
            from backend.service.ls_client import LabelStudioClient

            self.label_studio = LabelStudioClient(
                self.settings.label_studio_url, self.settings.label_studio_api_key,
                timeout=self.settings.label_studio_timeout,
            )
        return self.label_studio


class Backend(JobContext):
    """The web process's runtime: the job context plus the per-request model objects."""

    @staticmethod
    def redis_command_timeout(settings: Settings) -> float | None:
        """Requests wait at most REDIS_REQUEST_TIMEOUT per Redis command (LS gives webhooks 1 s)."""
        return settings.redis_request_timeout


_context: JobContext | None = None


def context() -> JobContext:
    """The process's job context (from the environment unless `set_context` installed one)."""
    global _context
    if _context is None:
        _context = JobContext.from_settings(Settings.from_env())
    return _context


def set_context(ctx: JobContext | None) -> None:
    global _context
    _context = ctx
