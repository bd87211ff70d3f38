"""The only module that calls Label Studio's API (through ``label-studio-sdk`` 2.x).

Everything the backend needs from Label Studio goes through :class:`LabelStudioClient`:
reading the project and its tasks, pushing predictions in bulk, and setting the project's
``model_version`` (Label Studio's prediction-score ordering and *Uncertainty sampling* only count
predictions of that version). Calls that *administer* Label Studio (create a project, import
tasks, annotate, connect an ML backend, start training) are in `backend.service.ls_admin`, for
the benchmark, demos and tests; the backend itself never makes them.

The connection is always ``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY`` from the backend's own
settings. The ``hostname`` / ``access_token`` Label Studio sends in ``/setup`` are unauthenticated
input and are never used to call out (SSRF).

Errors are precise and never carry the API key (`backend.service.ls_errors`, re-exported here).

Task listing uses ``GET /api/tasks`` with a Data Manager filter on ``total_annotations``
(non-cancelled annotations), ordered by id and paged by ``total``. It reads the JSON as Label Studio
sends it (no SDK model round trip), and supports the sparse-field ``include`` parameter: on a 10k-task
project listing ids with ``include=id`` takes ~4 s against ~10 s for ``fields=task_only`` full
tasks (LS 1.23.2, SQLite).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.service.ls_errors import (
    ErrorTranslator,
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
    error_detail,
    response_body,
    safe_url,
)

__all__ = [
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailableError",
    "LabelStudioAuthError",
    "LabelStudioNotFoundError",
]

T = TypeVar("T")

TaskFields = Literal["all", "task_only"]


# ----------------------------------------------------------------------------------- helpers


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


def _task_list_params(
    project_id: int,
    only_labeled: bool | None,
    fields: TaskFields,
    page_size: int,
    include: Sequence[str] | None,
    ordering: str,
) -> dict[str, Any]:
    """Query parameters of ``GET /api/tasks`` (the Data Manager query is JSON in ``query``)."""
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
    return params


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
        self._errors = ErrorTranslator(self.url, api_key)
        # The constructor decodes a JWT key and raises ApiError(401) if it has expired.
        self._sdk: LabelStudio = self._call(
            "create the client",
            lambda: LabelStudio(
                base_url=self.url, api_key=api_key, timeout=self.timeout, max_retries=self.max_retries
            ),
        )

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient(url={safe_url(self.url)!r})"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an SDK call, turning its exceptions into :class:`LabelStudioError` subclasses."""
        try:
            return fn()
        except LabelStudioError:
            raise
        except (ApiError, httpx.HTTPError, OSError, ValueError) as exc:
            # ``from None``: the SDK's ApiError text carries response headers, not needed here.
            raise self._errors.for_exception(what, exc) from None

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
        timeout: float | None = None,
    ) -> httpx.Response:
        """A request through the SDK's authenticated HTTP client (token refresh, retries, base URL),
        for endpoints where the SDK's models would re-shape the JSON (task listing, counting) or that
        it does not wrap. Raises for any non-2xx status not in ``ok``."""
        http = self._sdk._client_wrapper.httpx_client
        response = self._call(
            what,
            lambda: http.request(
                path,
                method=method,
                params=params,
                json=json_body,
                request_options=self._request_options(retry=retry, timeout=timeout),
            ),
        )
        if 200 <= response.status_code < 300 or response.status_code in set(ok):
            return response
        raise self._errors.for_status(what, response.status_code, response_body(response))

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise LabelStudioError(
                f"Label Studio at {safe_url(self.url)} answered HTTP {response.status_code} with a body "
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

    # ------------------------------------------------------------------ tasks

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
        params = _task_list_params(project_id, only_labeled, fields, page_size, include, ordering)
        seen: set[int] = set()
        for tasks in self._task_pages(project_id, params, page_size):
            for task in tasks:
                task_id = task.get("id")
                if task_id not in seen:
                    seen.add(task_id)
                    yield task

    def _task_pages(self, project_id: int, params: dict[str, Any], page_size: int) -> Iterator[list[dict]]:
        """``GET /api/tasks`` page after page until ``total`` is reached (or LS says "Invalid page",
        which is how it answers a page past the end when tasks disappeared meanwhile)."""
        what = f"list tasks of project {project_id}"
        page = 1
        while True:
            response = self._raw(f"{what} (page {page})", "GET", "api/tasks/", params={**params, "page": page},
                                 ok=(404,))
            if response.status_code == 404:
                body = response_body(response)
                if page > 1 and "invalid page" in error_detail(body).lower():
                    return
                raise self._errors.for_status(what, 404, body)
            payload = self._json(response, what)
            tasks = payload.get("tasks", [])
            yield tasks
            if not tasks or page * page_size >= int(payload.get("total", 0)):
                return
            page += 1

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

    def create_predictions(self, predictions: Sequence[Mapping[str, Any]], workers: int = 4) -> int:
        """Create predictions one ``POST /api/predictions/`` each, `workers` at a time; returns how
        many. For a few dozen (a fast update's top-K): LS 1.23.2 answers one in ~21 ms, where a bulk
        import costs ~5 s per request on a 10k-task project (it recounts every task). Not retried."""
        entries = [self._prediction_entry(p) for p in predictions]
        if not entries:
            return 0

        def create(entry: dict) -> None:
            self._raw(f"create a prediction for task {entry['task']}", "POST", "api/predictions/",
                      json_body=entry, retry=False)

        if workers <= 1 or len(entries) == 1:
            for e in entries:
                create(e)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(entries))) as pool:
                list(pool.map(create, entries))
        return len(entries)

    def model_versions(self, project_id: int) -> dict[str, int]:
        """``{model_version: predictions}`` of the project (``GET /api/projects/<id>/model-versions/``)."""
        what = f"list the model versions of project {project_id}"
        payload = self._json(self._raw(what, "GET", f"api/projects/{int(project_id)}/model-versions/"), what)
        return {str(k): int(v) for k, v in payload.items()} if isinstance(payload, dict) else {}

    def delete_model_version(self, project_id: int, version: str, timeout: float | None = None) -> int:
        """Delete every prediction of one model version in bulk; returns how many. LS 1.23.2 takes
        ~2.4 ms per prediction (tests/integration/test_webhook_triggers.py), so ``timeout`` defaults
        to ``max(client timeout, 120 s)``; idempotent, so retried. It also clears the project's
        ``model_version`` when that is the version deleted: never delete the serving one."""
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        what = f"delete the predictions of model version {version!r} in project {project_id}"
        response = self._raw(what, "DELETE", f"api/projects/{int(project_id)}/model-versions/",
                             json_body={"model_version": version}, timeout=timeout or max(self.timeout, 120.0))
        payload = self._json(response, what)
        return int(payload.get("deleted_predictions", 0)) if isinstance(payload, dict) else 0

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
