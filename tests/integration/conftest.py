"""Fixtures for the integration suite (the session's real Label Studio 1.23.2, `label_studio`, is in
tests/conftest.py so the fault suite shares it).

Install it with ``scripts/install_label_studio.sh`` (its own virtualenv, ``$LS_VENV``, default
``<repo>/.venv-ls``). Without it the integration tests are skipped, unless
``REQUIRE_LABEL_STUDIO=1`` (CI), where that is a failure. Every test in this directory is marked
``integration`` (deselect with ``-m "not integration"``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
