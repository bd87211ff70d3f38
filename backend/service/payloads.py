"""Request bodies read one strict way: JSON with bounded parsing cost, every id and list element
type-checked before a route acts on it (so a bad input is a 4xx, never a 500 deep inside).

Parsing memory: a JSON body expands into Python objects (``[[],[],...]`` costs 64 bytes of objects
per 3 bytes of body). Every value but the first in a container follows a comma or a colon, and
every container opens with a bracket, so counting those bytes (at C speed, strings included: an
over-count) bounds the objects parsing can make, at most ~64 bytes each (a one-key dict). Bodies
with more than `max_json_values` of them are refused (413) before parsing.
"""
from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from backend.labeling import sanitize_text
from backend.service.api_errors import ApiError
from backend.service.ids import as_id

__all__ = ["json_body", "max_json_values", "check_predict", "check_webhook"]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Label Studio task JSON (a 1.1 KB task holds ~62 values) has ~17 body bytes per value.
BYTES_PER_VALUE = 8


def max_json_values(max_request_bytes: int) -> int:
    """Most JSON values (commas, colons, opening brackets) a body may hold: one per 8 bytes of the
    byte limit, 2x fewer than real task JSON of that size holds. At the 64 MiB default the worst body
    under the cap (12.6 MB of ``[[],...]``) peaks the worker at +371 MB (tests/faults/measure_predict_rss.py)."""
    return max(10_000, max_request_bytes // BYTES_PER_VALUE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _sanitized(value: Any) -> Any:
    """Every string (keys included) with lone surrogates replaced (they cannot be UTF-8 encoded)."""
    if isinstance(value, str):
        return sanitize_text(value)
    if isinstance(value, list):
        return [_sanitized(v) for v in value]
    if isinstance(value, dict):
        return {sanitize_text(k): _sanitized(v) for k, v in value.items()}
    return value


def _check_content_type() -> None:
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {mimetype!r}")


def json_body(max_request_bytes: int) -> dict[str, Any]:
    """The request's JSON object, or a 4xx saying exactly what is wrong with it."""
    _check_content_type()
    raw = request.get_data(cache=True)  # raises RequestEntityTooLarge past MAX_REQUEST_BYTES
    if not raw.strip():
        raise ApiError(400, "empty_body", "request body is empty: expected a JSON object")
    limit = max_json_values(max_request_bytes)
    values = raw.count(b",") + raw.count(b":") + raw.count(b"[") + raw.count(b"{")
    if values > limit:
        raise ApiError(413, "too_many_json_values", f"request body holds ~{values} JSON values, more than "
                       f"{limit} (MAX_REQUEST_BYTES / {BYTES_PER_VALUE}); send fewer tasks per request")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # a number past Python's int-string limit, NaN / Infinity
        raise ApiError(400, "malformed_json", f"request body is not usable JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "request body nests JSON too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"request body must be a JSON object, got {type(data).__name__}")
    return _sanitized(data) if _SURROGATE_ESCAPE.search(raw) else data


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _check_objects(value: Any, name: str, *, id_key: str | None = "id", plain_ids: bool = False,
                   id_required: bool = True) -> None:
    """Every element of ``value`` (a list, or one element) is an object whose ``id_key`` is a valid
    id (missing only when not ``id_required``); ``plain_ids`` also accepts a bare id."""
    for i, item in enumerate(_as_list(value)):
        if plain_ids and not isinstance(item, dict):
            if as_id(item) is None:
                raise _bad(f"'{name}[{i}]' must be a task object or a task id, got {item!r:.60}")
            continue
        if not isinstance(item, dict):
            raise _bad(f"'{name}[{i}]' must be an object, got {type(item).__name__}")
        if id_key is None or (not id_required and item.get(id_key) is None):
            continue
        if as_id(item.get(id_key)) is None:
            raise _bad(f"'{name}[{i}].{id_key}' must be an id (ASCII digits, at most 2**63-1), "
                       f"got {item.get(id_key)!r:.60}")


def check_predict(tasks: Any) -> list[dict[str, Any]]:
    """``tasks`` as Label Studio sends it to /predict: objects, each id (when present) a valid id."""
    if not isinstance(tasks, list):
        raise _bad("'tasks' must be a list of task objects")
    _check_objects(tasks, "tasks", id_required=False)
    return tasks


def check_webhook(action: str, data: dict[str, Any]) -> None:
    """The fields the event's handler reads have the types Label Studio sends."""
    if action in ("TASKS_CREATED", "TASKS_DELETED"):
        _check_objects(data.get("tasks"), "tasks")
    elif action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
        _check_objects(data.get("task"), "task", plain_ids=True)
        _check_objects(data.get("annotation"), "annotation", id_key="task", id_required=False)
    elif action == "ANNOTATIONS_DELETED":
        _check_objects(data.get("annotations"), "annotations", id_key=None)
