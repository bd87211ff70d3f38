"""torch's OpenMP threads wait passively in the backend's processes (`backend.engine.threads`):
set before torch loads, a user's own OMP_WAIT_POLICY kept, and what reaches the demo's workers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.demo.stack import Stack, backend_env

CHECK = ("import os, sys\n"
         "{before}\n"
         "from backend.engine.threads import wait_passively\n"
         "in_time = wait_passively()\n"
         "print(in_time, os.environ['OMP_WAIT_POLICY'])\n")


def _run(before: str = "", **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    done = subprocess.run([sys.executable, "-c", CHECK.format(before=before)], env=environment, text=True,
                          capture_output=True, timeout=120, check=True)
    return done.stdout.strip()


def test_passive_waiting_is_asked_for_before_torch_loads():
    assert _run() == "True PASSIVE"


def test_a_users_wait_policy_is_kept():
    assert _run(OMP_WAIT_POLICY="ACTIVE") == "True ACTIVE"


def test_too_late_once_torch_is_loaded():
    assert _run(before="import torch") == "False PASSIVE"  # children still inherit it


@pytest.mark.parametrize("users, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_demos_workers_wait_passively_with_torchs_default_threads(monkeypatch, users, expected):
    monkeypatch.delenv("TORCH_THREADS", raising=False)
    if users is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", users)
    env = backend_env(Stack("http://ls", "token", ""), "all-MiniLM-L6-v2", Path("models"))
    assert env["OMP_WAIT_POLICY"] == expected
    assert "TORCH_THREADS" not in env  # torch's default: one thread per core
