"""A thin, seeded wrapper over Hugging Face transformers for sequence and token classification.

Why not `Trainer`: active learning retrains from the pretrained checkpoint every iteration on a few
hundred examples, where the `Trainer` start-up cost dominates; a plain loop with transformers'
AdamW schedule keeps each retrain lean and the inference path (length-sorted, per-batch padding,
`inference_mode`, bf16 autocast on CUDA) under our control.

The hyper-parameters live in `config` (`TrainingConfig`), tokenisation and batching in `encoding`,
the LP-FT head initialisation in `probe`, what a tagging fine-tune adds (LP-FT from the per-word
probe, the word-shape term, the class-weighted loss) in `tagging_fit`; their names stay importable
from here.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from backend.engine.callbacks import Progress
from backend.engine.device import autocast, resolve_device, to_device
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.io import atomic_directory
from backend.engine.iob2 import iob2_tags
from backend.engine.models import encoding, probe, tagging_fit
from backend.engine.models.config import DEFAULT_LEARNING_RATE, PAPER_EPOCHS, TrainingConfig
from backend.engine.models.encoding import IGNORE_INDEX, Encoded
from backend.engine.models.tagging_fit import SHAPE_KEY
from backend.engine.models.training import LOSS, fit_loop
from backend.engine.packaged import resolve_model
from backend.engine.proxy import FEATURE_DTYPE, mean_pool
from backend.engine.types import (
    Example,
    FloatArray,
    IndexArray,
    LabelSchema,
    Predictions,
    TaskType,
    classification_examples,
    tagging_examples,
)

__all__ = [
    "DEFAULT_LEARNING_RATE", "IGNORE_INDEX", "PAPER_EPOCHS", "SCHEMA_FILE", "Encoded", "FitReport",
    "ProgressCallback", "SHAPE_KEY", "TrainingConfig", "TransformerModel",
]

log = logging.getLogger(__name__)

SCHEMA_FILE = "al_schema.json"
ProgressCallback = Progress  # (done, total); the name other modules import


@dataclass
class FitReport:
    seconds: float
    steps: int
    final_loss: float
    examples: int


class TransformerModel:
    """Train and run a classification or tagging head on any `AutoModel` checkpoint."""

    linear_probe = True  # LP-FT applies (pretrained features); models trained from scratch say False

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        schema: LabelSchema,
        config: TrainingConfig | None = None,
        *,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        self.name_or_path = resolve_model(str(name_or_path))
        self.schema = schema
        self.config = config or TrainingConfig()
        self.device = resolve_device(self.config.device)
        self._model = model
        self._tokenizer = tokenizer
        # tagging: (tags, shape bits) weights of the word-shape bits, added to the logits at each
        # word's first sub-token (an uncased encoder never sees casing); None: no shape term
        self.shape_weight: torch.nn.Parameter | None = None

    # ------------------------------------------------------------------ loading
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.name_or_path, use_fast=True)
        if not tokenizer.is_fast and self.schema.task_type is TaskType.TAGGING:
            raise ValueError(f"{self.name_or_path}: tagging needs a fast tokenizer (word ids)")
        return tokenizer

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            self._model = self._fresh_model()
        return self._model

    def _fresh_model(self) -> PreTrainedModel:
        names = self.schema.output_names
        id2label, label2id = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
        set_seed(self.config.seed)
        # float32 master weights even for half-precision checkpoints (transformers 5 keeps the
        # stored dtype by default); CUDA speed comes from bf16 autocast instead.
        model: PreTrainedModel
        if self.schema.task_type is TaskType.TAGGING:
            model = AutoModelForTokenClassification.from_pretrained(
                self.name_or_path, dtype=torch.float32, num_labels=len(names), id2label=id2label, label2id=label2id)
        else:
            problem = "multi_label_classification" if self.schema.multi_label else "single_label_classification"
            model = AutoModelForSequenceClassification.from_pretrained(
                self.name_or_path, dtype=torch.float32, num_labels=len(names), id2label=id2label, label2id=label2id,
                problem_type=problem)
        return to_device(model, self.device)

    # ----------------------------------------------------------------- encoding
    def encode(self, examples: Sequence[Example], with_labels: bool = False) -> list[Encoded]:
        """Tokenize examples (truncated to `max_length`); with labels as training targets."""
        return encoding.encode(self.tokenizer, self.schema, examples, self.config.max_length, with_labels)

    def collate(self, batch: Sequence[Encoded], with_labels: bool = False) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest example, on the model's device; `labels` with targets."""
        return encoding.collate(batch, self.schema, self.tokenizer.pad_token_id or 0, self.device, with_labels)

    def batches(
        self, encoded: Sequence[Encoded], batch_size: int, *, with_labels: bool = False, sort_by_length: bool = True
    ) -> Iterator[tuple[IndexArray, dict[str, torch.Tensor]]]:
        """(positions in `encoded`, collated batch) for inference passes; sorting by length
        keeps padding small."""
        for idx in encoding.batch_positions(encoded, batch_size, sort_by_length):
            yield idx, self.collate([encoded[i] for i in idx], with_labels)

    def autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast on CUDA, nothing on CPU: wrap every forward pass in it."""
        return autocast(self.device)

    # ----------------------------------------------------------------- training
    def fit(self, examples: Sequence[Example], progress: ProgressCallback | None = None) -> FitReport:
        """Fine-tune a fresh head from the pretrained checkpoint (never continues an old head)."""
        self._check_trainable(examples)
        start = time.perf_counter()
        self._prepare_fit(examples)
        self._model = self._fresh_model()
        self.shape_weight = None
        model = self._model
        encoded = self.encode(examples, with_labels=True)
        task = self.schema.task_type
        few_shot_tagging = task is TaskType.TAGGING and self.linear_probe  # `tagging_fit`'s additions
        if self.linear_probe and self.config.resolved_linear_probe_init(task):
            self._probe_head(examples, encoded)
        if few_shot_tagging and self.config.word_shapes and self.shape_weight is None:
            self.shape_weight = tagging_fit.zero_shape_term(self.schema.num_outputs, self.device)
        weights = (tagging_fit.tag_weights(encoded, self.schema.num_outputs, self.config.tag_balance, self.device)
                   if few_shot_tagging else None)
        trained = tagging_fit.WithShapes(model, self.shape_weight) if self.shape_weight is not None else model

        def step(rows: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
            chunk = [encoded[i] for i in rows]
            batch = self.collate(chunk, with_labels=True)
            if not few_shot_tagging:
                with self.autocast():
                    loss: torch.Tensor = model(**batch).loss
                return {LOSS: loss}
            labels = batch.pop("labels")
            with self.autocast():
                logits = model(**batch).logits
            return {LOSS: tagging_fit.tagging_loss(logits, labels, chunk, self.shape_weight, weights)}

        lengths = [len(e.input_ids) for e in encoded]
        loop = self.config.loop(task, len(encoded))
        report = fit_loop(trained, lengths, step, loop, progress=progress)
        return FitReport(time.perf_counter() - start, report.steps, report.last_loss, len(encoded))

    def decode_tags(self, predictions: Predictions) -> list[list[str]]:
        """Tagging: the most probable valid IOB2 sequence of each example (`iob2.iob2_tags`),
        where an argmax per word could emit an I-X no B-X opens."""
        return iob2_tags(list(predictions.probs), self.schema.output_names)

    def head_layer(self) -> torch.nn.Linear | None:
        """The linear layer that outputs a classifier's logits (BERT's `classifier`, RoBERTa's
        `classifier.out_proj`, ...): the last `Linear` with one output per label; None for tagging."""
        if self.schema.task_type is not TaskType.CLASSIFICATION:
            return None
        return probe.classifier_head(self.model, self.schema.num_outputs)

    def head_features(self, encoded: Sequence[Encoded]) -> NDArray[np.float32]:
        """What the head layer reads for each example (e.g. BERT's pooled [CLS]), dropout off."""
        head = self.head_layer()
        if head is None:
            raise ValueError("no classification head to read features for")
        batches = self.batches(encoded, self.config.inference_batch_size or 64)
        return probe.head_inputs(self.model, head, batches, len(encoded), self.autocast)

    def _probe_head(self, examples: Sequence[Example], encoded: Sequence[Encoded]) -> None:
        """LP-FT: a fitted linear probe rather than a random head (`backend.engine.models.probe`)."""
        if self.schema.task_type is TaskType.TAGGING:
            self._probe_tagger(examples, encoded)
            return
        head = self.head_layer()
        if head is None or head.in_features == 0:
            return
        labels = [ex.labels for ex in classification_examples(examples)]
        probe.init_from_probe(head, self.head_features(encoded), labels, self.schema, self.config.seed)

    def _probe_tagger(self, examples: Sequence[Example], encoded: Sequence[Encoded]) -> None:
        """Tagging's LP-FT (`tagging_fit.start_from_probe`): the token classifier, and the shape
        term with `word_shapes`, start from the per-word probe."""
        batches = self.batches(encoded, self.config.inference_batch_size or 64)
        shape = tagging_fit.start_from_probe(self.model, self.schema, examples, encoded, batches, self.autocast,
                                             self.config.seed, word_shapes=self.config.word_shapes)
        if shape is not None:
            self.shape_weight = torch.nn.Parameter(torch.from_numpy(shape).to(self.device))

    def _prepare_fit(self, examples: Sequence[Example]) -> None:
        """Hook before a fresh model is built for training (a classical model builds its vocabulary)."""

    def _check_trainable(self, examples: Sequence[Example]) -> None:
        if not examples:
            raise NotEnoughLabelsError("no labeled examples to train on")
        if self.schema.task_type is TaskType.CLASSIFICATION:
            texts = classification_examples(examples)
            bad = {lab for ex in texts for lab in ex.labels if lab not in self.schema.labels}
            if bad or any(not ex.labels for ex in texts):
                raise ValueError(f"examples carry labels outside the schema or none: {sorted(bad)[:5]}")
        else:
            names = set(self.schema.output_names)
            for ex in tagging_examples(examples):
                if len(ex.tags) != len(ex.words) or not set(ex.tags) <= names:
                    raise ValueError(f"tagging example with missing or unknown tags: {ex.tags[:10]}")

    # ---------------------------------------------------------------- inference
    def predict(
        self,
        examples: Sequence[Example],
        *,
        return_embeddings: bool = False,
        return_features: bool = False,
        batch_size: int | None = None,
        sort_by_length: bool = True,
        progress: ProgressCallback | None = None,
    ) -> Predictions:
        """Probabilities in input order. Sorting by length and padding per batch is the fast path;
        `sort_by_length=False` pads every batch to `max_length` (kept for the benchmark).
        `return_features`: also the proxy's features (`proxy.mean_pool` of the last hidden layer),
        what `FeatureEncoder` computes from this checkpoint, at no extra forward pass."""
        if not examples:
            empty = np.zeros((0, self.schema.num_outputs), dtype=np.float32)
            probs: FloatArray | list[FloatArray] = empty if self.schema.task_type is TaskType.CLASSIFICATION else []
            return Predictions(self.schema.task_type, probs, None, self.schema.multi_label)
        model = self.model
        model.eval()
        encoded = self.encode(examples, with_labels=False)
        bs = batch_size or self.config.inference_batch_size or (512 if self.device.type == "cuda" else 64)
        out = _Outputs(self.schema, examples, self.model.config.hidden_size if return_features else None)
        with torch.inference_mode():
            for idx, batch in self.batches(encoded, bs, sort_by_length=sort_by_length):
                if not sort_by_length and batch["input_ids"].shape[1] < self.config.max_length:
                    batch = encoding.pad_to(batch, self.config.max_length, self.tokenizer.pad_token_id or 0)
                with self.autocast():
                    result = model(**batch, output_hidden_states=return_embeddings or return_features)
                logits = result.logits.float()
                if self.shape_weight is not None:
                    logits = tagging_fit.with_shapes(logits, [encoded[i] for i in idx], self.shape_weight)
                out.add(idx, self._probabilities(logits), encoded)
                if return_embeddings:
                    out.add_embeddings(idx, result.hidden_states[-1][:, 0].float().cpu().numpy())
                if out.features is not None:
                    out.features[idx] = mean_pool(result.hidden_states[-1], batch["attention_mask"]).cpu().numpy()
                out.done += len(idx)
                if progress:
                    progress(out.done, len(encoded))
        return out.predictions()

    def _probabilities(self, logits: torch.Tensor) -> NDArray[np.float32]:
        probs = torch.sigmoid(logits) if self.schema.multi_label else torch.softmax(logits, -1)
        return probs.cpu().numpy()

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the checkpoint beside `directory` and swap it in by renames, so readers see
        either the old complete checkpoint or the new one, never half of one."""
        with atomic_directory(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta: dict[str, object] = {
                "schema": self.schema.to_dict(), "training": asdict(self.config), "base": self.name_or_path}
            if self.shape_weight is not None:
                meta[SHAPE_KEY] = self.shape_weight.detach().cpu().tolist()
            (tmp / SCHEMA_FILE).write_text(json.dumps(meta, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], config: TrainingConfig | None = None) -> Self:
        path = Path(directory)
        meta_file = path / SCHEMA_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint saved by TransformerModel (no {SCHEMA_FILE})")
        meta = json.loads(meta_file.read_text())
        schema = LabelSchema.from_dict(meta["schema"])
        if config is None:
            config = TrainingConfig.from_dict(meta.get("training", {}))
        wrapper = cls(path, schema, config)
        model: PreTrainedModel
        if schema.task_type is TaskType.TAGGING:
            model = AutoModelForTokenClassification.from_pretrained(path, dtype=torch.float32)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        wrapper._model = to_device(model, wrapper.device)
        wrapper._model.eval()
        if meta.get(SHAPE_KEY) is not None:
            weight = torch.tensor(meta[SHAPE_KEY], dtype=torch.float32, device=wrapper.device)
            wrapper.shape_weight = torch.nn.Parameter(weight, requires_grad=False)
        wrapper._tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        return wrapper


class _Outputs:
    """What `predict` collects batch by batch, in input order: class probabilities (one array) or
    per-word tag probabilities (one array per example), [CLS] embeddings and proxy features."""

    def __init__(self, schema: LabelSchema, examples: Sequence[Example], feature_dim: int | None) -> None:
        self.schema = schema
        self.n = len(examples)
        tagging = schema.task_type is TaskType.TAGGING
        self.words = [len(ex.words) for ex in tagging_examples(examples)] if tagging else []
        self.classes: NDArray[np.float32] | None = None
        self.tags: list[FloatArray] = [np.zeros((0, schema.num_outputs), np.float32)] * self.n
        self.embeddings: NDArray[np.float32] | None = None
        self.features = np.zeros((self.n, feature_dim), FEATURE_DTYPE) if feature_dim is not None else None
        self.done = 0

    def add(self, idx: IndexArray, probs: NDArray[np.float32], encoded: Sequence[Encoded]) -> None:
        if self.schema.task_type is TaskType.TAGGING:
            for row, i in enumerate(idx):
                self.tags[i] = encoding.word_probs(probs[row], encoded[i], self.words[i])
            return
        if self.classes is None:
            self.classes = np.zeros((self.n, probs.shape[1]), np.float32)
        self.classes[idx] = probs

    def add_embeddings(self, idx: IndexArray, cls: NDArray[np.float32]) -> None:
        if self.embeddings is None:
            self.embeddings = np.zeros((self.n, cls.shape[1]), np.float32)
        self.embeddings[idx] = cls

    def predictions(self) -> Predictions:
        probs = self.classes if self.classes is not None else self.tags
        return Predictions(self.schema.task_type, probs, self.embeddings, self.schema.multi_label, self.features)
