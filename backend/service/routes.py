"""The HTTP routes: Label Studio's ML backend protocol (`protocol`) and the backend's own
endpoints (`extras`). Each route reads the process's `Backend` with `runtime()`; errors are
raised and answered by `backend.service.api_errors`.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request, send_file
from rq.job import Job

from backend.service.api_errors import ApiError, project_model, runtime
from backend.service.ids import is_job_id
from backend.service.jobs.common import META_KIND, describe_job
from backend.service.jobs.successor import (
    export_paths,
    export_ready,
    parse_options,
    request_cancel,
    request_successor,
)
from backend.service.payloads import check_predict, check_webhook
from backend.service.payloads import json_body as parse_json_body
from backend.service.project_view import project_view
from backend.service.protocol import HANDLED_EVENTS, UnknownProjectError, parse_project_id
from backend.service.store import ProjectState, StoreUnavailableError
from backend.service.telemetry import CONTENT_TYPE

MODEL_CLASS = "FeasibleALModel"

protocol = Blueprint("protocol", __name__)
extras = Blueprint("extras", __name__)


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx saying exactly what is wrong with it."""
    return parse_json_body(runtime().settings.max_request_bytes)


def known_project(project: Any) -> tuple[int, ProjectState]:
    """The project id and its state, or 404 when Label Studio never connected it (no /setup)."""
    pid = parse_project_id(project)
    state = runtime().store.get_project(pid)
    if state is None:
        raise UnknownProjectError(f"unknown project {pid}: Label Studio has not connected it to this backend")
    return pid, state


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------------------- protocol


@protocol.get("/")
@protocol.get("/health")
def health() -> Response:
    try:
        runtime().store.ping()
    except StoreUnavailableError as exc:
        g.redis_failed = True  # app._observe: no metrics write to the Redis that just failed
        response = jsonify({"status": "DOWN", "model_class": MODEL_CLASS, "error": str(exc)})
        response.status_code = 503
        return response
    return jsonify({"status": "UP", "model_class": MODEL_CLASS, "redis": "ok"})


@protocol.post("/setup")
def setup() -> Response:
    data = json_body()
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise ApiError(400, "bad_request", "'schema' (the project's label config XML) is required")
    model = project_model(parse_project_id(data.get("project")), schema)
    return jsonify({"model_version": model.setup()})


@protocol.post("/predict")
def predict() -> Response:
    data = json_body()
    tasks = check_predict(data.get("tasks"))
    project = data.get("project")
    if project is None and tasks:
        project = tasks[0].get("project")
    label_config = data.get("label_config")
    if label_config is not None and not isinstance(label_config, str):
        raise ApiError(400, "bad_request", "'label_config' must be the label config XML string")
    model = project_model(parse_project_id(project), label_config or None)
    raw_params = data.get("params")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    results = model.predict(tasks, context=params.get("context"))
    return jsonify({"results": results, "model_version": model.model_version})


@protocol.post("/webhook")
def webhook() -> tuple[Response, int] | Response:
    data = json_body()
    action = data.get("action")
    if not isinstance(action, str) or not action:
        raise ApiError(400, "bad_request", "'action' (the Label Studio event name) is required")
    if action not in HANDLED_EVENTS:
        return jsonify({"status": "ignored", "action": action})
    check_webhook(action, data)
    project = data.get("project")
    label_config = _text_or_none(project.get("label_config")) if isinstance(project, dict) else None
    answer = project_model(parse_project_id(project), label_config).fit(action, data)
    return jsonify(answer), (201 if answer.get("training") == "enqueue" else 200)


@protocol.post("/train")
def train() -> tuple[Response, int]:
    """What Label Studio posts when its START_TRAINING-webhook feature flag is off."""
    data = json_body()
    model = project_model(parse_project_id(data.get("project")), _text_or_none(data.get("label_config")))
    return jsonify(model.fit("START_TRAINING", {"project": data.get("project")})), 201


@protocol.get("/versions")
def versions() -> Response:
    store = runtime().store
    project = request.args.get("project")
    if project is not None:
        pid, _ = known_project(project)
        return jsonify({"versions": store.versions(pid), "current": store.current_version(pid)})
    found: list[str] = []
    for pid in store.project_ids():
        found.extend(v for v in store.versions(pid) if v not in found)
    return jsonify({"versions": found})


# ------------------------------------------------------------------------------- extras


@extras.get("/metrics")
def metrics() -> Response:
    backend = runtime()
    body = backend.metrics.render(backend.store, backend.queues.all())
    return Response(body, mimetype=None, content_type=CONTENT_TYPE)


@extras.get("/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    described = describe_job(runtime(), job_id) if is_job_id(job_id) else None
    if described is None:
        raise ApiError(404, "unknown_job", f"no job {job_id[:80]!r} (finished jobs are kept for 7 days)")
    return jsonify(described)


@extras.get("/projects/<project_id>")
def project_status(project_id: str) -> Response:
    pid, _ = known_project(project_id)
    return jsonify(project_view(runtime(), pid))


@extras.post("/successor")
def successor() -> tuple[Response, int]:
    """Build the final model with PLASM (queue "successor"): 202 with the job id."""
    backend = runtime()
    data = json_body()
    pid, _ = known_project(data.get("project"))
    options = parse_options(backend.settings, data)
    backend.require_label_studio("building a successor")
    job_id = request_successor(backend, pid, options)
    return jsonify({"job_id": job_id, "status": f"/jobs/{job_id}"}), 202


def _successor_job(job_id: str) -> tuple[Job, Any]:
    """The successor job and its export paths, or 404 for any other id."""
    backend = runtime()
    paths = export_paths(backend.settings.model_dir, job_id)  # None unless a well-formed successor job id
    job = backend.queues.fetch(job_id) if paths is not None else None
    if job is None or (job.meta or {}).get(META_KIND) != "successor":
        raise ApiError(404, "unknown_job", f"no successor job {job_id[:80]!r} (finished jobs are kept for 7 days)")
    return job, paths


@extras.get("/successor/<job_id>/download")
def successor_download(job_id: str) -> Response:
    job, (_, archive) = _successor_job(job_id)
    if not export_ready(runtime(), job_id) or not archive.is_file():
        raise ApiError(404, "not_ready", f"successor job {job_id} has no export (yet): see /jobs/{job_id}")
    return send_file(archive, mimetype="application/gzip", as_attachment=True, download_name=archive.name)


@extras.post("/successor/<job_id>/cancel")
def successor_cancel(job_id: str) -> tuple[Response, int]:
    _successor_job(job_id)
    request_cancel(runtime(), job_id)
    return jsonify({"job_id": job_id, "cancel": "requested"}), 202
