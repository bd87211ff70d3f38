"""One interface over every successor architecture: any `AutoModelFor...` checkpoint
(`TransformerModel`) or a classical model trained from scratch (`ClassicalModel`: the CNN text
classifier or the BiLSTM-CRF tagger of `backend.engine.models.classical`).

Both expose the same `fit(examples, progress)`, `predict(examples)`, `save(dir)` and `load(dir)`,
and both save a directory that `AutoModelFor...from_pretrained` reads (the classical ones with
`trust_remote_code=True` outside this package, see `classical.py`). `ModelFactory` makes fresh,
seeded models of one kind: PLASM's teacher, TracIn probe and successors, a simulation's learners.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from backend.engine.device import to_device
from backend.engine.models.classical import (
    BiLSTMCRFConfig,
    BiLSTMCRFForTokenClassification,
    TextCNNConfig,
    TextCNNForSequenceClassification,
    build_word_tokenizer,
    register_auto_classes,
)
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import Example, LabelSchema, TaskType, classification_examples, tagging_examples

CNN, BILSTM_CRF, CLASSICAL = "cnn", "bilstm-crf", "classical"
CLASSICAL_KINDS = (CNN, BILSTM_CRF)
_MODEL_TYPES = {TextCNNConfig.model_type: CNN, BiLSTMCRFConfig.model_type: BILSTM_CRF}



@dataclass(frozen=True)
class ClassicalDefaults:
    epochs: int
    learning_rate: float


# Classical models start from random weights: higher learning rate, more epochs than fine-tuning.
CLASSICAL_DEFAULTS = {
    TaskType.CLASSIFICATION: ClassicalDefaults(epochs=10, learning_rate=1e-3),
    TaskType.TAGGING: ClassicalDefaults(epochs=20, learning_rate=5e-3),
}


def classical_kind(name_or_path: str | os.PathLike[str], task_type: TaskType | None = None) -> str | None:
    """'cnn' / 'bilstm-crf' when `name_or_path` names a classical model or a saved one, else None.
    'classical' picks the task's model (CNN for classification, BiLSTM-CRF for tagging)."""
    name = str(name_or_path)
    if name == CLASSICAL:
        if task_type is None:
            raise ValueError("'classical' needs the task type to pick CNN or BiLSTM-CRF")
        return CNN if task_type is TaskType.CLASSIFICATION else BILSTM_CRF
    if name in CLASSICAL_KINDS:
        return name
    config = Path(name) / "config.json"
    if not config.is_file():
        return None
    try:
        saved = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config}: unreadable model config ({exc})") from exc
    if not isinstance(saved, dict):
        raise ValueError(f"{config}: a model config must be a JSON object")
    model_type = saved.get("model_type")
    return _MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None


def classical_training(config: TrainingConfig | None, task_type: TaskType) -> TrainingConfig:
    """Fill a training config's unset epochs / learning rate with the classical defaults."""
    config = config or TrainingConfig()
    defaults = CLASSICAL_DEFAULTS[task_type]
    return replace(
        config,
        epochs=config.epochs or defaults.epochs,
        learning_rate=config.learning_rate or defaults.learning_rate,
    )


class ClassicalModel(TransformerModel):
    """A CNN or BiLSTM-CRF trained from scratch through `TransformerModel`'s training and inference
    loops; it only swaps how the tokenizer and the fresh model are made. The word vocabulary is
    built from the training examples at each `fit`."""

    def __init__(
        self, name_or_path: str | os.PathLike[str], schema: LabelSchema, config: TrainingConfig | None = None,
        *, architecture: dict[str, Any] | None = None, model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        kind = classical_kind(name_or_path, schema.task_type)
        if kind is None:
            raise ValueError(f"{name_or_path!r} is not a classical model ({', '.join(CLASSICAL_KINDS)})")
        wanted = CNN if schema.task_type is TaskType.CLASSIFICATION else BILSTM_CRF
        if kind != wanted:
            raise ValueError(f"{kind} does not suit {schema.task_type.value}; use {wanted}")
        register_auto_classes()  # the Auto classes must resolve the classical model types to load them
        super().__init__(name_or_path, schema, classical_training(config, schema.task_type), model=model,
                         tokenizer=tokenizer)
        self.kind = kind
        self.architecture = dict(architecture or {})
        self._saved = Path(str(name_or_path)).is_dir()

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        if not self._saved:
            raise RuntimeError("a classical model builds its vocabulary in fit(): train it first")
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.name_or_path)
        return tokenizer

    def _prepare_fit(self, examples: Sequence[Example]) -> None:
        corpus: list[str] | list[list[str]]
        if self.kind == CNN:
            corpus = [ex.text for ex in classification_examples(examples)]
        else:
            corpus = [ex.words for ex in tagging_examples(examples)]
        self._tokenizer = build_word_tokenizer(corpus, split_words=self.kind == CNN, lowercase=self.kind == CNN,
                                               max_length=self.config.max_length)

    def _fresh_model(self) -> PreTrainedModel:
        names = self.schema.output_names
        common = dict(
            vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
            unk_token_id=self.tokenizer.unk_token_id, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        )
        arch = dict(self.architecture)
        if self._saved and not arch:  # refit a saved model: keep its architecture
            saved = json.loads((Path(self.name_or_path) / "config.json").read_text())
            keys = ("embedding_dim", "num_filters", "kernel_sizes", "dropout", "word_dropout",
                    "hidden_size", "num_lstm_layers")
            arch = {k: saved[k] for k in keys if k in saved}
        set_seed(self.config.seed)
        model: PreTrainedModel
        if self.kind == CNN:
            problem = "multi_label_classification" if self.schema.multi_label else "single_label_classification"
            model = TextCNNForSequenceClassification(TextCNNConfig(**arch, **common, problem_type=problem))
        else:
            model = BiLSTMCRFForTokenClassification(BiLSTMCRFConfig(**arch, **common))
        return to_device(model, self.device)


def make_model(
    name_or_path: str | os.PathLike[str], schema: LabelSchema, config: TrainingConfig | None = None
) -> TransformerModel:
    """A trainable successor: classical for 'cnn' / 'bilstm-crf' / 'classical' (or a saved one),
    otherwise an `AutoModelFor...` checkpoint (hub name, packaged alias or local directory)."""
    if classical_kind(name_or_path, schema.task_type) is not None:
        return ClassicalModel(name_or_path, schema, config)
    return TransformerModel(name_or_path, schema, config)


def load_model(directory: str | os.PathLike[str], config: TrainingConfig | None = None) -> TransformerModel:
    """Load a checkpoint saved by `save()` of either kind."""
    if classical_kind(directory) is not None:
        return ClassicalModel.load(directory, config)
    return TransformerModel.load(directory, config)


def describe(model: TransformerModel) -> str:
    """A short human name for reports and model cards."""
    if isinstance(model, ClassicalModel):
        return {CNN: "CNN text classifier (from scratch)", BILSTM_CRF: "BiLSTM-CRF tagger (from scratch)"}[model.kind]
    return str(model.name_or_path)


@dataclass(frozen=True)
class ModelFactory:
    """Fresh, untrained models of one kind for one schema: `new(seed)` is the same model with the
    training seed replaced (PLASM trains a teacher, a TracIn probe and successors from one)."""

    name: str
    schema: LabelSchema
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def new(self, seed: int | None = None) -> TransformerModel:
        config = self.training if seed is None else replace(self.training, seed=seed)
        return make_model(self.name, self.schema, config)
