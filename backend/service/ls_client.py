"""The only module that calls Label Studio's API (through ``label-studio-sdk`` 2.x).

Everything the backend needs from Label Studio goes through :class:`LabelStudioClient`:
reading the project and its tasks, pushing predictions in bulk, and setting the project's
``model_version`` (Label Studio's prediction-score ordering and *Uncertainty sampling* only count
predictions of that version). A few extra calls (create a project, import tasks, annotate,
connect an ML backend, start training, ``/next``) exist for tests and tooling.

The connection is always ``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY`` from the backend's own
settings. The ``hostname`` / ``access_token`` Label Studio sends in ``/setup`` are unauthenticated
input and are never used to call out (SSRF).

Errors are precise and never carry the API key:

- :class:`LabelStudioUnavailableError`: cannot connect, timed out, or a 502/503/504;
- :class:`LabelStudioAuthError`: 401/403 (wrong, expired or legacy-disabled token);
- :class:`LabelStudioNotFoundError`: 404 (no such project, task, ML backend);
- :class:`LabelStudioError`: anything else (e.g. a 400 for a malformed prediction), with
  ``status_code`` set when there was an HTTP answer.

Task listing uses ``GET /api/tasks`` with a Data Manager filter on ``total_annotations``
(non-cancelled annotations), ordered by id and paged by ``total``. It reads the JSON as Label Studio
sends it (no SDK model round trip), and supports the sparse-field ``include`` parameter: on a 10k-task
project listing ids with ``include=id`` takes ~4 s against ~10 s for ``fields=task_only`` full
tasks (LS 1.23.2, SQLite).
"""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError

__all__ = [
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailableError",
    "LabelStudioAuthError",
    "LabelStudioNotFoundError",
    "UNCERTAINTY_SAMPLING",
    "SEQUENTIAL_SAMPLING",
    "UNIFORM_SAMPLING",
]

T = TypeVar("T")

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
SEQUENTIAL_SAMPLING = "Sequential sampling"
UNIFORM_SAMPLING = "Uniform sampling"

TaskFields = Literal["all", "task_only"]


# ----------------------------------------------------------------------------------- errors


class LabelStudioError(Exception):
    """A Label Studio API call failed. ``status_code`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LabelStudioUnavailableError(LabelStudioError):
    """Label Studio cannot be reached (connection refused, DNS, timeout, 502/503/504)."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the API key (401) or its permissions (403)."""


class LabelStudioNotFoundError(LabelStudioError):
    """The project / task / ML backend does not exist (404)."""


# ----------------------------------------------------------------------------------- helpers


def _safe_url(url: str) -> str:
    """``url`` without user-info (``user:pass@``), for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urllib.parse.urlunsplit(parts)


def _detail(body: Any, limit: int = 300) -> str:
    """A short human string from an error body (LS answers ``{"detail": ...}`` or validation dicts)."""
    if body is None:
        return ""
    if isinstance(body, Mapping):
        parts = [body[k] for k in ("detail", "validation_errors", "message", "error") if body.get(k)]
        if parts:
            body = " ".join(p if isinstance(p, str) else json.dumps(p, default=str) for p in parts)
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _body(response: httpx.Response) -> Any:
    """The response's JSON, or its text when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text


def _annotations_filter(only_labeled: bool | None) -> dict | None:
    """Data Manager filter: labeled = at least one non-cancelled annotation (LS's
    ``total_annotations`` excludes skipped / cancelled ones)."""
    if only_labeled is None:
        return None
    return {
        "conjunction": "and",
        "items": [
            {
                "filter": "filter:tasks:total_annotations",
                "operator": "greater" if only_labeled else "equal",
                "type": "Number",
                "value": 0,
            }
        ],
    }


# ----------------------------------------------------------------------------------- client


class LabelStudioClient:
    """Typed access to one Label Studio instance.

    ``api_key`` is a personal access token (JWT refresh token; the SDK exchanges it for access
    tokens) or a legacy token (LS 1.23 accepts those only when started with
    ``--enable-legacy-api-token``). ``max_retries`` is the SDK's retry count for idempotent calls
    (connection errors, 5xx, 408/409/429, with 1 s, 2 s, ... back-off); calls that create things
    (importing predictions / tasks, annotating, training) are never retried, so a retried request
    cannot import twice.
    """

    def __init__(self, url: str, api_key: str, timeout: float = 30, *, max_retries: int = 2) -> None:
        if not url or not isinstance(url, str):
            raise ValueError("Label Studio url is empty")
        if not api_key or not isinstance(api_key, str):
            raise LabelStudioAuthError("Label Studio API key is empty")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self._api_key = api_key
        # The constructor decodes a JWT key and raises ApiError(401) if it has expired.
        self._sdk: LabelStudio = self._call(
            "create the client",
            lambda: LabelStudio(
                base_url=self.url, api_key=api_key, timeout=self.timeout, max_retries=self.max_retries
            ),
        )

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient(url={_safe_url(self.url)!r})"

    @property
    def sdk(self) -> LabelStudio:
        """The underlying ``label_studio_sdk.LabelStudio`` (escape hatch; prefer the methods)."""
        return self._sdk

    # ------------------------------------------------------------------ error translation

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _error(self, what: str, status: int | None, body: Any = None) -> LabelStudioError:
        where = _safe_url(self.url)
        detail = self._scrub(_detail(body))
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            reason = "rejected the API key" if status == 401 else "denied access for this API key"
            return LabelStudioAuthError(
                f"Label Studio at {where} {reason} (HTTP {status}) while trying to {what}; check "
                f"LABEL_STUDIO_API_KEY (a personal access token, or a legacy token with legacy tokens "
                f"enabled){suffix}",
                status_code=status,
            )
        if status == 404:
            return LabelStudioNotFoundError(
                f"Label Studio at {where}: not found (HTTP 404) while trying to {what}{suffix}",
                status_code=status,
            )
        if status in (502, 503, 504):
            return LabelStudioUnavailableError(
                f"Label Studio at {where} is unavailable (HTTP {status}) while trying to {what}{suffix}",
                status_code=status,
            )
        return LabelStudioError(
            f"Label Studio at {where} answered HTTP {status} while trying to {what}{suffix}",
            status_code=status,
        )

    def _translate(self, what: str, exc: BaseException) -> LabelStudioError:
        where = _safe_url(self.url)
        if isinstance(exc, ApiError):
            return self._error(what, exc.status_code, exc.body)
        if isinstance(exc, httpx.TimeoutException):
            return LabelStudioUnavailableError(
                f"Label Studio at {where} timed out ({type(exc).__name__}) "
                f"while trying to {what}"
            )
        if isinstance(exc, (httpx.TransportError, OSError)):
            return LabelStudioUnavailableError(
                f"Label Studio at {where} is unreachable ({type(exc).__name__}) while trying to {what}"
            )
        if isinstance(exc, httpx.HTTPError):
            return LabelStudioError(f"Label Studio at {where}: {type(exc).__name__} while trying to {what}")
        return LabelStudioError(
            f"Label Studio at {where}: unexpected {type(exc).__name__} while trying to {what}: "
            f"{self._scrub(str(exc))[:300]}"
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an SDK call, turning its exceptions into :class:`LabelStudioError` subclasses."""
        try:
            return fn()
        except LabelStudioError:
            raise
        except (ApiError, httpx.HTTPError, OSError, ValueError) as exc:
            # ``from None``: the SDK's ApiError text carries response headers, not needed here.
            raise self._translate(what, exc) from None

    def _request_options(self, *, retry: bool = True, timeout: float | None = None) -> dict:
        opts: dict[str, Any] = {"max_retries": self.max_retries if retry else 0}
        if timeout is not None:
            opts["timeout"] = float(timeout)
        return opts

    def _raw(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json_body: Any = None,
        retry: bool = True,
        ok: Iterable[int] = (),
    ) -> httpx.Response:
        """A request through the SDK's authenticated HTTP client (token refresh, retries, base URL),
        for endpoints the SDK does not wrap (``/next``) or where its models would re-shape the JSON
        (task listing). Raises for any non-2xx status not in ``ok``."""
        http = self._sdk._client_wrapper.httpx_client
        response = self._call(
            what,
            lambda: http.request(
                path,
                method=method,
                params=params,
                json=json_body,
                request_options=self._request_options(retry=retry),
            ),
        )
        if 200 <= response.status_code < 300 or response.status_code in set(ok):
            return response
        raise self._error(what, response.status_code, _body(response))

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise LabelStudioError(
                f"Label Studio at {_safe_url(self.url)} answered HTTP {response.status_code} with a body "
                f"that is not JSON while trying to {what}",
                status_code=response.status_code,
            ) from None

    # ------------------------------------------------------------------ projects

    def get_project(self, project_id: int) -> dict:
        """``{id, title, label_config, model_version, sampling}`` of a project."""
        project = self._call(
            f"read project {project_id}",
            lambda: self._sdk.projects.get(id=int(project_id), request_options=self._request_options()),
        )
        return {
            "id": project.id,
            "title": project.title,
            "label_config": project.label_config,
            "model_version": project.model_version or "",
            "sampling": getattr(project, "sampling", None),
        }

    def set_model_version(self, project_id: int, version: str) -> None:
        """PATCH the project's ``model_version``: LS orders by / samples on predictions of this
        version only.

        LS 1.23.2 validates the value: it must be the title of an ML backend connected to the
        project or the ``model_version`` of at least one existing prediction, else HTTP 400
        (:class:`LabelStudioError`, ``status_code == 400``). Import the version's predictions first.
        """
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        self._call(
            f"set model_version of project {project_id}",
            lambda: self._sdk.projects.update(
                id=int(project_id), model_version=version, request_options=self._request_options()
            ),
        )

    def set_sampling(self, project_id: int, sampling: str = UNCERTAINTY_SAMPLING) -> None:
        """PATCH the project's task sampling (``"Uncertainty sampling"``, ``"Sequential sampling"``,
        ``"Uniform sampling"``)."""
        if sampling not in (UNCERTAINTY_SAMPLING, SEQUENTIAL_SAMPLING, UNIFORM_SAMPLING):
            raise ValueError(f"unknown sampling {sampling!r}")
        self._call(
            f"set sampling of project {project_id}",
            lambda: self._sdk.projects.update(
                id=int(project_id), sampling=sampling, request_options=self._request_options()
            ),
        )

    def create_project(self, title: str, label_config: str, **settings: Any) -> dict:
        """Create a project (tests / tooling); returns :meth:`get_project`'s dict."""
        created = self._call(
            "create a project",
            lambda: self._sdk.projects.create(
                title=title,
                label_config=label_config,
                request_options=self._request_options(retry=False),
                **settings,
            ),
        )
        return self.get_project(created.id)

    def delete_project(self, project_id: int) -> None:
        self._call(
            f"delete project {project_id}",
            lambda: self._sdk.projects.delete(id=int(project_id), request_options=self._request_options()),
        )

    # ------------------------------------------------------------------ tasks

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import tasks (each ``{"data": {...}}`` or a bare data dict); returns the new task ids."""
        result = self._call(
            f"import {len(tasks)} tasks into project {project_id}",
            lambda: self._sdk.projects.import_tasks(
                id=int(project_id),
                request=[dict(t) for t in tasks],
                return_task_ids=True,
                commit_to_project=True,
                request_options=self._request_options(retry=False),
            ),
        )
        return [int(i) for i in (getattr(result, "task_ids", None) or [])]

    def iter_tasks(
        self,
        project_id: int,
        only_labeled: bool | None = None,
        fields: TaskFields = "all",
        page_size: int = 1000,
        include: Sequence[str] | None = None,
        ordering: str = "tasks:id",
    ) -> Iterator[dict]:
        """Yield the project's tasks as Label Studio's JSON dicts, ordered by id, page by page.

        ``only_labeled``: True = tasks with at least one non-cancelled annotation, False = tasks
        with none (skipped-only tasks count as unlabeled), None = all. ``fields="all"`` includes
        ``annotations`` (each with ``result``, ``was_cancelled``, ``ground_truth``, ...), ``predictions``
        and ``drafts``; ``"task_only"`` leaves them out (faster). ``include`` restricts the top-level
        keys (e.g. ``("id", "data")``: ~2.5x faster than full tasks); it also filters the keys of
        nested annotations, so do not combine it with annotations. ``ordering`` is a Data Manager
        column (``"tasks:id"``, ``"tasks:predictions_score"`` = the score of the prediction of the
        project's ``model_version``, ``"-..."`` for descending).

        Paging is by offset: a task labeled or deleted while iterating may shift pages; ids are
        de-duplicated, and a task that moves out of the filter may be missed (it is re-read next
        time).
        """
        if fields not in ("all", "task_only"):
            raise ValueError("fields must be 'all' or 'task_only'")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        query: dict[str, Any] = {"ordering": [ordering]}
        flt = _annotations_filter(only_labeled)
        if flt is not None:
            query["filters"] = flt
        params: dict[str, Any] = {
            "project": int(project_id),
            "fields": fields,
            "page_size": int(page_size),
            "query": json.dumps(query),
        }
        if include:
            params["include"] = ",".join(include)
        seen: set[int] = set()
        page = 1
        while True:
            response = self._raw(
                f"list tasks of project {project_id} (page {page})",
                "GET",
                "api/tasks/",
                params={**params, "page": page},
                ok=(404,),
            )
            if response.status_code == 404:
                body = _body(response)
                if page > 1 and "invalid page" in _detail(body).lower():
                    return  # past the last page ("Invalid page.")
                raise self._error(f"list tasks of project {project_id}", 404, body)
            payload = self._json(response, f"list tasks of project {project_id}")
            tasks = payload.get("tasks", [])
            for task in tasks:
                task_id = task.get("id")
                if task_id in seen:
                    continue
                seen.add(task_id)
                yield task
            total = int(payload.get("total", 0))
            if not tasks or page * page_size >= total:
                return
            page += 1

    def unlabeled_task_ids(self, project_id: int, page_size: int = 1000) -> list[int]:
        """Ids of tasks with no non-cancelled annotation, ascending."""
        return [
            int(t["id"])
            for t in self.iter_tasks(
                project_id, only_labeled=False, fields="task_only", page_size=page_size, include=("id",)
            )
        ]

    def unlabeled_tasks(
        self, project_id: int, page_size: int = 1000, include: Sequence[str] | None = ("id", "data")
    ) -> list[dict]:
        """Unlabeled tasks, by default only ``id`` and ``data`` (the pool to score)."""
        return list(
            self.iter_tasks(project_id, only_labeled=False, fields="task_only", page_size=page_size, include=include)
        )

    def labeled_tasks(self, project_id: int, page_size: int = 1000) -> list[dict]:
        """Full tasks with at least one non-cancelled annotation, with their ``annotations``."""
        return list(self.iter_tasks(project_id, only_labeled=True, fields="all", page_size=page_size))

    def get_task(self, task_id: int) -> dict:
        what = f"read task {task_id}"
        return self._json(self._raw(what, "GET", f"api/tasks/{int(task_id)}/"), what)

    def create_annotation(
        self, task_id: int, result: list[dict], *, was_cancelled: bool = False, ground_truth: bool = False
    ) -> dict:
        """Annotate a task as the API user (tests / emulation)."""
        annotation = self._call(
            f"annotate task {task_id}",
            lambda: self._sdk.annotations.create(
                id=int(task_id),
                result=result,
                was_cancelled=was_cancelled,
                ground_truth=ground_truth,
                request_options=self._request_options(retry=False),
            ),
        )
        return annotation.model_dump(mode="json", exclude_none=True)

    def next_task(self, project_id: int) -> dict | None:
        """``GET /api/projects/<id>/next``: the task LS would show the API user next (None when
        there is none). Under *Uncertainty sampling* that is the lowest-score prediction of the
        project's ``model_version`` (random among the first few when several annotators exist)."""
        response = self._raw(
            f"get the next task of project {project_id}", "GET", f"api/projects/{int(project_id)}/next", ok=(404,)
        )
        if response.status_code == 404:
            body = _body(response)
            if "no tasks" in _detail(body).lower():
                return None
            raise self._error(f"get the next task of project {project_id}", 404, body)
        return self._json(response, f"get the next task of project {project_id}")

    # ------------------------------------------------------------------ predictions

    def import_predictions(
        self,
        project_id: int,
        predictions: Sequence[Mapping[str, Any]],
        batch_size: int = 50_000,
        timeout: float | None = None,
    ) -> int:
        """Bulk-create predictions (``POST /api/projects/<id>/import/predictions``), in batches.

        Each entry: ``{"task": id, "result": [...], "score": float, "model_version": str}``.
        Returns the number created. Not retried (a retry could import a batch twice); on an error
        the batches before it are already in (and on a client timeout LS may still finish it).

        Keep batches large: LS 1.23.2 recomputes the counters of *every* task of the project after
        each request (~5 s per request on a 10k-task project, whatever the batch size), so 10k
        predictions take ~6 s in one request and ~30-50 s in batches of 1000. ``timeout`` defaults
        to ``max(client timeout, 60 s + 5 ms per prediction)``.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        entries = [self._prediction_entry(p) for p in predictions]
        created = 0
        for start in range(0, len(entries), batch_size):
            batch = entries[start : start + batch_size]
            response = self._call(
                f"import {len(batch)} predictions into project {project_id}",
                lambda batch=batch: self._sdk.projects.import_predictions(
                    id=int(project_id),
                    request=batch,
                    request_options=self._request_options(
                        retry=False,
                        timeout=timeout if timeout is not None else max(self.timeout, 60 + 0.005 * len(batch)),
                    ),
                ),
            )
            count = getattr(response, "created", None)
            created += int(count) if count is not None else len(batch)
        return created

    @staticmethod
    def _prediction_entry(p: Mapping[str, Any]) -> dict:
        try:
            task = int(p["task"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"prediction without an integer 'task': {dict(p)!r:.200}") from None
        result = p.get("result", [])
        if not isinstance(result, list):
            raise ValueError(f"prediction for task {task}: 'result' must be a list")
        entry: dict[str, Any] = {"task": task, "result": result}
        if p.get("score") is not None:
            score = float(p["score"])
            if not math.isfinite(score):
                raise ValueError(f"prediction for task {task}: score {score} is not finite")
            entry["score"] = score
        if p.get("model_version") is not None:
            entry["model_version"] = str(p["model_version"])
        return entry

    # ------------------------------------------------------------------ ML backends

    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        *,
        basic_auth_user: str | None = None,
        basic_auth_pass: str | None = None,
        is_interactive: bool = False,
        timeout: float | None = None,
    ) -> dict:
        """Connect an ML backend to a project (LS calls its ``/health`` and ``/setup`` while doing so).

        Returns ``{id, url, title, state, model_version, project}``. Connecting sets the project's
        ``model_version`` to ``title`` in LS 1.23.
        """
        kwargs: dict[str, Any] = {"project": int(project_id), "url": url, "title": title, "is_interactive": is_interactive}
        if basic_auth_user:
            kwargs.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth_user, basic_auth_pass=basic_auth_pass or "")
        else:
            kwargs["auth_method"] = "NONE"
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        backend = self._call(
            f"connect an ML backend to project {project_id}",
            lambda: self._sdk.ml.create(**kwargs, request_options=self._request_options(retry=False)),
        )
        return self._ml_dict(backend)

    def list_ml_backends(self, project_id: int) -> list[dict]:
        backends = self._call(
            f"list the ML backends of project {project_id}",
            lambda: self._sdk.ml.list(project=int(project_id), request_options=self._request_options()),
        )
        return [self._ml_dict(b) for b in backends]

    def start_training(self, ml_backend_id: int) -> None:
        """What *Start training* does: LS posts ``/webhook {"action": "START_TRAINING"}`` to the backend."""
        self._call(
            f"start training of ML backend {ml_backend_id}",
            lambda: self._sdk.ml.train(id=int(ml_backend_id), request_options=self._request_options(retry=False)),
        )

    @staticmethod
    def _ml_dict(backend: Any) -> dict:
        return {
            "id": backend.id,
            "url": backend.url,
            "title": backend.title,
            "state": getattr(backend, "state", None),
            "model_version": getattr(backend, "model_version", None),
            "project": getattr(backend, "project", None),
        }

    # ------------------------------------------------------------------ used by backend.service.jobs.iteration
    # (added by the ML-backend issue: a cheap consistency check for the cached unlabeled pool)

    def count_tasks(self, project_id: int) -> int:
        """Number of tasks in the project (one ``GET /api/tasks`` page of one id: ~0.1 s where
        listing every id takes seconds on a 10k-task project)."""
        what = f"count the tasks of project {project_id}"
        response = self._raw(
            what, "GET", "api/tasks/",
            params={"project": int(project_id), "fields": "task_only", "page_size": 1, "page": 1, "include": "id"},
        )
        payload = self._json(response, what)
        try:
            return int(payload["total"])
        except (KeyError, TypeError, ValueError):
            raise LabelStudioError(f"Label Studio's task list for project {project_id} has no 'total'") from None
