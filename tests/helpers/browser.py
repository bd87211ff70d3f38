"""Headless Chromium for the browser tests (Playwright's sync API).

Chromium comes from the system (Debian's ``chromium``; ``scripts/ensure_chromium.sh``), never from
``playwright install``: set ``CHROMIUM_EXECUTABLE`` to use another binary. The fixture that launches
it lives in tests/integration/conftest.py, once: two session fixtures each entering
``sync_playwright()`` would nest Playwright's event loops, which it refuses.
"""
from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGE_TIMEOUT_MS = 45_000


def chromium_executable() -> str | None:
    """``$CHROMIUM_EXECUTABLE``, else Debian's ``chromium`` (or ``chromium-browser``) on PATH."""
    for candidate in (os.environ.get("CHROMIUM_EXECUTABLE"), "chromium", "chromium-browser"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None
