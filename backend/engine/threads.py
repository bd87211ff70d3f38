"""torch's CPU threads wait passively (``OMP_WAIT_POLICY=PASSIVE``) in the backend's processes.

torch's CPU builds run each operator on OpenMP threads that by default spin on their core for a
while after every parallel region. On a machine whose cores other processes share (the web
process, a second worker, Label Studio), the spinning takes the core the other thread needs, and
a fit slows to a crawl. A tagging fine-tune on 80 WNUT-16 sentences on a 2-core Xeon:

| torch threads | waiting | one core busy elsewhere | idle cores |
|---|---|---|---|
| 1 | - | 54 s | 49 s |
| 2 | spinning (OpenMP's default) | 101 s | 33 s |
| 2 | passive | 57 s | 37 s |

So with passive waiting torch's default threads stay within a few percent of one thread when a
core is busy and are faster when the cores are free, where spinning threads needed
``TORCH_THREADS=1`` on a busy machine.
OpenMP reads the variable once, when torch loads: `wait_passively` runs first in the entry
points (``feasible-al``, the gunicorn app) and keeps a value the user set.
"""
from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def wait_passively() -> bool:
    """Ask OpenMP for passive waiting unless the environment says otherwise; False when torch is
    already loaded (too late for this process; its child processes still inherit the setting)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules
