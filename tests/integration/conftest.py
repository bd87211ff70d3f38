"""Fixtures for the integration suite: a real Label Studio 1.23.2 started once per session.

Install it with ``scripts/install_label_studio.sh`` (its own virtualenv, ``$LS_VENV``, default
``<repo>/.venv-ls``). Without it the integration tests are skipped, unless
``REQUIRE_LABEL_STUDIO=1`` (CI), where that is a failure. Every test in this directory is marked
``integration`` (deselect with ``-m "not integration"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.servers import LabelStudioServer, label_studio_executable, ls_venv_path

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A running Label Studio: ``.url``, ``.token`` (legacy API token), ``.username``/``.password``."""
    if label_studio_executable() is None:
        message = (
            f"Label Studio is not installed in {ls_venv_path()} "
            "(run scripts/install_label_studio.sh, or set LS_VENV)"
        )
        if os.environ.get("REQUIRE_LABEL_STUDIO") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # First start runs the migrations: ~30 s idle, minutes on a loaded machine.
    server = LabelStudioServer(data_dir=tmp_path_factory.mktemp("label-studio"), startup_timeout=600)
    with server:
        yield server


@pytest.fixture
def ls_client(label_studio):
    """A ``LabelStudioClient`` with the admin and test calls (`tests.helpers.ls_admin`), logged in
    to the session's Label Studio."""
    from tests.helpers.ls_admin import LabelStudioTestClient

    return LabelStudioTestClient(label_studio.url, label_studio.token)
