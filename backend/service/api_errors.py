"""Every error the HTTP API answers, as JSON ``{"error": <code>, "message": ..., "status": <http>}``.

One table maps the service's exceptions to their HTTP status and error code; the few errors that
need more (the request's own `ApiError`, an oversized body, werkzeug's HTTP errors, a bug) have
their own handler below it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.labeling import LabelConfigError, UnsupportedLabelConfigError
from backend.service.jobs.successor import SuccessorOptionsError, SuccessorRunningError
from backend.service.protocol import (
    InvalidRequestError,
    ModelClass,
    ModelUnavailableError,
    ProjectModel,
    UnknownProjectError,
)
from backend.service.runtime import Backend, LabelStudioNotConfiguredError
from backend.service.store import REDIS_ERRORS, StoreUnavailableError

log = logging.getLogger(__name__)

RUNTIME_KEY = "feasible_al"  # app.extensions[RUNTIME_KEY] is the process's `Backend`
MODEL_CLASS_KEY = "feasible_al_model_class"  # and app.extensions[MODEL_CLASS_KEY] the model class it serves


def runtime() -> Backend:
    """The `Backend` of the app handling the current request."""
    backend: Backend = current_app.extensions[RUNTIME_KEY]  # set by create_app
    return backend


def project_model(project_id: int, label_config: str | None = None) -> ProjectModel:
    """The served model class's object for one project (built per request: state lives in Redis)."""
    model_class: ModelClass = current_app.extensions[MODEL_CLASS_KEY]  # set by create_app
    return model_class(project_id, runtime(), label_config)


class ApiError(Exception):
    """A request the route itself rejects, with its status and error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   **fields: Any) -> Response:
    """The JSON error body; ``fields`` (e.g. ``job_id``) go between the code and the message."""
    response = jsonify({"error": code, **fields, "message": message, "status": status})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _redis_message(exc: Exception) -> str:
    return (f"Redis at {runtime().store.where} is unavailable ({exc}); nothing was lost: Label Studio keeps "
            "every annotation, retry or press Start training once Redis is back")


@dataclass(frozen=True)
class ErrorKind:
    """How one exception class is answered: status, code, message and extra body fields."""

    status: int
    code: str
    message: Callable[[Exception], str] = str
    fields: Callable[[Exception], dict[str, Any]] = field(default=lambda exc: {})


_REDIS_DOWN = ErrorKind(503, "redis_unavailable", _redis_message)

# Flask picks the entry of the nearest class in an exception's MRO, so a subclass
# (UnsupportedLabelConfigError < LabelConfigError) keeps its own code.
ERRORS: dict[type[Exception], ErrorKind] = {
    InvalidRequestError: ErrorKind(400, "bad_request"),
    SuccessorOptionsError: ErrorKind(400, "bad_options"),
    UnknownProjectError: ErrorKind(404, "unknown_project"),
    SuccessorRunningError: ErrorKind(409, "successor_running", fields=lambda exc: {
        "job_id": exc.job_id if isinstance(exc, SuccessorRunningError) else None}),
    UnsupportedLabelConfigError: ErrorKind(422, "unsupported_label_config"),
    LabelConfigError: ErrorKind(422, "invalid_label_config"),
    ModelUnavailableError: ErrorKind(503, "model_unavailable"),
    LabelStudioNotConfiguredError: ErrorKind(503, "label_studio_not_configured"),
    StoreUnavailableError: _REDIS_DOWN,
    **{cls: _REDIS_DOWN for cls in REDIS_ERRORS},
}


def _handler(kind: ErrorKind) -> Callable[[Exception], Response]:
    def handle(exc: Exception) -> Response:
        if kind is _REDIS_DOWN:
            g.redis_failed = True  # one Redis failure per request: app._observe skips the metrics write
        return error_response(kind.status, kind.code, kind.message(exc), **kind.fields(exc))
    return handle


def _discard_body(limit: int) -> None:
    """Read and drop an oversized body (in small chunks, so no memory is spent) before answering
    413: a server that answers while the client is still sending resets the connection, and the
    client then sees a broken pipe instead of our JSON error. Bodies past `limit` are not drained."""
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if not length or length > limit or stream is None:
        return
    remaining = length
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
    except OSError:
        pass


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message)


def _too_large(exc: RequestEntityTooLarge) -> Response:
    limit = runtime().settings.max_request_bytes
    _discard_body(4 * limit)
    return error_response(413, "request_too_large", f"request body exceeds MAX_REQUEST_BYTES={limit} bytes; "
                          "send fewer tasks per request or raise the limit")


def _http(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")


def register_error_handlers(app: Flask) -> None:
    for exc_class, kind in ERRORS.items():
        app.register_error_handler(exc_class, _handler(kind))
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
