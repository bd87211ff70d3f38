"""The image's commands, run here outside Docker: `feasible-al serve|worker --help` (what
ENTRYPOINT + CMD / the compose `command:` run) and the HEALTHCHECK one-liner against a local server."""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import fields

import pytest

from backend.service.settings import Settings
from tests.unit.deploy import files


def _entrypoint() -> list[str]:
    """`feasible-al` as installed (the console script), else the same entry point through Python."""
    (entry,) = [i.exec_form() for i in files.dockerfile() if i.keyword == "ENTRYPOINT"]
    script = shutil.which(entry[0])
    if script:
        return [script, *entry[1:]]
    return [sys.executable, "-c", "import sys; from backend.cli import main; sys.exit(main())", *entry[1:]]


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess]:
    """`feasible-al serve --help` and `worker --help`, started together (each imports torch)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = {c: subprocess.Popen([*_entrypoint(), c, "--help"], cwd=files.ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in ("serve", "worker")}
    runs = {}
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        runs[command] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return runs


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_image_commands_start(command, help_runs):
    compose = files.compose()["services"]
    service = "backend" if command == "serve" else "worker"
    assert compose[service]["command"] == [command]
    result = help_runs[command]
    assert result.returncode == 0, result.stderr[-2000:]
    for f in fields(Settings):  # the help lists every variable the compose file sets
        assert f.name.upper() in result.stdout, f.name.upper()


def test_default_cmd_is_serve():
    (cmd,) = [i.exec_form() for i in files.dockerfile() if i.keyword == "CMD"]
    assert cmd == ["serve"]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        code = self.status if self.path == "/health" else 404
        body = b'{"status": "UP"}' if code == 200 else b'{"status": "DOWN"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def _server(status: int):
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    (check,) = [i for i in files.dockerfile() if i.keyword == "HEALTHCHECK"]
    argv = check.exec_form()
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], env={**os.environ, "PORT": str(port)},
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_when_health_is_up():
    with _server(200) as port:
        result = _healthcheck(port)
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_health_is_down():
    with _server(503) as port:  # /health answers 503 when Redis is unreachable
        assert _healthcheck(port).returncode != 0


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _healthcheck(port).returncode != 0
