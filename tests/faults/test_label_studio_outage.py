"""Label Studio stopping during a training's fetch and during its push, against real processes.

The backend reaches the session's Label Studio through a TCP proxy in this module (the shared
Label Studio cannot be stopped: other tests use it). The proxy forwards bytes until the request it
is armed for (the labeled-task listing: fetch; the predictions import: push) arrives; then Label
Studio "stops": that request is never forwarded, every open connection is reset and the port
refuses connections until the test brings it back. The user-visible checks: ``GET /projects/<id>``
names the cause (Label Studio unreachable at its URL, no API key), the old version keeps serving
(``/setup``, ``/predict``), nothing answers 5xx, and once Label Studio is back the next training
works and learns from every annotation Label Studio holds."""
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass

import pytest

from backend.harness.processes import HOST
from tests.faults.test_dead_workers import train  # one successful Start training
from tests.faults.worker_stack import annotate, fault_stack, make_project  # noqa: F401 - fixtures
from tests.helpers.ls_admin import LabelStudioTestClient

pytestmark = pytest.mark.integration

FETCH = b"GET /api/tasks/"  # fetch_training_data's labeled-task listing (the first task listing)
PUSH = b"/import/predictions"  # push_predictions' bulk import
# The transport's words, which depend on timing: a reset ("ReadError: [Errno 104] Connection reset
# by peer") or a close ("RemoteProtocolError: Server disconnected without sending a response.").
RESET = (
    r"(ReadError: \[Errno 104\] Connection reset by peer"
    r"|RemoteProtocolError: Server disconnected without sending a response\."
    r"|WriteError: \[Errno (32|104)\] [A-Za-z ]+)"
)
REFUSED = r"ConnectError: \[Errno 111\] Connection refused"
# (stop Label Studio when this request arrives (None: before the training), failing stage, why);
# stopped before the training, a new connection is refused, but a keep-alive connection the worker
# pooled earlier may still be tried first and be reset (seen in a fresh-clone CI run under load)
OUTAGES = ((FETCH, "fetch", RESET), (PUSH, "push", RESET), (None, "fetch", f"(?:{REFUSED}|{RESET})"))


class OutageProxy:
    """A TCP forwarder to ``upstream`` that can play "Label Studio stopped" at a chosen request."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("://", 1)[1].rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._armed: bytes | None = None
        self._listener: socket.socket | None = None
        self.cut = threading.Event()
        self.up()

    def arm(self, marker: bytes) -> None:
        """Stop "Label Studio" when a request containing `marker` arrives (before forwarding it)."""
        self.cut.clear()
        self._armed = marker

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def down(self) -> None:
        """Refuse new connections and close the open ones (what a stopped Label Studio does; the
        connection carrying the armed request is reset by its pump)."""
        with self._lock:
            listener, self._listener, self._armed = self._listener, None, None
            conns, self._conns = self._conns, set()
        if listener is not None:  # shutdown wakes the accept thread, so the port refuses at once
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
            if self._acceptor is not threading.current_thread():
                self._acceptor.join(5)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.cut.set()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                armed = self._armed
                if from_client and armed is not None and armed in data:
                    _reset(src)  # reset mid-request: the request never reaches Label Studio
                    self.down()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for conn in (src, dst):
            _reset(conn)

    def close(self) -> None:
        self.down()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _reset(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        conn.close()
    except OSError:
        pass


@dataclass(frozen=True)
class ProxiedLabelStudio:
    """What `fault_stack` reads (`url`, `token`): the proxy; `direct` is the real Label Studio."""

    url: str
    token: str
    direct: str
    proxy: OutageProxy


@pytest.fixture(scope="module")
def label_studio(label_studio):  # noqa: F811 - the session Label Studio, seen through the proxy
    proxy = OutageProxy(label_studio.url)
    try:
        yield ProxiedLabelStudio(proxy.url, label_studio.token, label_studio.url, proxy)
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def ls(label_studio):
    """The test's own calls (annotate, start training) go straight to Label Studio."""
    return LabelStudioTestClient(label_studio.direct, label_studio.token)


def labeled_in_label_studio(ls, project) -> int:
    return sum(1 for _ in ls.iter_tasks(project.id, only_labeled=True, fields="task_only", include=("id",)))


def outage(stack, ls, project, label_studio, marker: bytes | None, stage: str, reason: str) -> dict:
    """Start a training, stop Label Studio at `marker` (None: before the training starts), wait
    for the pipeline to end; its state."""
    proxy = label_studio.proxy
    if marker is None:
        proxy.down()
        time.sleep(0.5)  # stopped a moment before: the worker's idle keep-alive connections see the close
    else:
        proxy.arm(marker)
    ls.start_training(project.backend_id)
    assert proxy.cut.wait(120), f"the {stage} request never came\n{stack.log_tail()}"

    def failed():
        state = stack.project(project.id)
        return state if state["last_error"] and not state["running_job"] and not state["queued_job"] else None

    state = stack.wait(f"the training failed during {stage}", failed, timeout=120)
    error = state["last_error"]
    assert f"{stage} failed: LabelStudioUnavailableError" in error, error
    unreachable = rf"Label Studio at {re.escape(proxy.url)} is unreachable \({reason}\) while trying to "
    assert re.search(unreachable, error), error
    assert label_studio.token not in error
    job = stack.get(f"/jobs/{state['last_error_job']}").json()
    assert job["pipeline_status"] == "failed" and job["error"] == error, job  # (push: the finisher failed)
    return state


def old_version_serves(stack, ls, project, version: str) -> None:
    xml = ls.get_project(project.id)["label_config"]
    assert stack.post("/setup", json={"project": f"{project.id}.0", "schema": xml}).json() == {"model_version": version}
    task = {"id": project.task_ids[-1], "data": {"text": "a quiet, lovely film"}}
    r = stack.post("/predict", json={"tasks": [task], "project": f"{project.id}.0", "label_config": xml})
    assert r.status_code == 200 and r.json()["model_version"] == version, r.text
    assert r.json()["results"] and r.json()["results"][0]["model_version"] == version, r.text
    assert stack.get("/health").status_code == 200


def test_label_studio_stopping_during_fetch_and_push(fault_stack, ls, label_studio):
    stack, proxy = fault_stack, label_studio.proxy
    project = make_project(ls, stack, pool=30, labeled=8)
    stack.start_worker()
    v1 = train(stack, ls, project)["version"]

    for marker, stage, reason in OUTAGES:
        annotate(ls, project, 2)
        t0 = time.monotonic()
        state = outage(stack, ls, project, label_studio, marker, stage, reason)
        print(f"\n{stage}: failed {time.monotonic() - t0:.1f} s after Start training: {state['last_error']}")
        assert state["version"] == v1
        old_version_serves(stack, ls, project, v1)
        assert ls.get_project(project.id)["model_version"] == v1  # LS still orders by the old predictions
        assert all(w.alive for w in stack.workers), stack.log_tail()

        proxy.up()  # Label Studio is back: the next training uses every annotation it holds
        after = train(stack, ls, project)
        v1 = after["version"]
        assert after["last_iteration"]["labeled"] == labeled_in_label_studio(ls, project) == project.labeled
        assert ls.get_project(project.id)["model_version"] == v1
        old_version_serves(stack, ls, project, v1)
    stack.stop_workers()
