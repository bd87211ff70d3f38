"""Shared pieces for the backend's tests: settings on a private key prefix, a tiny trained
checkpoint published the way a training job publishes it, toy Label Studio tasks."""
from __future__ import annotations

import uuid
from pathlib import Path

from backend.engine.acquisition.strategies import make_strategy
from backend.engine.models.transformer import TransformerModel
from backend.engine.types import ClassificationExample
from backend.service.checkpoints import checkpoint_dir, write_checkpoint_extras
from backend.service.settings import Settings
from backend.service.store import ProjectStore
from tests.helpers.toy_data import toy_classification

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION_XML = (REPO_ROOT / "label_config_examples" / "text_classification.xml").read_text()
NER_XML = (REPO_ROOT / "label_config_examples" / "ner.xml").read_text()
SENTIMENT = {"pos": "Positive", "neg": "Negative"}


def make_settings(redis_url: str, tmp_path: Path, model: str | Path = "unused", **overrides) -> Settings:
    """Settings isolated by a fresh key prefix (so tests share one Redis without collisions)."""
    values = dict(
        redis_url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:8]}", model_dir=tmp_path / "models",
        acquisition_model=str(model), device="cpu", epochs=1, train_every_n=3,
    )
    values.update(overrides)
    return Settings(**values)


def sentiment_examples(n: int, seed: int = 0) -> list[ClassificationExample]:
    return [ClassificationExample(ex.text, (SENTIMENT[ex.labels[0]],)) for ex in toy_classification(n, seed)]


def sentiment_tasks(n: int, start_id: int = 1, seed: int = 1) -> list[dict]:
    """Label Studio task objects (``id``, ``data.text``) for the sentiment config."""
    return [{"id": start_id + i, "data": {"text": ex.text}} for i, ex in enumerate(toy_classification(n, seed))]


def publish_checkpoint(settings: Settings, store: ProjectStore, project_id: int, version: str,
                       xml: str = CLASSIFICATION_XML, iteration: int = 1) -> Path:
    """Train a tiny classifier for a few steps, save it as `version` and make it the serving one."""
    config = store.register_label_config(project_id, xml)
    model = TransformerModel(settings.acquisition_model, config.schema, settings.training_config())
    model.fit(sentiment_examples(16))
    directory = checkpoint_dir(settings.model_dir, project_id, version)
    model.save(directory)
    write_checkpoint_extras(directory, config, xml, make_strategy("auto", config.task_type), {"version": version})
    store.publish_version(project_id, version, iteration, {"iteration": iteration, "version": version,
                                                           "seconds": {"train": 0.1}})
    return directory
