"""Label Studio API failures as precise exceptions whose messages never carry the API key.

- :class:`LabelStudioUnavailableError`: cannot connect, timed out, or a 502/503/504;
- :class:`LabelStudioAuthError`: 401/403 (wrong, expired or legacy-disabled token);
- :class:`LabelStudioNotFoundError`: 404 (no such project, task, ML backend);
- :class:`LabelStudioError`: anything else (e.g. a 400 for a malformed prediction), with
  ``status_code`` set when there was an HTTP answer.

:class:`ErrorTranslator` turns an HTTP status or an SDK / httpx exception into one of these.
"""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from label_studio_sdk.core.api_error import ApiError


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


def safe_url(url: str) -> str:
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


def error_detail(body: Any, limit: int = 300) -> str:
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


def response_body(response: httpx.Response) -> Any:
    """The response's JSON, or its text when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return response.text


@dataclass(frozen=True)
class ErrorTranslator:
    """Builds the exceptions for one Label Studio (``url``), scrubbing ``api_key`` from details."""

    url: str
    api_key: str = field(repr=False)

    @property
    def where(self) -> str:
        return safe_url(self.url)

    def scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def for_status(self, what: str, status: int | None, body: Any = None) -> LabelStudioError:
        """The exception for an HTTP answer ``status`` while trying to do ``what``."""
        detail = self.scrub(error_detail(body))
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            reason = "rejected the API key" if status == 401 else "denied access for this API key"
            return LabelStudioAuthError(
                f"Label Studio at {self.where} {reason} (HTTP {status}) while trying to {what}; check "
                f"LABEL_STUDIO_API_KEY (a personal access token, or a legacy token with legacy tokens "
                f"enabled){suffix}",
                status_code=status,
            )
        if status == 404:
            return LabelStudioNotFoundError(
                f"Label Studio at {self.where}: not found (HTTP 404) while trying to {what}{suffix}",
                status_code=status,
            )
        if status in (502, 503, 504):
            return LabelStudioUnavailableError(
                f"Label Studio at {self.where} is unavailable (HTTP {status}) while trying to {what}{suffix}",
                status_code=status,
            )
        return LabelStudioError(
            f"Label Studio at {self.where} answered HTTP {status} while trying to {what}{suffix}",
            status_code=status,
        )

    def for_exception(self, what: str, exc: BaseException) -> LabelStudioError:
        """The exception for an SDK / transport failure while trying to do ``what``."""
        where = self.where
        if isinstance(exc, ApiError):
            return self.for_status(what, exc.status_code, exc.body)
        if isinstance(exc, httpx.TimeoutException):
            return LabelStudioUnavailableError(
                f"Label Studio at {where} timed out ({type(exc).__name__}) while trying to {what}"
            )
        if isinstance(exc, (httpx.TransportError, OSError)):
            # The OS reason ("[Errno 111] Connection refused") tells stopped from reset / DNS.
            reason = self.scrub(" ".join(str(exc).split()))[:200]
            detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
            return LabelStudioUnavailableError(
                f"Label Studio at {where} is unreachable ({detail}) while trying to {what}"
            )
        if isinstance(exc, httpx.HTTPError):
            return LabelStudioError(f"Label Studio at {where}: {type(exc).__name__} while trying to {what}")
        return LabelStudioError(
            f"Label Studio at {where}: unexpected {type(exc).__name__} while trying to {what}: "
            f"{self.scrub(str(exc))[:300]}"
        )
