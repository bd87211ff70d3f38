import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest

from backend.al.transformer import quiet_transformers

quiet_transformers()

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
