"""The backend's settings: one typed object, read from the environment in one place.

Every field is an environment variable of the same name in upper case (``redis_url`` ->
``REDIS_URL``). `Settings.from_env()` is the only code that reads the environment; everything
else receives a `Settings`. Secrets (the Label Studio API key, the basic-auth password, a password
inside ``REDIS_URL``) never appear in ``repr``, logs or `describe()`.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.engine.acquisition.cold_start import COLD_START_LABELS
from backend.engine.acquisition.sampling import DEFAULT_FULL_RESCORE_ITERATIONS
from backend.engine.acquisition.strategies import STRATEGIES
from backend.engine.models.transformer import TrainingConfig
from backend.engine.quality import AUDIT_SHARE

__all__ = ["Settings", "SettingsError", "SECRET_FIELDS"]

SECRET_FIELDS = frozenset({"label_studio_api_key", "basic_auth_pass"})
_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SettingsError(ValueError):
    """A setting is missing, malformed or out of range; the message names the variable."""


def _int_tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        return tuple(int(p) for p in parts)
    return tuple(int(v) for v in value)


@dataclass(repr=False)
class Settings:
    """Backend configuration (defaults suit one machine: gunicorn + Redis + one RQ worker)."""

    # --- Label Studio (backend -> LS calls) -------------------------------------------------
    label_studio_url: str = field(default="", metadata={
        "help": "Label Studio base URL the workers call (fetch annotations, push predictions)"})
    label_studio_api_key: str = field(default="", metadata={
        "help": "personal access token (or legacy token) for LABEL_STUDIO_URL; secret"})
    label_studio_timeout: float = field(default=60.0, metadata={"help": "seconds per Label Studio API call"})
    # --- LS -> backend auth -------------------------------------------------------------------
    basic_auth_user: str = field(default="", metadata={"help": "HTTP basic-auth user LS must send; empty = no auth"})
    basic_auth_pass: str = field(default="", metadata={"help": "HTTP basic-auth password; secret"})
    # --- processes ----------------------------------------------------------------------------
    host: str = field(default="0.0.0.0", metadata={"help": "address `feasible-al serve` binds"})
    port: int = field(default=9090, metadata={"help": "port `feasible-al serve` binds"})
    workers: int = field(default=1, metadata={"help": "gunicorn worker processes"})
    threads: int = field(default=8, metadata={"help": "threads per gunicorn worker"})
    redis_url: str = field(default="redis://localhost:6379/0", metadata={"help": "Redis for state and RQ queues"})
    redis_timeout: float = field(default=2.0, metadata={
        "help": "seconds to connect to / wait for Redis (keeps /webhook under LS's 1 s timeout when Redis is down)"})
    redis_request_timeout: float = field(default=0.5, metadata={
        "help": "seconds a web request waits for one Redis command (LS gives webhooks 1 s); workers use REDIS_TIMEOUT"})
    body_read_timeout: float = field(default=5.0, metadata={
        "help": "seconds a request body may stall before the request is dropped (408)"})
    key_prefix: str = field(default="feasible-al", metadata={
        "help": "prefix of every Redis key and RQ queue name (several backends can share one Redis)"})
    model_dir: Path = field(default=Path("models"), metadata={
        "help": "checkpoints: MODEL_DIR/<project>/<version>/ (shared by the web process and workers)"})
    keep_versions: int = field(default=3, metadata={"help": "checkpoints kept per project (older ones deleted)"})
    max_request_bytes: int = field(default=64 * 1024 * 1024, metadata={
        "help": "largest request body accepted (LS sends all selected tasks in one /predict: ~55k tasks of "
                "1.1 KB; worst-case parsing peak ~+0.4 GB)"})
    job_timeout: int = field(default=6 * 3600, metadata={"help": "seconds before RQ kills a training job"})
    heartbeat_ttl: int = field(default=30, metadata={
        "help": "seconds without a worker heartbeat before its running job is declared dead (killed, OOM, host lost)"})
    janitor_interval: float = field(default=10.0, metadata={
        "help": "seconds between a worker's checks for jobs whose worker died"})
    chunk_retries: int = field(default=2, metadata={
        "help": "times a scoring chunk whose worker died (or lost Redis) is run again"})
    # --- active learning ----------------------------------------------------------------------
    train_every_n: int = field(default=10, metadata={
        "help": "retrain after this many annotation events (0 = only on Start training)"})
    acquisition_model: str = field(default="distilbert-base-uncased", metadata={
        "help": "acquisition model: hub name or local checkpoint directory"})
    teacher_model: str = field(default="bert-base-uncased", metadata={
        "help": "PLASM teacher (pseudo-labeling model) for POST /successor: hub name or local directory"})
    successor_model: str = field(default="google/electra-base-discriminator", metadata={
        "help": "PLASM successor for POST /successor: AutoModelFor... checkpoint, or cnn / bilstm-crf"})
    strategy: str = field(default="auto", metadata={
        "help": "auto (least_confidence / mnlp) | " + " | ".join(STRATEGIES)})
    ups_gamma: float = field(default=0.1, metadata={"help": "UPS: top share of the pool always re-scored"})
    ups_temperature: float = field(default=0.01, metadata={"help": "UPS: decay temperature T"})
    full_rescore_iterations: tuple[int, ...] = field(default=DEFAULT_FULL_RESCORE_ITERATIONS, metadata={
        "help": "iterations that re-score the whole pool, e.g. '1,2,5,9'"})
    score_chunk_size: int = field(default=1000, metadata={
        "help": "pool tasks per scoring job (several workers share the pool)"})
    push_batch_size: int = field(default=1000, metadata={"help": "predictions per bulk import call"})
    pool_refresh_every: int = field(default=20, metadata={
        "help": "re-list the unlabeled pool from LS every N iterations (else kept in Redis, updated by events)"})
    # --- fast path (proxy head on frozen pool features) --------------------------------------
    fast_path: str = field(default="on", metadata={
        "help": "on: after each annotation a logistic head on pool features re-orders LS within seconds "
                "(classification; queue 'fast'); off: only full iterations change the order"})
    fast_update_delay: float = field(default=0.0, metadata={
        "help": "seconds a fast update waits after the latest annotation event (coalesces bursts; "
                "events during a queued or running update always fold into the next one)"})
    fast_top_k: int = field(default=32, metadata={
        "help": "most uncertain tasks a fast update pushes to LS (Uncertainty sampling only sees those)"})
    fast_cold_start: int = field(default=COLD_START_LABELS, metadata={
        "help": "until a project has this many labels, the fast path serves the pool's most typical texts "
                "first (k-means over the features) rather than the least confident (0: off)"})
    audit_share: float = field(default=AUDIT_SHARE, metadata={
        "help": "share of the fast path's pushed slots given to tasks drawn uniformly from the pool (audits): "
                "their labels give the honest quality estimate on the project manager's page (0: off)"})
    fast_encode_limit: int = field(default=256, metadata={
        "help": "tasks without features a fast update encodes itself (more: chunk jobs on 'scoring')"})
    feature_model: str = field(default="", metadata={
        "help": "encoder of the pool features (empty = ACQUISITION_MODEL), used frozen"})
    finetune_min_heldout: int = field(default=10, metadata={
        "help": "labels that arrived after a fine-tune, needed before its accuracy on them can make it serve"})
    label_control_name: str = field(default="", metadata={
        "help": "control tag to learn when the config has several (default: the first supported one)"})
    seed: int = field(default=0, metadata={"help": "seed for training and the UPS sampler"})
    model_cache_size: int = field(default=2, metadata={"help": "checkpoints kept loaded per process"})
    # --- training overrides (empty = the paper's defaults for the task type) -----------------
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present) | cpu | cuda[:n]"})
    torch_threads: int = field(default=0, metadata={
        "help": "CPU threads per process for torch (0 = torch's default, one per core; they wait passively, "
                "OMP_WAIT_POLICY=PASSIVE, so processes sharing the cores do not stall each other)"})
    epochs: int | None = field(default=None, metadata={
        "help": "default 5 classification / 15 tagging (in proportion below 1,000 sentences), raised until a fit "
                "takes MIN_STEPS steps"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "default 1e-4 classification / 3e-4 tagging up to 200 sentences, down to the paper's 5e-5 at 1,000"})
    min_steps: int = field(default=100, metadata={
        "help": "with EPOCHS unset, at least this many optimizer steps per fit (0 = the paper's epochs)"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text"})
    inference_batch_size: int | None = field(default=None, metadata={"help": "default 64 CPU / 512 CUDA"})

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.full_rescore_iterations = _int_tuple(self.full_rescore_iterations)
        self.label_studio_url = self.label_studio_url.rstrip("/")
        checks: list[tuple[bool, str, str]] = [
            (self.workers >= 1, "WORKERS", "must be >= 1"),
            (self.threads >= 1, "THREADS", "must be >= 1"),
            (1 <= self.port <= 65535, "PORT", "must be a TCP port"),
            (self.train_every_n >= 0, "TRAIN_EVERY_N", "must be >= 0"),
            (0.0 <= self.ups_gamma <= 1.0, "UPS_GAMMA", "must be in [0, 1]"),
            (self.ups_temperature > 0, "UPS_TEMPERATURE", "must be > 0"),
            (all(i >= 1 for i in self.full_rescore_iterations), "FULL_RESCORE_ITERATIONS", "iterations start at 1"),
            (self.score_chunk_size >= 1, "SCORE_CHUNK_SIZE", "must be >= 1"),
            (self.push_batch_size >= 1, "PUSH_BATCH_SIZE", "must be >= 1"),
            (self.pool_refresh_every >= 1, "POOL_REFRESH_EVERY", "must be >= 1"),
            (self.max_request_bytes >= 1024, "MAX_REQUEST_BYTES", "must be >= 1024"),
            (self.keep_versions >= 2, "KEEP_VERSIONS", "must be >= 2 (the serving one and the previous)"),
            (self.model_cache_size >= 1, "MODEL_CACHE_SIZE", "must be >= 1"),
            (self.job_timeout >= 60, "JOB_TIMEOUT", "must be >= 60 seconds"),
            (self.heartbeat_ttl >= 3, "HEARTBEAT_TTL", "must be >= 3 seconds"),
            (self.janitor_interval > 0, "JANITOR_INTERVAL", "must be > 0"),
            (self.chunk_retries >= 0, "CHUNK_RETRIES", "must be >= 0"),
            (self.redis_timeout > 0, "REDIS_TIMEOUT", "must be > 0"),
            (self.redis_request_timeout > 0, "REDIS_REQUEST_TIMEOUT", "must be > 0"),
            (self.body_read_timeout > 0, "BODY_READ_TIMEOUT", "must be > 0"),
            (self.torch_threads >= 0, "TORCH_THREADS", "must be >= 0"),
            (self.fast_path in ("on", "off"), "FAST_PATH", "must be on or off"),
            (self.fast_update_delay >= 0, "FAST_UPDATE_DELAY", "must be >= 0"),
            (self.fast_top_k >= 1, "FAST_TOP_K", "must be >= 1"),
            (self.fast_encode_limit >= 0, "FAST_ENCODE_LIMIT", "must be >= 0"),
            (self.fast_cold_start >= 0, "FAST_COLD_START", "must be >= 0"),
            (0 <= self.audit_share < 1, "AUDIT_SHARE", "must be in [0, 1)"),
            (self.finetune_min_heldout >= 1, "FINETUNE_MIN_HELDOUT", "must be >= 1"),
            (self.label_studio_timeout > 0, "LABEL_STUDIO_TIMEOUT", "must be > 0"),
            (self.strategy == "auto" or self.strategy in STRATEGIES, "STRATEGY",
             f"must be auto or one of {', '.join(STRATEGIES)}"),
            (bool(_KEY_PREFIX_RE.match(self.key_prefix)), "KEY_PREFIX", "letters, digits, '_', '.', '-' only"),
            (bool(self.acquisition_model.strip()), "ACQUISITION_MODEL", "must not be empty"),
            (bool(self.basic_auth_user) or not self.basic_auth_pass, "BASIC_AUTH_USER",
             "is required when BASIC_AUTH_PASS is set"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise SettingsError(f"{name} {message} (got {self._shown(name.lower())!r})")
        if self.label_studio_url and urllib.parse.urlsplit(self.label_studio_url).scheme not in ("http", "https"):
            raise SettingsError(f"LABEL_STUDIO_URL must be an http(s) URL (got {self.label_studio_url!r})")
        try:
            self.training_config()
        except ValueError as exc:
            raise SettingsError(f"training settings: {exc}") from None

    # ------------------------------------------------------------------ derived views
    def training_config(self) -> TrainingConfig:
        return TrainingConfig(
            epochs=self.epochs, learning_rate=self.learning_rate, min_steps=self.min_steps,
            batch_size=self.batch_size,
            max_length=self.max_length, inference_batch_size=self.inference_batch_size,
            seed=self.seed, device=self.device,
        )

    @property
    def fast_enabled(self) -> bool:
        return self.fast_path == "on"

    @property
    def feature_encoder(self) -> str:
        """The pretrained encoder of the pool features."""
        return self.feature_model or self.acquisition_model

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    @property
    def label_studio_configured(self) -> bool:
        return bool(self.label_studio_url and self.label_studio_api_key)

    # ------------------------------------------------------------------ environment
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build from environment variables (``os.environ`` by default); unset or empty = default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or (raw.strip() == "" and f.name not in SECRET_FIELDS):
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        return cls(**values)

    @classmethod
    def help_text(cls) -> str:
        """One line per variable, for `--help` epilogs and the README."""
        return "\n".join(
            f"  {f.name.upper():<26}{f.metadata.get('help', '')}" for f in fields(cls)
        )

    # ------------------------------------------------------------------ safe display
    def _shown(self, name: str) -> Any:
        value = getattr(self, name, None)
        if name in SECRET_FIELDS:
            return "***" if value else ""
        if name == "redis_url" and isinstance(value, str):
            return redact_url(value)
        return value

    def describe(self) -> dict[str, Any]:
        """All settings with secrets masked (for logs and /metrics labels)."""
        return {f.name: (str(v) if isinstance(v := self._shown(f.name), Path) else v) for f in fields(self)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"Settings({inner})"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:secret@host`` -> ``redis://:***@host``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _parse(name: str, type_name: str, raw: str) -> Any:
    """Parse one environment value by the field's annotation (annotations are strings here)."""
    env_name = name.upper()
    text = raw.strip()
    try:
        if "tuple" in type_name:
            return _int_tuple(text)
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
        if type_name == "Path":
            return Path(text).expanduser()
    except ValueError:
        kind = "integers separated by commas" if "tuple" in type_name else type_name.split(" ")[0]
        shown = "***" if name in SECRET_FIELDS else raw
        raise SettingsError(f"{env_name} must be {kind} (got {shown!r})") from None
    return raw if name in SECRET_FIELDS else text
