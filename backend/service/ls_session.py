"""The connection under :class:`backend.service.ls_client.LabelStudioClient`: one ``label-studio-sdk``
client, its retries and timeouts, and the translation of its failures into
`backend.service.ls_errors` exceptions (whose messages never carry the API key).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.request_options import RequestOptions

from backend.service.ls_errors import ErrorTranslator, LabelStudioAuthError, LabelStudioError, response_body, safe_url

__all__ = ["LabelStudioSession"]

T = TypeVar("T")


class LabelStudioSession:
    """An authenticated ``label-studio-sdk`` client for one Label Studio instance.

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
            lambda: LabelStudio(  # type: ignore[no-untyped-call]
                base_url=self.url, api_key=api_key, timeout=self.timeout, max_retries=self.max_retries
            ),
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an SDK call, turning its exceptions into :class:`LabelStudioError` subclasses."""
        try:
            return fn()
        except LabelStudioError:
            raise
        except (ApiError, httpx.HTTPError, OSError, ValueError) as exc:
            # ``from None``: the SDK's ApiError text carries response headers, not needed here.
            raise self._errors.for_exception(what, exc) from None

    def _request_options(self, *, retry: bool = True, timeout: float | None = None) -> RequestOptions:
        opts: RequestOptions = {"max_retries": self.max_retries if retry else 0}
        if timeout is not None:
            opts["timeout"] = float(timeout)
        return opts

    def _raw(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
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
