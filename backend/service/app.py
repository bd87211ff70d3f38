"""Flask app speaking Label Studio's ML backend protocol, plus job, project and metrics endpoints.

Protocol (measured against Label Studio 1.23.2, see DESIGN.md section 4): ``GET /health``,
``POST /setup``, ``POST /predict``, ``POST /webhook`` (``START_TRAINING`` included), ``GET /versions``;
``POST /train`` for Label Studio builds that still post there. Extras: ``GET /metrics``
(Prometheus), ``GET /jobs/<id>``, ``GET /projects/<id>``, and the PLASM successor build:
``POST /successor``, ``GET /successor/<job id>/download``, ``POST /successor/<job id>/cancel``.

Every error is JSON ``{"error": <code>, "message": <what is wrong>, "status": <http status>}``
(`backend.service.api_errors`); the routes are in `backend.service.routes`. Optional HTTP basic
auth guards every endpoint. Nothing here trains or scores a pool: requests answer from Redis and
enqueue work, so ``/webhook`` stays far under Label Studio's 1 s timeout.
"""
from __future__ import annotations

import hmac
import time

from flask import Flask, Response, g, request

from backend.service.api_errors import MODEL_CLASS_KEY, RUNTIME_KEY, error_response, register_error_handlers, runtime
from backend.service.limits import BodyGuard
from backend.service.protocol import ModelClass
from backend.service.routes import extras, protocol
from backend.service.runtime import Backend
from backend.service.settings import Settings
from backend.service.ui import ui

_AUTH_REQUIRED = "HTTP basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)"


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())


def _start_timer() -> None:
    g.started = time.perf_counter()


def _authenticate() -> Response | None:
    """401 unless the request carries the configured basic-auth credentials (when auth is on)."""
    settings = runtime().settings
    if not settings.auth_enabled:
        return None
    auth = request.authorization
    if (auth is not None and auth.type == "basic" and _same(auth.username, settings.basic_auth_user)
            and _same(auth.password, settings.basic_auth_pass)):
        return None
    return error_response(401, "unauthorized", _AUTH_REQUIRED,
                          headers={"WWW-Authenticate": 'Basic realm="feasible-al"'})


def _observe(response: Response) -> Response:
    """Count the request and its latency in the shared Prometheus metrics."""
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("started")
    if started is not None and not g.get("redis_failed"):
        runtime().metrics.observe_request(endpoint, request.method, response.status_code,
                                          time.perf_counter() - started)
    return response


def create_app(model_class: ModelClass, settings: Settings | None = None, backend: Backend | None = None) -> Flask:
    """The WSGI app serving `model_class` (upstream's ``init_app(model_class=...)``; `backend/_wsgi.py`
    passes `FeasibleALModel`). Builds its `Backend` from the settings (environment by default)."""
    if backend is None:
        backend = Backend.from_settings(settings or Settings.from_env())
    app = Flask("feasible_al_backend")
    app.config["MAX_CONTENT_LENGTH"] = backend.settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[RUNTIME_KEY] = backend
    app.extensions[MODEL_CLASS_KEY] = model_class
    app.before_request(_start_timer)
    app.before_request(_authenticate)
    app.after_request(_observe)
    register_error_handlers(app)
    app.register_blueprint(protocol)
    app.register_blueprint(extras)
    app.register_blueprint(ui)
    app.wsgi_app = BodyGuard(app.wsgi_app, backend.settings.max_request_bytes,  # type: ignore[method-assign]
                             backend.settings.body_read_timeout)
    return app
