"""PLASM step 1: distil a small acquisition model (student) from the teacher on unlabeled texts.

The student keeps the teacher's architecture and width with half its layers, taken one of every
two (layers 0, 2, 4, ... initialised from the teacher's; embeddings and pooler copied), as
DistilBERT was built from BERT. Its loss, on the unlabeled pool's texts (Sanh et al., 2019):

    L = α_kl · T² · KL(softmax(t / T) || softmax(s / T))      soft targets over the vocabulary
      + α_mse · mean_j MSE(h_s[j], h_t[g(j)])                  hidden states, student layer j ↔ teacher g(j)
      + α_cos · (1 - cos(h_s[-1], h_t[-1]))                    last hidden state direction

over non-padding tokens, with `g(j) = round(j · L_t / L_s)` (embeddings ↔ embeddings, last ↔ last).
The soft targets `t`, `s` are the teacher's and student's **MLM logits** at masked positions
(15% of the tokens replaced by [MASK] in both inputs) when the teacher checkpoint has an MLM head.
A checkpoint without one, like the packaged sentence-transformers all-MiniLM-L6-v2, distils on
its **hidden outputs** instead: the logits are the last hidden states projected on the teacher's
(frozen) word-embedding matrix, the tied-decoder form of an MLM output, at 15% of the positions
of the unmasked input.

The student is saved (atomically) as a plain transformers checkpoint with the teacher's tokenizer,
so `AutoModelFor...from_pretrained` / `TransformerModel` fine-tune it as the acquisition model.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING

from backend.engine.callbacks import CancelCheck, Progress
from backend.engine.device import resolve_device, to_device
from backend.engine.errors import ActiveLearningError
from backend.engine.io import atomic_directory
from backend.engine.models.training import LOSS, LoopConfig, fit_loop, pad_and_mask, pad_rows
from backend.engine.packaged import resolve_model

log = logging.getLogger(__name__)

REPORT_FILE = "distillation.json"
_LAYER_KEY = re.compile(r"(^|\.)(layer|layers)\.(\d+)\.")
_LAYER_ATTRS = ("num_hidden_layers", "n_layers", "num_layers")
SoftTargets = Literal["mlm", "hidden"]


@dataclass
class DistillConfig:
    epochs: int = field(default=1, metadata={"help": "passes over the unlabeled texts"})
    batch_size: int = field(default=16, metadata={"help": "texts per step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (linear warm-up/decay)"})
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text"})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the soft targets"})
    alpha_kl: float = 1.0
    alpha_mse: float = 1.0
    alpha_cos: float = 1.0
    mask_probability: float = field(default=0.15, metadata={"help": "share of tokens masked / used for the KL"})
    max_texts: int | None = field(default=None, metadata={"help": "distil on at most this many texts (seeded)"})
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ValueError("temperature and learning_rate must be > 0")
        if not 0 < self.mask_probability < 1:
            raise ValueError("mask_probability must be in (0, 1)")

    def loop(self) -> LoopConfig:
        """The shared training loop's settings: plain shuffled batches (no length grouping)."""
        return LoopConfig(
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm,
            seed=self.seed, group_by_length=False,
        )


@dataclass
class DistillReport:
    teacher: str
    output_dir: str
    teacher_layers: int
    student_layers: int
    kept_layers: list[int]
    hidden_map: dict[int, int]
    soft_targets: SoftTargets
    texts: int
    steps: int
    seconds: float
    losses: dict[str, float]  # mean of each term over the last epoch
    teacher_parameters: int
    student_parameters: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Teacher:
    """The frozen teacher and which soft targets it gives: its MLM logits when the checkpoint has
    trained MLM-head weights, otherwise its hidden outputs."""

    model: PreTrainedModel
    soft_targets: SoftTargets


def num_layers(config: PretrainedConfig) -> int:
    for attr in _LAYER_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the number of layers of a {type(config).__name__}")


def student_layers(n_teacher: int) -> list[int]:
    """Teacher layers the student keeps: one of every two, half of them (at least one)."""
    n_student = max(1, n_teacher // 2)
    return list(range(0, 2 * n_student, 2))


def hidden_map(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student hidden-state index -> teacher hidden-state index (0 = embeddings, last = last)."""
    return {j: int(round(j * n_teacher / n_student)) for j in range(n_student + 1)}


def make_student(teacher: PreTrainedModel) -> tuple[PreTrainedModel, list[int]]:
    """A copy of `teacher`'s architecture with half the layers, initialised from the teacher's
    embeddings, every second layer, and any other (pooler, head) weights."""
    n_teacher = num_layers(teacher.config)
    keep = student_layers(n_teacher)
    config = copy.deepcopy(teacher.config)
    for attr in _LAYER_ATTRS:
        if isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(keep))
            break
    student = type(teacher)(config)
    source = teacher.state_dict()
    target = student.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key in target:
        match = _LAYER_KEY.search(key)
        if match:
            j = int(match.group(3))
            teacher_key = key[: match.start(3)] + str(keep[j]) + key[match.end(3) :]
        else:
            teacher_key = key
        if teacher_key not in source or source[teacher_key].shape != target[key].shape:
            raise ValueError(f"cannot initialise student weight {key} from the teacher ({teacher_key})")
        mapped[key] = source[teacher_key].clone()
    student.load_state_dict(mapped, strict=True)
    return student, keep


def _masked_inputs(
    ids: torch.Tensor, attention: torch.Tensor, special: torch.Tensor, share: float, mask_id: int | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick `share` of the ordinary tokens (at least one per text) and, when `mask_id` is given,
    replace them by [MASK]. Returns (input ids, chosen positions)."""
    candidates = attention.bool() & ~special
    scores = torch.rand(ids.shape, generator=generator)
    chosen = candidates & (scores < share)
    # at least one position per text that has any ordinary token
    first = torch.where(candidates, scores, torch.full_like(scores, 2.0)).argmin(dim=1)
    rows = candidates.any(dim=1)
    chosen[rows, first[rows]] = True
    if mask_id is None:
        return ids, chosen
    return ids.masked_fill(chosen, mask_id), chosen


def load_teacher(name_or_path: str) -> Teacher:
    """Load the teacher once, as a masked LM when its architecture has an MLM class and the
    checkpoint carries that head's weights. Any loading error propagates: it never silently
    changes the distillation objective. A checkpoint whose MLM head is absent (an encoder saved
    alone, e.g. a sentence-transformers model) is read as `AutoModel` instead, keeping its pooler."""
    config = AutoConfig.from_pretrained(name_or_path)
    if type(config) in MODEL_FOR_MASKED_LM_MAPPING:
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True, dtype=torch.float32)
        prefix = model.base_model_prefix + "."
        head = [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
        missing = set(info.get("missing_keys", ()))
        if head and not any(n in missing for n in head):
            return Teacher(model, "mlm")
        log.info("%s: no trained MLM head; distilling on hidden outputs", name_or_path)
        del model
    return Teacher(AutoModel.from_pretrained(name_or_path, dtype=torch.float32), "hidden")


def _word_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """The model's input word-embedding matrix (vocabulary, hidden)."""
    weight = model.get_input_embeddings().weight
    if not isinstance(weight, torch.Tensor):
        raise ActiveLearningError(f"{type(model).__name__}: its input embeddings hold no weight matrix")
    return weight


def has_mlm_head(name_or_path: str) -> bool:
    """Whether the checkpoint carries trained MLM-head weights (not just the tied decoder)."""
    return load_teacher(name_or_path).soft_targets == "mlm"


def select_texts(texts: Sequence[str], config: DistillConfig) -> list[str]:
    """The non-empty texts, at most `config.max_texts` of them (a seeded subsample)."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ActiveLearningError("distillation needs at least one non-empty text")
    if config.max_texts is not None and len(texts) > config.max_texts:
        rng = np.random.default_rng(config.seed)
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), config.max_texts, replace=False))]
    return texts


@dataclass
class TokenizedTexts:
    """The distillation texts' sub-token ids, and which of them are special tokens ([CLS], [SEP])."""

    input_ids: list[list[int]]
    special_tokens_mask: list[list[int]]


@dataclass
class ForwardPass:
    """What the losses read of one model's forward pass."""

    hidden_states: Sequence[torch.Tensor]  # embeddings, then every layer
    logits: torch.Tensor | None  # MLM logits; None when distilling on hidden outputs


class DistillationObjective:
    """One step's losses (KL on soft targets, hidden-state MSE, last-layer cosine) for a batch of
    the tokenized texts; see the module docstring."""

    def __init__(self, teacher: Teacher, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 encoded: TokenizedTexts, config: DistillConfig, device: torch.device) -> None:
        self.teacher, self.student, self.config, self.device = teacher.model, student, config, device
        self.encoded = encoded
        self.pad_id = tokenizer.pad_token_id or 0
        self.layer_map = hidden_map(num_layers(teacher.model.config), num_layers(student.config))
        self.mlm = teacher.soft_targets == "mlm"
        self.mask_id = tokenizer.mask_token_id if self.mlm else None
        if self.mlm and self.mask_id is None:
            raise ActiveLearningError("an MLM teacher needs a tokenizer with a [MASK] token")
        # hidden-output targets: the tied-decoder projection on the teacher's word embeddings
        self.projection = None if self.mlm else _word_embeddings(teacher.model).detach().clone()

    def __call__(self, rows: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = pad_and_mask([self.encoded.input_ids[i] for i in rows], self.pad_id)
        special = pad_rows([self.encoded.special_tokens_mask[i] for i in rows], True, dtype=torch.bool)
        inputs, chosen = _masked_inputs(batch["input_ids"], batch["attention_mask"], special,
                                        self.config.mask_probability, self.mask_id, generator)
        inputs, chosen = inputs.to(self.device), chosen.to(self.device)
        attention = batch["attention_mask"].to(self.device)
        with torch.no_grad():
            t_out = self.teacher(input_ids=inputs, attention_mask=attention, output_hidden_states=True)
        s_out = self.student(input_ids=inputs, attention_mask=attention, output_hidden_states=True)
        teacher = ForwardPass(t_out.hidden_states, t_out.logits if self.mlm else None)
        student = ForwardPass(s_out.hidden_states, s_out.logits if self.mlm else None)
        return self.losses(teacher, student, attention.bool(), chosen)

    def _soft_targets(self, out: ForwardPass, chosen: torch.Tensor) -> torch.Tensor:
        """The logits the KL term compares at the chosen positions: MLM logits, or the last hidden
        states projected on the teacher's word embeddings."""
        if self.projection is None:
            if out.logits is None:
                raise ValueError("an MLM teacher's objective needs both models' MLM logits")
            return out.logits[chosen]
        return out.hidden_states[-1][chosen] @ self.projection.T

    def losses(self, t_out: ForwardPass, s_out: ForwardPass, keep_tok: torch.Tensor, chosen: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        t_hidden, s_hidden, temp, c = t_out.hidden_states, s_out.hidden_states, self.config.temperature, self.config
        t_logits, s_logits = self._soft_targets(t_out, chosen), self._soft_targets(s_out, chosen)
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(s_logits / temp, -1), nn.functional.log_softmax(t_logits / temp, -1),
            reduction="batchmean", log_target=True,
        ) * temp**2
        mse = torch.stack([
            nn.functional.mse_loss(s_hidden[j][keep_tok], t_hidden[self.layer_map[j]][keep_tok])
            for j in range(len(s_hidden))
        ]).mean()
        cos = (1 - nn.functional.cosine_similarity(s_hidden[-1][keep_tok], t_hidden[-1][keep_tok], dim=-1)).mean()
        total = c.alpha_kl * kl + c.alpha_mse * mse + c.alpha_cos * cos
        return {"kl": kl, "mse": mse, "cos": cos, LOSS: total}


def distill(
    teacher_name: str | os.PathLike[str],
    texts: Sequence[str],
    output_dir: str | os.PathLike[str],
    config: DistillConfig | None = None,
    *,
    progress: Progress | None = None,
    cancel_check: CancelCheck | None = None,
) -> DistillReport:
    """Distil a half-depth student from `teacher_name` on `texts` and save it to `output_dir`.
    `cancel_check()` returning True stops it with `Cancelled` before anything is written."""
    config = config or DistillConfig()
    start = time.perf_counter()
    texts = select_texts(texts, config)
    path = resolve_model(str(teacher_name))
    device = resolve_device(config.device)
    set_seed(config.seed)
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path, use_fast=True)
    teacher = load_teacher(path)
    to_device(teacher.model, device).eval()
    teacher.model.requires_grad_(False)
    student, keep = make_student(teacher.model)
    to_device(student, device)
    batch = tokenizer(list(texts), truncation=True, max_length=config.max_length, return_special_tokens_mask=True)
    encoded = TokenizedTexts(batch["input_ids"], batch["special_tokens_mask"])
    objective = DistillationObjective(teacher, student, tokenizer, encoded, config, device)
    lengths = [len(ids) for ids in encoded.input_ids]
    loop = fit_loop(student, lengths, objective, config.loop(), progress=progress, cancel_check=cancel_check)
    report = DistillReport(
        teacher=str(teacher_name), output_dir=str(output_dir), teacher_layers=num_layers(teacher.model.config),
        student_layers=num_layers(student.config), kept_layers=keep, hidden_map=objective.layer_map,
        soft_targets=teacher.soft_targets, texts=len(texts), steps=loop.steps,
        seconds=time.perf_counter() - start, losses=loop.epoch_losses,
        teacher_parameters=sum(p.numel() for p in teacher.model.parameters()),
        student_parameters=sum(p.numel() for p in student.parameters()), config=asdict(config),
    )
    save_student(student, tokenizer, report, Path(output_dir))
    return report


def save_student(student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: DistillReport,
                 target: Path) -> None:
    """Weights, the teacher's tokenizer and the report, swapped into place atomically."""
    with atomic_directory(target) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
