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
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from backend.engine.errors import NotEnoughLabelsError
from backend.engine.packaged import resolve_model
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
ProgressCallback = Callable[[int, int], None]  # (done, total)


@dataclass
class TrainingConfig:
    """Fine-tuning hyper-parameters; `None` picks the paper's value for the task type (appendix A)."""

    epochs: int | None = field(default=None, metadata={"help": "5 for classification, 15 for tagging"})
    learning_rate: float | None = field(default=None, metadata={"help": "2e-5 classification, 5e-5 tagging"})
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
        if self.batch_size < 1 or (self.inference_batch_size is not None and self.inference_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")

    def resolved_epochs(self, task_type: TaskType) -> int:
        return self.epochs or (5 if task_type is TaskType.CLASSIFICATION else 15)

    def resolved_learning_rate(self, task_type: TaskType) -> float:
        return self.learning_rate or (2e-5 if task_type is TaskType.CLASSIFICATION else 5e-5)


@dataclass
class FitReport:
    seconds: float
    steps: int
    final_loss: float
    examples: int


def quiet_transformers() -> None:
    """Silence per-load reports and progress bars, which drown a CLI's own progress output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class _Encoded:
    """One tokenized example: sub-token ids and, for tagging, the first sub-token of each word."""

    input_ids: list[int]
    word_starts: list[int] = field(default_factory=list)  # sub-token position of each kept word
    labels: list[int] | list[float] | None = None


class TransformerModel:
    """Train and run a classification or tagging head on any `AutoModel` checkpoint."""

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
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, use_fast=True)
            if not self._tokenizer.is_fast and self.schema.task_type is TaskType.TAGGING:
                raise ValueError(f"{self.name_or_path}: tagging needs a fast tokenizer (word ids)")
        return self._tokenizer

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
    def _encode(self, examples: Sequence[Example], with_labels: bool) -> list[_Encoded]:
        tok = self.tokenizer
        max_len = self.config.max_length
        if self.schema.task_type is TaskType.CLASSIFICATION:
            texts = [ex.text for ex in examples]  # type: ignore[union-attr]
            ids = tok(texts, truncation=True, max_length=max_len)["input_ids"]
            encoded = [_Encoded(list(row)) for row in ids]
            if with_labels:
                for enc, ex in zip(encoded, examples):
                    enc.labels = self._class_target(ex)  # type: ignore[arg-type]
            return encoded

        words = [list(ex.words) or [""] for ex in examples]  # type: ignore[union-attr]
        batch = tok(words, is_split_into_words=True, truncation=True, max_length=max_len)
        tag_index = {name: i for i, name in enumerate(self.schema.output_names)}
        encoded = []
        for i, ex in enumerate(examples):
            word_ids = batch.word_ids(i)
            starts: list[int] = []
            seen: set[int] = set()
            for pos, wid in enumerate(word_ids):
                if wid is not None and wid not in seen:
                    seen.add(wid)
                    starts.append(pos)
            enc = _Encoded(list(batch["input_ids"][i]), starts)
            if with_labels:
                labels = [IGNORE_INDEX] * len(enc.input_ids)
                for word_idx, pos in enumerate(starts):
                    labels[pos] = tag_index[ex.tags[word_idx]]  # type: ignore[union-attr]
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

    def _collate(self, batch: list[_Encoded], with_labels: bool) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id or 0
        width = max(len(e.input_ids) for e in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, enc in enumerate(batch):
            input_ids[row, : len(enc.input_ids)] = torch.tensor(enc.input_ids)
            attention[row, : len(enc.input_ids)] = 1
        out = {"input_ids": input_ids, "attention_mask": attention}
        if with_labels:
            if self.schema.task_type is TaskType.TAGGING:
                labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
                for row, enc in enumerate(batch):
                    labels[row, : len(enc.labels)] = torch.tensor(enc.labels)  # type: ignore[arg-type]
            elif self.schema.multi_label:
                labels = torch.tensor([enc.labels for enc in batch], dtype=torch.float)
            else:
                labels = torch.tensor([enc.labels[0] for enc in batch], dtype=torch.long)  # type: ignore[index]
            out["labels"] = labels
        return {k: v.to(self.device) for k, v in out.items()}

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # ----------------------------------------------------------------- training
    def fit(self, examples: Sequence[Example], progress: ProgressCallback | None = None) -> FitReport:
        """Fine-tune a fresh head from the pretrained checkpoint (never continues an old head)."""
        self._check_trainable(examples)
        start = time.perf_counter()
        self._model = self._fresh_model()
        model = self._model
        encoded = self._encode(examples, with_labels=True)
        task = self.schema.task_type
        epochs = self.config.resolved_epochs(task)
        bs = self.config.batch_size
        steps_per_epoch = math.ceil(len(encoded) / bs)
        total_steps = steps_per_epoch * epochs
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        params = [
            {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": self.config.weight_decay},
            {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(params, lr=self.config.resolved_learning_rate(task))
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(self.config.warmup_ratio * total_steps), total_steps
        )
        generator = torch.Generator().manual_seed(self.config.seed)
        model.train()
        loss_value = float("nan")
        step = 0
        lengths = [len(e.input_ids) for e in encoded]
        for _ in range(epochs):
            for batch_indices in _training_batches(lengths, bs, generator, self.config.group_by_length):
                batch = self._collate([encoded[i] for i in batch_indices], with_labels=True)
                with self._autocast():
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_value = float(loss.detach())
                step += 1
                if progress:
                    progress(step, total_steps)
        model.eval()
        return FitReport(time.perf_counter() - start, step, loss_value, len(encoded))

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
        batch_size: int | None = None,
        sort_by_length: bool = True,
        progress: ProgressCallback | None = None,
    ) -> Predictions:
        """Probabilities in input order. Sorting by length and padding per batch is the fast path;
        `sort_by_length=False` pads every batch to `max_length` (kept for the benchmark)."""
        task = self.schema.task_type
        if not examples:
            empty = np.zeros((0, self.schema.num_outputs), dtype=np.float32)
            return Predictions(task, empty if task is TaskType.CLASSIFICATION else [], None, self.schema.multi_label)
        model = self.model
        model.eval()
        encoded = self._encode(examples, with_labels=False)
        bs = batch_size or self.config.inference_batch_size or (512 if self.device.type == "cuda" else 64)
        order = np.argsort([len(e.input_ids) for e in encoded], kind="stable") if sort_by_length else np.arange(len(encoded))
        outputs: list[np.ndarray | None] = [None] * len(encoded)
        embeddings: list[np.ndarray | None] = [None] * len(encoded)
        with torch.inference_mode():
            for b in range(0, len(order), bs):
                idx = order[b : b + bs]
                chunk = [encoded[i] for i in idx]
                batch = self._collate(chunk, with_labels=False)
                if not sort_by_length and batch["input_ids"].shape[1] < self.config.max_length:
                    batch = _pad_to(batch, self.config.max_length, self.tokenizer.pad_token_id or 0)
                with self._autocast():
                    out = model(**batch, output_hidden_states=return_embeddings)
                logits = out.logits.float()
                if task is TaskType.CLASSIFICATION:
                    probs = torch.sigmoid(logits) if self.schema.multi_label else torch.softmax(logits, -1)
                    probs_np = probs.cpu().numpy()
                    for row, i in enumerate(idx):
                        outputs[i] = probs_np[row]
                else:
                    probs_np = torch.softmax(logits, -1).cpu().numpy()
                    for row, i in enumerate(idx):
                        outputs[i] = self._word_probs(probs_np[row], encoded[i], examples[i])  # type: ignore[arg-type]
                if return_embeddings:
                    cls = out.hidden_states[-1][:, 0].float().cpu().numpy()
                    for row, i in enumerate(idx):
                        embeddings[i] = cls[row]
                if progress:
                    progress(min(b + bs, len(order)), len(order))
        emb = np.stack(embeddings) if return_embeddings else None  # type: ignore[arg-type]
        if task is TaskType.CLASSIFICATION:
            return Predictions(task, np.stack(outputs), emb, self.schema.multi_label)  # type: ignore[arg-type]
        return Predictions(task, outputs, emb)  # type: ignore[arg-type]

    def _word_probs(self, token_probs: np.ndarray, enc: _Encoded, example: TaggingExample) -> np.ndarray:
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
        """Write the checkpoint to a temp dir beside `directory`, then swap it in by renames,
        so readers see either the old complete checkpoint or the new one, never half of one."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta = {"schema": self.schema.to_dict(), "training": asdict(self.config), "base": self.name_or_path}
            (tmp / SCHEMA_FILE).write_text(json.dumps(meta, indent=2))
            replace_directory(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike, config: TrainingConfig | None = None) -> "TransformerModel":
        path = Path(directory)
        meta_file = path / SCHEMA_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint saved by TransformerModel (no {SCHEMA_FILE})")
        meta = json.loads(meta_file.read_text())
        schema = LabelSchema.from_dict(meta["schema"])
        if config is None:
            saved = {k: v for k, v in meta.get("training", {}).items() if k in TrainingConfig.__dataclass_fields__}
            config = TrainingConfig(**saved)
        wrapper = cls(path, schema, config)
        auto = AutoModelForTokenClassification if schema.task_type is TaskType.TAGGING else AutoModelForSequenceClassification
        wrapper._model = auto.from_pretrained(path, dtype=torch.float32).to(wrapper.device).eval()
        wrapper._tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        return wrapper


def _training_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator, group_by_length: bool
) -> list[list[int]]:
    """One epoch of shuffled batches. Grouped by length, each batch holds texts of similar length
    (sorted within shuffled windows of 50 batches, as transformers' `group_by_length` does), so
    little compute goes to padding; the batch order is shuffled again so training stays random."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    window = batch_size * 50
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: -lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    extra = width - batch["input_ids"].shape[1]
    ids = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id)
    mask = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
    return {"input_ids": ids, "attention_mask": mask}


def replace_directory(source: Path, target: Path) -> None:
    """Move `source` onto `target` by renames on the same filesystem (old one removed after)."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(source, target)
