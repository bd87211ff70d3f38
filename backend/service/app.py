"""Flask app speaking Label Studio's ML backend protocol, plus job, project and metrics endpoints.

Protocol (measured against Label Studio 1.23.2, see DESIGN.md section 4): ``GET /health``,
``POST /setup``, ``POST /predict``, ``POST /webhook`` (``START_TRAINING`` included), ``GET /versions``;
``POST /train`` for Label Studio builds that still post there. Extras: ``GET /metrics``
(Prometheus), ``GET /jobs/<id>``, ``GET /projects/<id>``, and the PLASM successor build:
``POST /successor``, ``GET /successor/<job id>/download``, ``POST /successor/<job id>/cancel``.

Every error is JSON ``{"error": <code>, "message": <what is wrong>, "status": <http status>}``.
Optional HTTP basic auth guards every endpoint. Nothing here trains or scores a pool: requests
answer from Redis and enqueue work, so ``/webhook`` stays far under Label Studio's 1 s timeout.
"""
from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.service.settings import Settings
from backend.service.jobs.iteration import LabelStudioNotConfiguredError, describe_job
from backend.labeling import LabelConfigError, UnsupportedLabelConfigError
from backend.service.telemetry import CONTENT_TYPE
from backend.model import (
    HANDLED_EVENTS,
    Backend,
    InvalidRequestError,
    ModelUnavailableError,
    UnknownProjectError,
    parse_project_id,
)
from backend.service.store import REDIS_ERRORS, StoreUnavailableError
from backend.service.jobs.successor import (
    SuccessorOptionsError,
    SuccessorRunningError,
    export_paths,
    parse_options,
    request_cancel,
    request_successor,
)

log = logging.getLogger(__name__)

MODEL_CLASS = "FeasibleALModel"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": code, "message": message, "status": status})
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _body() -> dict[str, Any]:
    """The request's JSON object, or a 400 saying exactly what is wrong with it."""
    raw = request.get_data(cache=True)  # raises RequestEntityTooLarge past MAX_REQUEST_BYTES
    if not raw.strip():
        raise ApiError(400, "empty_body", "request body is empty: expected a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"request body must be a JSON object, got {type(data).__name__}")
    return data


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


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Flask:
    """The WSGI app. Builds its `Backend` from the settings (environment by default)."""
    if backend is None:
        settings = settings or Settings.from_env()
        backend = Backend.from_settings(settings)
    settings = backend.settings
    app = Flask("feasible_al_backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["feasible_al"] = backend

    # ------------------------------------------------------------------ auth, metrics
    @app.before_request
    def _before() -> Response | None:
        g.started = time.perf_counter()
        if settings.auth_enabled:
            auth = request.authorization
            ok = (
                auth is not None
                and auth.type == "basic"
                and hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode())
                and hmac.compare_digest((auth.password or "").encode(), settings.basic_auth_pass.encode())
            )
            if not ok:
                return _error(401, "unauthorized", "HTTP basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)",
                              {"WWW-Authenticate": 'Basic realm="feasible-al"'})
        return None

    @app.after_request
    def _after(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("started")
        if started is not None:
            backend.metrics.observe_request(endpoint, request.method, response.status_code,
                                            time.perf_counter() - started)
        return response

    # ------------------------------------------------------------------ errors
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(InvalidRequestError)
    def _invalid(exc: InvalidRequestError) -> Response:
        return _error(400, "bad_request", str(exc))

    @app.errorhandler(SuccessorOptionsError)
    def _bad_options(exc: SuccessorOptionsError) -> Response:
        return _error(400, "bad_options", str(exc))

    @app.errorhandler(SuccessorRunningError)
    def _running(exc: SuccessorRunningError) -> Response:
        response = jsonify({"error": "successor_running", "job_id": exc.job_id, "message": str(exc), "status": 409})
        response.status_code = 409
        return response

    @app.errorhandler(UnsupportedLabelConfigError)
    def _unsupported(exc: UnsupportedLabelConfigError) -> Response:
        return _error(422, "unsupported_label_config", str(exc))

    @app.errorhandler(LabelConfigError)
    def _bad_config(exc: LabelConfigError) -> Response:
        return _error(422, "invalid_label_config", str(exc))

    @app.errorhandler(UnknownProjectError)
    def _unknown(exc: UnknownProjectError) -> Response:
        return _error(404, "unknown_project", str(exc))

    @app.errorhandler(ModelUnavailableError)
    def _no_model(exc: ModelUnavailableError) -> Response:
        return _error(503, "model_unavailable", str(exc))

    @app.errorhandler(LabelStudioNotConfiguredError)
    def _no_ls(exc: LabelStudioNotConfiguredError) -> Response:
        return _error(503, "label_studio_not_configured", str(exc))

    def _redis_down(exc: Exception) -> Response:
        return _error(503, "redis_unavailable",
                      f"Redis at {backend.store.where} is unavailable ({exc}); nothing was lost: "
                      "Label Studio keeps every annotation, retry or press Start training once Redis is back")

    for exc_class in (*REDIS_ERRORS, StoreUnavailableError):
        app.register_error_handler(exc_class, _redis_down)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        _discard_body(4 * settings.max_request_bytes)
        return _error(413, "request_too_large",
                      f"request body exceeds MAX_REQUEST_BYTES={settings.max_request_bytes} bytes; "
                      "send fewer tasks per request or raise the limit")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")

    # ------------------------------------------------------------------ protocol
    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        try:
            backend.store.ping()
        except StoreUnavailableError as exc:
            response = jsonify({"status": "DOWN", "model_class": MODEL_CLASS, "error": str(exc)})
            response.status_code = 503
            return response
        return jsonify({"status": "UP", "model_class": MODEL_CLASS, "redis": "ok"})

    @app.post("/setup")
    def setup() -> Response:
        data = _body()
        schema = data.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise ApiError(400, "bad_request", "'schema' (the project's label config XML) is required")
        model = backend.model(parse_project_id(data.get("project")), schema)
        return jsonify({"model_version": model.setup()})

    @app.post("/predict")
    def predict() -> Response:
        data = _body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise ApiError(400, "bad_request", "'tasks' must be a list of task objects")
        project = data.get("project")
        if project is None and tasks and isinstance(tasks[0], dict):
            project = tasks[0].get("project")
        label_config = data.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise ApiError(400, "bad_request", "'label_config' must be the label config XML string")
        model = backend.model(parse_project_id(project), label_config or None)
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        results = model.predict(tasks, context=params.get("context"))
        return jsonify({"results": results, "model_version": model.model_version})

    @app.post("/webhook")
    def webhook() -> Response:
        data = _body()
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise ApiError(400, "bad_request", "'action' (the Label Studio event name) is required")
        if action not in HANDLED_EVENTS:
            return jsonify({"status": "ignored", "action": action})
        project = data.get("project")
        label_config = project.get("label_config") if isinstance(project, dict) else None
        model = backend.model(parse_project_id(project), label_config if isinstance(label_config, str) else None)
        answer = model.fit(action, data)
        return jsonify(answer), (201 if answer.get("training") == "enqueue" else 200)

    @app.post("/train")
    def train() -> Response:
        """What Label Studio posts when its START_TRAINING-webhook feature flag is off."""
        data = _body()
        label_config = data.get("label_config") if isinstance(data.get("label_config"), str) else None
        model = backend.model(parse_project_id(data.get("project")), label_config)
        answer = model.fit("START_TRAINING", {"project": data.get("project")})
        return jsonify(answer), 201

    @app.get("/versions")
    def versions() -> Response:
        project = request.args.get("project")
        if project is not None:
            pid = parse_project_id(project)
            if backend.store.get_project(pid) is None:
                raise UnknownProjectError(f"unknown project {pid}")
            return jsonify({"versions": backend.store.versions(pid), "current": backend.store.current_version(pid)})
        found: list[str] = []
        for pid in backend.store.project_ids():
            found.extend(v for v in backend.store.versions(pid) if v not in found)
        return jsonify({"versions": found})

    # ------------------------------------------------------------------ extras
    @app.get("/metrics")
    def metrics() -> Response:
        body = backend.metrics.render(backend.store, backend.queues.all())
        return Response(body, mimetype=None, content_type=CONTENT_TYPE)

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Response:
        described = describe_job(backend, job_id)
        if described is None:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (finished jobs are kept for 7 days)")
        return jsonify(described)

    @app.post("/successor")
    def successor() -> Response:
        """Build the final model with PLASM (queue "successor"): 202 with the job id."""
        data = _body()
        pid = parse_project_id(data.get("project"))
        if backend.store.get_project(pid) is None:
            raise UnknownProjectError(f"unknown project {pid}: Label Studio has not connected it to this backend")
        options = parse_options(settings, data)
        if not settings.label_studio_configured:
            raise LabelStudioNotConfiguredError(
                "building a successor needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment")
        job_id = request_successor(backend, pid, options)
        return jsonify({"job_id": job_id, "status": f"/jobs/{job_id}"}), 202

    def _successor_job(job_id: str):
        paths = export_paths(settings.model_dir, job_id)  # None unless a well-formed successor job id
        job = backend.queues.fetch(job_id) if paths is not None else None
        if job is None or (job.meta or {}).get("kind") != "successor":
            raise ApiError(404, "unknown_job", f"no successor job {job_id!r} (finished jobs are kept for 7 days)")
        return job, paths

    @app.get("/successor/<job_id>/download")
    def successor_download(job_id: str) -> Response:
        job, (_, archive) = _successor_job(job_id)
        if (job.meta or {}).get("stage") != "done" or not archive.is_file():
            raise ApiError(404, "not_ready", f"successor job {job_id} has no export (yet): see /jobs/{job_id}")
        return send_file(archive, mimetype="application/gzip", as_attachment=True, download_name=archive.name)

    @app.post("/successor/<job_id>/cancel")
    def successor_cancel(job_id: str) -> Response:
        _successor_job(job_id)
        request_cancel(backend, job_id)
        return jsonify({"job_id": job_id, "cancel": "requested"}), 202

    @app.get("/projects/<project_id>")
    def project_status(project_id: str) -> Response:
        pid = parse_project_id(project_id)
        state = backend.store.get_project(pid)
        if state is None:
            raise UnknownProjectError(f"unknown project {pid}: Label Studio has not connected it to this backend")
        out = state.public()
        out["pool_size"] = backend.store.pool_size(pid)
        out["versions"] = backend.store.versions(pid)
        out["last_iteration"] = backend.store.last_iteration(pid)
        return jsonify(out)

    return app
