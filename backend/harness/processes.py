"""Start the backend's whole stack on one machine, on free 127.0.0.1 ports, and stop it cleanly.

Used by ``feasible-al bench-backend``, the integration tests and anything else that needs a real
stack without touching the user's own services:

- :class:`RedisServer`: a private ``redis-server`` (Debian's; ``scripts/ensure_redis.sh``), no
  persistence, in a temporary directory; ``stop()`` / ``start()`` / ``restart()`` for "Redis down".
- :class:`LabelStudioServer`: ``label-studio start`` from its own virtualenv
  (``scripts/install_label_studio.sh``; ``$LS_VENV``, default ``<repo>/.venv-ls``) with a fresh
  data directory and a legacy API token (``.url`` / ``.token``).
- :class:`BackendProcesses`: ``feasible-al serve`` (gunicorn) and one ``feasible-al worker`` (RQ),
  configured through the environment only, as a deployment is.

Every process is started in its own session, so stopping it stops its whole process group
(gunicorn's workers, Label Studio's children) and nothing is left behind.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
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


def tail(path: Path, chars: int = 8000) -> str:
    """The end of a log file (or why there is none), for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


class _Server:
    """One process group with a start/stop life cycle, usable as a context manager.

    Subclasses implement ``_launch()`` (start the process, wait until it answers, return it) and
    set ``_grace``; ``close()`` also removes the temporary directory ``_tmp`` if there is one.
    """

    _grace = 10.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> subprocess.Popen:
        raise NotImplementedError

    def start(self):
        if not self.running:
            self._proc = self._launch()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, grace=self._grace)
            self._proc = None

    def restart(self):
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------- Redis


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer(_Server):
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

    def _launch(self) -> subprocess.Popen:
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


# -------------------------------------------------------------------------------- Label Studio


def ls_venv_path() -> Path:
    return Path(os.environ.get("LS_VENV") or (REPO_ROOT / ".venv-ls"))


def label_studio_executable() -> Path | None:
    """``$LS_VENV/bin/label-studio`` if installed (scripts/install_label_studio.sh), else None."""
    exe = ls_venv_path() / "bin" / "label-studio"
    return exe if exe.exists() else None


# LS 1.23 hard-codes its RQ Redis at localhost:6379 (it PINGs it at start-up and reads
# user-activity keys from it when it answers): a private LS must never talk to a Redis it does not
# own, so its settings point RQ at a unix socket that does not exist. Base settings are imported
# first: LS's settings module reads django.conf.settings while it is imported (sentry init).
_ISOLATED_SETTINGS = """\
from label_studio.core.settings.base import *  # noqa: F401,F403
from label_studio.core.settings.label_studio import *  # noqa: F401,F403
from label_studio.core.settings.label_studio import RQ_QUEUES
for _queue in RQ_QUEUES.values():
    for _key in ('HOST', 'PORT', 'URL'):
        _queue.pop(_key, None)
    _queue['UNIX_SOCKET_PATH'] = {socket!r}
"""


class LabelStudioServer(_Server):
    """A real Label Studio (``label-studio start``) on a free port with its own data directory.

    The default user is created from ``username`` / ``password`` and gets ``token`` as a legacy
    API token (``--enable-legacy-api-token``), so ``Authorization: Token <token>`` works.
    First start on an empty data dir runs the migrations (~30 s); a restart takes a few seconds.
    """

    _grace = 15.0

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str = "test-password-123",
        token: str | None = None,
        startup_timeout: float = 180.0,
        executable: str | Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        exe = Path(executable) if executable else label_studio_executable()
        if exe is None or not exe.exists():
            raise RuntimeError(f"label-studio not installed in {ls_venv_path()}: run scripts/install_label_studio.sh")
        self.executable = exe
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="feasible-al-label-studio-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.token = token or secrets.token_hex(20)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.log_path = self.data_dir / "label-studio.log"
        self.startup_seconds: float | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _write_settings(self) -> Path:
        settings_dir = self.data_dir / "ls-settings"
        settings_dir.mkdir(parents=True, exist_ok=True)
        text = _ISOLATED_SETTINGS.format(socket=str(self.data_dir / "no-redis.sock"))
        (settings_dir / "ls_isolated_settings.py").write_text(text)
        return settings_dir

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        env.update({
            "PYTHONPATH": str(self._write_settings()), "DJANGO_SETTINGS_MODULE": "ls_isolated_settings",
            "PATH": str(self.executable.parent) + os.pathsep + env.get("PATH", ""),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir), "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false", "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [str(self.executable), "start", "--no-browser", "--internal-host", self.host,
                "--port", str(self.port), "--username", self.username, "--password", self.password,
                "--user-token", self.token, "--enable-legacy-api-token"]

    def log_tail(self, chars: int = 8000) -> str:
        return tail(self.log_path, chars)

    def _launch(self) -> subprocess.Popen:
        self._log_file = open(self.log_path, "ab")
        started = time.monotonic()
        proc = subprocess.Popen(self.command(), cwd=str(self.data_dir), env=self._env(), stdin=subprocess.DEVNULL,
                                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{self.url}/health", self.startup_timeout, interval=1.0, alive=lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            stop_process_group(proc, grace=self._grace)
            self._close_log()
            log = self.log_tail()
            sys.stderr.write(f"\n----- label-studio log ({self.log_path}) -----\n{log}\n-----\n")
            raise RuntimeError(f"Label Studio did not come up on {self.url}: {exc}\n{log}") from exc
        self.startup_seconds = time.monotonic() - started
        return proc

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = None

    def stop(self) -> None:
        super().stop()
        self._close_log()


# ------------------------------------------------------------------------------ the backend


class BackendProcesses:
    """``feasible-al serve`` (gunicorn) and one ``feasible-al worker`` on a free port.

    ``env`` is the whole environment the two processes see (``REDIS_URL``, ``LABEL_STUDIO_URL``,
    ``ACQUISITION_MODEL``, ...: see ``feasible-al serve --help``). Their output goes to
    ``<log_dir>/gunicorn.log`` and ``<log_dir>/worker.log``; :meth:`log_tail` shows both. Ready
    when ``/health`` answers 200, or 401 where basic auth is on.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, port: int | None = None,
                 startup_timeout: float = 120.0, grace: float = 20.0) -> None:
        self.env = dict(env)
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.grace = grace
        self._procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "backend.cli", *args], cwd=REPO_ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "BackendProcesses":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        web = self._spawn("gunicorn", ["serve", "--host", HOST, "--port", str(self.port)])
        self._procs = [web, self._spawn("worker", ["worker"])]
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

    def __enter__(self) -> "BackendProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
