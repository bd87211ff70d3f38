import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest

from backend.engine.device import quiet_transformers

quiet_transformers()

from tests.helpers.servers import (
    LabelStudioServer,
    RedisServer,
    label_studio_executable,
    ls_venv_path,
    redis_server_binary,
)
from tests.helpers.tiny_models import build_tiny_model


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert")


@pytest.fixture(scope="session")
def tiny_electra(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-electra"), "electra")


# --------------------------------------------------------------------- real servers (Redis)


@pytest.fixture(scope="session")
def redis_server():
    """A private, throw-away ``redis-server`` (free port, no persistence) for the whole session.

    ``.url`` is ``redis://127.0.0.1:<port>/0``. Never the shared Redis on 6379. Tests that stop or
    restart Redis must start their own ``tests.helpers.servers.RedisServer`` instead of stopping
    this one. Skips when ``redis-server`` is missing (``scripts/ensure_redis.sh`` installs it),
    unless ``REQUIRE_REDIS=1``, where that is a failure.
    """
    if redis_server_binary() is None:
        message = "redis-server not installed: run scripts/ensure_redis.sh"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The session Redis, emptied (FLUSHALL) before the test; returns its URL."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


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
