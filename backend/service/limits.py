"""Request-body limits enforced before Flask sees a request, for every transfer encoding.

`BodyGuard` (WSGI middleware) reads the whole body itself, in pieces: more than MAX_REQUEST_BYTES
is 413 whether the client declared a ``Content-Length`` or sent ``Transfer-Encoding: chunked``
(werkzeug alone cuts a chunked body at the limit and passes the prefix on), and a client that
stops sending for BODY_READ_TIMEOUT seconds, or takes more than `TOTAL_READ_FACTOR` times that for
the whole body, is answered 408 and dropped, so stalled uploads cannot hold every request thread.
Under gunicorn the socket's own timeout bounds each read; a watchdog timer shuts the socket for
reading at the total deadline (a client dripping one byte at a time never trips a per-read timeout).
"""
from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BodyGuard", "TOTAL_READ_FACTOR"]

TOTAL_READ_FACTOR = 12  # whole-body deadline = 12 x BODY_READ_TIMEOUT (60 s by default)
_PIECE = 1 << 16
_DRAIN_FACTOR = 4  # an oversize body up to 4x the limit is read and dropped, so the client sees our 413


class _BodyError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json_error(start_response: StartResponse, error: _BodyError) -> list[bytes]:
    body = json.dumps({"error": error.code, "message": error.message, "status": error.status}).encode()
    reason = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large"}[error.status]
    start_response(f"{error.status} {reason}", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body))), ("Connection", "close")])
    return [body]


class BodyGuard:
    """Wraps a WSGI app: the app sees the body as an in-memory stream of at most ``max_bytes``."""

    def __init__(self, app: WSGIApplication, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        declared = environ.get("CONTENT_LENGTH") or ""
        if not chunked and declared in ("", "0"):
            return self.app(environ, start_response)
        try:
            body = self._read(environ, chunked, declared)
        except _BodyError as error:
            return _json_error(start_response, error)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)

    def _too_large(self) -> _BodyError:
        return _BodyError(413, "request_too_large", f"request body exceeds MAX_REQUEST_BYTES={self.max_bytes} "
                          "bytes; send fewer tasks per request or raise the limit")

    def _read(self, environ: WSGIEnvironment, chunked: bool, declared: str) -> bytes:
        length = None
        if not chunked:
            if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
                raise _BodyError(400, "bad_request", f"invalid Content-Length {declared[:40]!r}")
            length = int(declared)
        sock = environ.get("gunicorn.socket")
        deadline = time.monotonic() + TOTAL_READ_FACTOR * self.read_timeout
        watchdog = threading.Timer(TOTAL_READ_FACTOR * self.read_timeout, _shut_reading, (sock,)) if sock else None
        try:
            if sock is not None:
                sock.settimeout(self.read_timeout)
                watchdog.start()  # type: ignore[union-attr]
            return self._pieces(environ["wsgi.input"], length, deadline)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if sock is not None:
                _restore_blocking(sock)

    def _pieces(self, stream: Any, length: int | None, deadline: float) -> bytes:
        limit = self.max_bytes
        if length is not None and length > _DRAIN_FACTOR * limit:
            raise self._too_large()  # not worth draining: gunicorn closes the connection
        buf = bytearray()
        wanted = limit + 1 if length is None else min(length, limit + 1)
        try:
            while len(buf) < wanted:
                piece = stream.read(min(_PIECE, wanted - len(buf)))
                if not piece:
                    break
                buf += piece
                if time.monotonic() > deadline:
                    raise TimeoutError
            if len(buf) > limit or (length is not None and length > limit):
                self._drain(stream, _DRAIN_FACTOR * limit - len(buf), deadline)
                raise self._too_large()
        except TimeoutError:
            raise _BodyError(408, "body_timeout", f"the request body stalled (no data for {self.read_timeout:g} s, "
                             "BODY_READ_TIMEOUT) or took too long; the request was dropped") from None
        except OSError as exc:  # the client went away, or the watchdog shut the socket
            raise _BodyError(400, "body_incomplete", f"the request body could not be read: {exc}") from None
        if length is not None and len(buf) < length:
            raise _BodyError(400, "body_incomplete", f"the request body ended after {len(buf)} of {length} bytes")
        return bytes(buf)

    @staticmethod
    def _drain(stream: Any, budget: int, deadline: float) -> None:
        """Read and drop the rest (up to ``budget`` bytes), so the client reads our 413 instead of a
        reset connection; a stall or the deadline just ends the draining."""
        try:
            while budget > 0 and time.monotonic() < deadline:
                piece = stream.read(min(_PIECE, budget))
                if not piece:
                    return
                budget -= len(piece)
        except Exception:  # noqa: BLE001 - a reset socket or gunicorn's error on a cut chunk: done
            return


def _shut_reading(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


def _restore_blocking(sock: socket.socket) -> None:
    try:
        sock.settimeout(None)
    except OSError:
        pass
