"""Real servers for tests: throw-away Redis instances and a real Label Studio.

Nothing here touches a Redis or Label Studio the tests did not start: every server gets a free
port on 127.0.0.1 and a temporary directory, and is stopped (its whole process group) on exit.

- ``RedisServer``: Debian's ``redis-server`` (``scripts/ensure_redis.sh`` installs it), no
  persistence, ``.url`` / ``.port``, ``stop()`` / ``start()`` / ``restart()`` for "Redis down" tests.
- ``LabelStudioServer``: ``label-studio start`` from its own virtualenv
  (``scripts/install_label_studio.sh``; ``$LS_VENV``, default ``<repo>/.venv-ls``), with a
  legacy API token, ``.url`` / ``.token``; its log is printed when it fails to come up.
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
from pathlib import Path
from typing import Callable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VERSION = "1.23.2"


def free_port(host: str = "127.0.0.1") -> int:
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
    died) this gives up at once. Raises ``TimeoutError`` after ``timeout`` seconds.
    """
    ok = ok or (lambda r: r.status_code == 200)
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
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


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        # The leader is gone; children may not be. Try the group anyway.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
        pass


def _tail(path: Path, chars: int = 8000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return text[-chars:]


# --------------------------------------------------------------------------------------- Redis


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """A private ``redis-server`` on a free port, no persistence, in a temporary directory.

    >>> with RedisServer() as srv:
    ...     redis.Redis.from_url(srv.url).ping()

    ``stop()`` kills it (clients then see connection errors), ``start()`` brings it back on the
    same port (empty: nothing is saved), ``restart()`` does both.
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 20.0) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found: run scripts/ensure_redis.sh")
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="test-redis-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "redis.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> "RedisServer":
        if self.running:
            return self
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                log = _tail(self.log_path)
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, grace=5.0)
            self._proc = None

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# -------------------------------------------------------------------------------- Label Studio


def ls_venv_path() -> Path:
    return Path(os.environ.get("LS_VENV") or (REPO_ROOT / ".venv-ls"))


def label_studio_executable() -> Path | None:
    """``$LS_VENV/bin/label-studio`` if installed (scripts/install_label_studio.sh), else None."""
    exe = ls_venv_path() / "bin" / "label-studio"
    return exe if exe.exists() else None


class LabelStudioServer:
    """A real Label Studio (``label-studio start``) on a free port with a fresh data directory.

    The default user is created from ``username`` / ``password`` and gets ``token`` as a legacy
    API token (``--enable-legacy-api-token``), so ``Authorization: Token <token>`` works.
    First start on an empty data dir runs the migrations (~30 s); a restart is a few seconds.
    """

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
        exe = Path(executable) if executable else label_studio_executable()
        if exe is None or not Path(exe).exists():
            raise RuntimeError(
                f"label-studio not installed in {ls_venv_path()}: run scripts/install_label_studio.sh"
            )
        self.executable = Path(exe)
        self._tmp: tempfile.TemporaryDirectory | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="test-label-studio-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.username = username
        self.password = password
        self.token = token or secrets.token_hex(20)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.log_path = self.data_dir / "label-studio.log"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_settings(self) -> Path:
        """A Django settings module that is LS's own, except that its RQ / Redis connection points
        at a unix socket that does not exist. LS 1.23 hard-codes ``localhost:6379`` (it PINGs it at
        start-up and reads user-activity keys from it when it answers): a test LS must never talk
        to a Redis it does not own."""
        settings_dir = self.data_dir / "ls-settings"
        settings_dir.mkdir(parents=True, exist_ok=True)
        no_redis = self.data_dir / "no-redis.sock"
        (settings_dir / "ls_isolated_settings.py").write_text(
            # base first: LS's settings module reads django.conf.settings while it is imported
            # (sentry init), which re-enters this partially imported module.
            "from label_studio.core.settings.base import *  # noqa: F401,F403\n"
            "from label_studio.core.settings.label_studio import *  # noqa: F401,F403\n"
            "from label_studio.core.settings.label_studio import RQ_QUEUES\n"
            "for _queue in RQ_QUEUES.values():\n"
            "    for _key in ('HOST', 'PORT', 'URL'):\n"
            "        _queue.pop(_key, None)\n"
            f"    _queue['UNIX_SOCKET_PATH'] = {str(no_redis)!r}\n"
        )
        return settings_dir

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        env["PYTHONPATH"] = str(self._write_settings())
        env["DJANGO_SETTINGS_MODULE"] = "ls_isolated_settings"
        venv_bin = str(self.executable.parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host", self.host,
            "--port", str(self.port),
            "--username", self.username,
            "--password", self.password,
            "--user-token", self.token,
            "--enable-legacy-api-token",
        ]

    def log_tail(self, chars: int = 8000) -> str:
        return _tail(self.log_path, chars)

    def start(self) -> "LabelStudioServer":
        if self.running:
            return self
        self._log_file = open(self.log_path, "ab")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=str(self.data_dir),
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(
                f"{self.url}/health",
                self.startup_timeout,
                interval=1.0,
                alive=lambda: self._proc is not None and self._proc.poll() is None,
            )
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            log = self.log_tail()
            sys.stderr.write(f"\n----- label-studio log ({self.log_path}) -----\n{log}\n-----\n")
            raise RuntimeError(f"Label Studio did not come up on {self.url}: {exc}\n{log}") from exc
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, grace=15.0)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> "LabelStudioServer":
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
