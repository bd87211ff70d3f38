"""Real servers for tests: throw-away Redis instances and a real Label Studio.

The launchers live in the harness (`backend.harness.processes`, `backend.harness.label_studio`,
shared with ``feasible-al bench-backend`` and the demo); this module keeps the names the tests
import. Nothing here touches a Redis or Label Studio the tests did not start: every server gets a
free port on 127.0.0.1 and a temporary directory, and its whole process group is stopped on exit.
"""
from __future__ import annotations

from backend.harness.label_studio import LabelStudioServer, label_studio_executable, ls_venv_path
from backend.harness.processes import (
    README_WORKERS,
    REPO_ROOT,
    BackendProcesses,
    RedisServer,
    free_port,
    redis_server_binary,
    stop_process_group,
    wait_http,
)

__all__ = [
    "README_WORKERS", "REPO_ROOT", "BackendProcesses", "LabelStudioServer", "RedisServer", "free_port",
    "label_studio_executable", "ls_venv_path", "redis_server_binary", "stop_process_group", "wait_http",
]
