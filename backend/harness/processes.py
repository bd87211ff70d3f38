"""Start the backend's whole stack on one machine, on free 127.0.0.1 ports, and stop it cleanly.

Used by ``feasible-al bench-backend``, ``feasible-al demo``, the integration tests and anything else
that needs a real stack without touching the user's own services:

- :class:`RedisServer`: a private ``redis-server`` (Debian's; ``scripts/ensure_redis.sh``), no
  persistence, in a temporary directory; ``stop()`` / ``start()`` / ``restart()`` for "Redis down".
- `backend.harness.label_studio.LabelStudioServer`: a real Label Studio (same life cycle).
- :class:`BackendProcesses`: ``feasible-al serve`` (gunicorn) and its ``feasible-al worker``
  processes (RQ): one on every queue, or the README's deployment (`README_WORKERS`: that one plus
  one on the fast queue alone), configured through the environment only, as a deployment is.

Every process is started in its own session, so stopping it stops its whole process group
(gunicorn's workers, Label Studio's children) and nothing is left behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

Workers = Sequence[tuple[str, ...]]  # one entry per `feasible-al worker`: its queue kinds, () = every queue
EVERY_QUEUE: tuple[str, ...] = ()
SINGLE_WORKER: Workers = (EVERY_QUEUE,)
# README, "Quick start without Docker": `feasible-al worker &` and `feasible-al worker --queues fast &`,
# so a fine-tune on the first never delays the fast path.
README_WORKERS: Workers = (EVERY_QUEUE, ("fast",))
DEPLOYMENTS: dict[str, Workers] = {"readme": README_WORKERS, "single": SINGLE_WORKER}


def describe_workers(workers: Workers) -> str:
    """The workers in words, e.g. "an RQ worker on every queue and one on the fast queue alone"."""
    def one(queues: tuple[str, ...]) -> str:
        if not queues:
            return "every queue"
        return f"the {queues[0]} queue alone" if len(queues) == 1 else f"the {' and '.join(queues)} queues"
    parts = [one(q) for q in workers]
    return "an RQ worker on " + parts[0] + "".join(f" and one on {p}" for p in parts[1:])


def worker_log_name(queues: tuple[str, ...]) -> str:
    return "-".join(("worker", *queues))


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(
    url: str,
    timeout: float,
    *,
    interval: float = 0.5,
    ok: Callable[[requests.Response], bool] | None = None,
    alive: Callable[[], bool] | None = None,
) -> requests.Response:
    """Poll ``url`` with GET until ``ok(response)`` (default: status 200); return that response.

    ``alive`` (optional) is checked between attempts: when it returns False (the server process
    died) this gives up at once with ``RuntimeError``. Raises ``TimeoutError`` after ``timeout`` s.
    """
    ok = ok or (lambda r: r.status_code == 200)
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        try:
            response = requests.get(url, timeout=min(5.0, max(0.5, timeout)))
            if ok(response):
                return response
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        if alive is not None and not alive():
            raise RuntimeError(f"server process exited while waiting for {url} (last: {last})")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last: {last})")
        time.sleep(interval)


def _killpg(pid: int, sig: int) -> bool:
    """Signal a process group; False when it is already gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), SIGKILL after
    ``grace`` seconds. A leader that already exited may have left children: they are killed."""
    if proc.poll() is not None:
        _killpg(proc.pid, signal.SIGKILL)
        return
    if not _killpg(proc.pid, signal.SIGTERM):
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
        pass


@contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """Within this block SIGTERM raises `SystemExit` (as Ctrl-C raises `KeyboardInterrupt`), so the
    `with` blocks around the servers stop them: a benchmark killed by its caller leaves no Redis,
    Label Studio, gunicorn or worker behind. The previous handler is restored after."""
    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tail(path: Path, chars: int = 8000) -> str:
    """The end of a log file (or why there is none), for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


class ServerProcess:
    """One process group with a start/stop life cycle, usable as a context manager.

    Subclasses implement ``_launch()`` (start the process, wait until it answers, return it) and
    set ``_grace``; ``close()`` also removes the temporary directory ``_tmp`` if there is one.
    """

    _grace = 10.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def start(self) -> Self:
        if not self.running:
            self._proc = self._launch()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, grace=self._grace)
            self._proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------- Redis


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer(ServerProcess):
    """A private ``redis-server`` on a free port, no persistence, in a temporary directory.

    ``stop()`` kills it (clients then see connection errors), ``start()`` brings it back on the
    same port (empty: nothing is saved), ``restart()`` does both.
    """

    _grace = 5.0

    def __init__(self, port: int | None = None, *, startup_timeout: float = 20.0) -> None:
        super().__init__()
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: run scripts/ensure_redis.sh")
        self.binary = binary
        self.host = HOST
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="feasible-al-redis-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _launch(self) -> subprocess.Popen[bytes]:
        cmd = [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
               "--dir", str(self.dir), "--logfile", str(self.log_path), "--daemonize", "no",
               "--protected-mode", "yes"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while not self._ping():
            if proc.poll() is not None or time.monotonic() >= deadline:
                log = tail(self.log_path)
                stop_process_group(proc, grace=self._grace)
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)
        return proc


# ------------------------------------------------------------------------------ the backend


class BackendProcesses:
    """``feasible-al serve`` (gunicorn) and its ``feasible-al worker`` processes on a free port.

    ``env`` is the whole environment the processes see (``REDIS_URL``, ``LABEL_STUDIO_URL``,
    ``ACQUISITION_MODEL``, ...: see ``feasible-al serve --help``). ``workers``: one entry per worker,
    its queue kinds (``()``: every queue); default one worker on every queue, `README_WORKERS` adds
    one on the fast queue alone. Output goes to ``<log_dir>/gunicorn.log`` and
    ``<log_dir>/worker[-<queues>].log``; :meth:`log_tail` shows them all. Ready when ``/health``
    answers 200, or 401 where basic auth is on.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, port: int | None = None,
                 startup_timeout: float = 120.0, grace: float = 20.0, workers: Workers = SINGLE_WORKER) -> None:
        self.env = dict(env)
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.workers = [tuple(q) for q in workers]
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_dir / f"{name}.log" for name in ("gunicorn", *map(worker_log_name, self.workers))]

    def describe(self) -> str:
        return f"backend {self.url} (gunicorn) and {describe_workers(self.workers)}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "backend.cli", *args], cwd=REPO_ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> BackendProcesses:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        web = self._spawn("gunicorn", ["serve", "--host", HOST, "--port", str(self.port)])
        self._procs = [web]
        for queues in self.workers:
            flags = ["--queues", *queues] if queues else []
            self._procs.append(self._spawn(worker_log_name(queues), ["worker", *flags]))
        try:
            wait_http(f"{self.url}/health", self.startup_timeout, ok=lambda r: r.status_code in (200, 401),
                      alive=lambda: web.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"the backend did not come up on {self.url}: {exc}\n{self.log_tail()}") from exc
        return self

    def stop(self) -> None:
        for proc in self._procs:
            stop_process_group(proc, grace=self.grace)
        self._procs = []

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p, chars)}" for p in sorted(self.log_dir.glob("*.log")))

    def __enter__(self) -> BackendProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
