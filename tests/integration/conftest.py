"""Fixtures for the integration suite (the session's real Label Studio 1.23.2, `label_studio`, is in
tests/conftest.py so the fault suite shares it).

Install it with ``scripts/install_label_studio.sh`` (its own virtualenv, ``$LS_VENV``, default
``<repo>/.venv-ls``). Without it the integration tests are skipped, unless
``REQUIRE_LABEL_STUDIO=1`` (CI), where that is a failure. Every test in this directory is marked
``integration`` (deselect with ``-m "not integration"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM_ARGS, chromium_executable

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def ls_client(label_studio):
    """A ``LabelStudioClient`` with the admin and test calls (`tests.helpers.ls_admin`), logged in
    to the session's Label Studio."""
    from tests.helpers.ls_admin import LabelStudioTestClient

    return LabelStudioTestClient(label_studio.url, label_studio.token)


def _missing(message: str) -> None:
    if os.environ.get("REQUIRE_LABEL_STUDIO") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium shared by every browser test. Put it first in a test's arguments, so a
    missing browser is reported before the (slow) Label Studio fixture starts; without one (or
    without the ``playwright`` package) the test is skipped, unless ``REQUIRE_LABEL_STUDIO=1`` (CI),
    where that is a failure."""
    executable = chromium_executable()
    if executable is None:
        _missing("no Chromium on PATH (run scripts/ensure_chromium.sh, or set CHROMIUM_EXECUTABLE)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
