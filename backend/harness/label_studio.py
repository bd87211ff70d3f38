"""A real Label Studio on a free 127.0.0.1 port, for the harness: the demo, bench-backend and the
tests (``label-studio start`` from its own virtualenv, ``scripts/install_label_studio.sh``;
``$LS_VENV``, default ``<repo>/.venv-ls``), with a fresh data directory and a legacy API token.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from backend.harness.processes import HOST, REPO_ROOT, ServerProcess, free_port, stop_process_group, tail, wait_http


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


class LabelStudioServer(ServerProcess):
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

    def _launch(self) -> subprocess.Popen[bytes]:
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
