"""WSGI entry point for gunicorn: ``gunicorn backend._wsgi:app`` (what ``feasible-al serve`` runs).

Settings come from the environment (`backend.service.settings.Settings.from_env`); a bad setting stops the
process at start with a one-line message naming the variable.
"""
from __future__ import annotations

import logging
import os

from backend.engine.threads import wait_passively

wait_passively()  # before torch loads (`backend.engine.threads`)

from backend.engine.device import quiet_transformers  # noqa: E402
from backend.model import FeasibleALModel  # noqa: E402
from backend.service.app import create_app  # noqa: E402

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
)
quiet_transformers()
app = create_app(FeasibleALModel)
