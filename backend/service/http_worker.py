"""gunicorn's gthread worker answering its own errors (a request line past ``--limit-request-line``,
bad headers, a broken chunked body) as JSON like every other error of the API, instead of HTML.

``feasible-al serve`` runs ``--worker-class backend.service.http_worker.JsonErrorWorker``.
"""
from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

__all__ = ["JsonErrorWorker", "write_json_error"]

_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn's ``util.write_error`` writes, as ``{"error", "message", "status"}`` JSON."""
    body = json.dumps({"error": _CODES.get(status_int, reason.lower().replace(" ", "_")),
                       "message": mesg[:300] or reason, "status": status_int}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


# gunicorn ships no type information, so mypy reads ThreadWorker as Any
class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    """`ThreadWorker` whose error pages are JSON (gunicorn looks ``util.write_error`` up per call)."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
