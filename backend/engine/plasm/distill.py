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
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    get_linear_schedule_with_warmup,
    set_seed,
)

from backend.engine.errors import ActiveLearningError
from backend.engine.packaged import resolve_model
from backend.engine.models.transformer import replace_directory, resolve_device

log = logging.getLogger(__name__)

REPORT_FILE = "distillation.json"
_LAYER_KEY = re.compile(r"(^|\.)(layer|layers)\.(\d+)\.")
_LAYER_ATTRS = ("num_hidden_layers", "n_layers", "num_layers")


class DistillationCancelled(ActiveLearningError):
    """Distillation was cancelled; nothing was written."""


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


@dataclass
class DistillReport:
    teacher: str
    output_dir: str
    teacher_layers: int
    student_layers: int
    kept_layers: list[int]
    hidden_map: dict[int, int]
    soft_targets: str  # 'mlm' or 'hidden'
    texts: int
    steps: int
    seconds: float
    losses: dict[str, float]  # mean of each term over the last epoch
    teacher_parameters: int
    student_parameters: int
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def num_layers(config) -> int:
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


def has_mlm_head(name_or_path: str) -> bool:
    """Whether the checkpoint carries trained MLM-head weights (not just the tied decoder)."""
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True, dtype=torch.float32)
    except (ValueError, KeyError, OSError):
        return False
    prefix = model.base_model_prefix + "."
    head = [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
    missing = set(info.get("missing_keys", ()))
    return bool(head) and not any(n in missing for n in head)


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
    mapped = {}
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


def distill(
    teacher_name: str | os.PathLike,
    texts: Sequence[str],
    output_dir: str | os.PathLike,
    config: DistillConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel_check: Callable[[], bool] | None = None,
) -> DistillReport:
    """Distil a half-depth student from `teacher_name` on `texts` and save it to `output_dir`."""
    config = config or DistillConfig()
    start = time.perf_counter()
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ActiveLearningError("distillation needs at least one non-empty text")
    if config.max_texts is not None and len(texts) > config.max_texts:
        rng = np.random.default_rng(config.seed)
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), config.max_texts, replace=False))]
    path = resolve_model(str(teacher_name))
    device = resolve_device(config.device)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    mlm = has_mlm_head(path)
    teacher = (AutoModelForMaskedLM if mlm else AutoModel).from_pretrained(path, dtype=torch.float32)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student, keep = make_student(teacher)
    student.to(device).train()
    n_t, n_s = num_layers(teacher.config), num_layers(student.config)
    layer_map = hidden_map(n_t, n_s)
    projection = None
    if not mlm:  # tied-decoder projection of hidden outputs on the teacher's word embeddings
        projection = teacher.get_input_embeddings().weight.detach().clone()
    mask_id = tokenizer.mask_token_id if mlm else None
    if mlm and mask_id is None:
        raise ActiveLearningError(f"{teacher_name}: an MLM teacher needs a tokenizer with a [MASK] token")

    encoded = tokenizer(list(texts), truncation=True, max_length=config.max_length,
                        return_special_tokens_mask=True)
    n = len(texts)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    params = [
        {"params": [p for k, p in student.named_parameters() if not k.endswith(no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for k, p in student.named_parameters() if k.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id or 0
    temp = config.temperature
    step = 0
    sums = {"kl": 0.0, "mse": 0.0, "cos": 0.0, "total": 0.0}
    for epoch in range(config.epochs):
        sums = dict.fromkeys(sums, 0.0)
        order = torch.randperm(n, generator=generator).tolist()
        for b in range(0, n, config.batch_size):
            if cancel_check is not None and cancel_check():
                raise DistillationCancelled("distillation cancelled; nothing was written")
            rows = order[b : b + config.batch_size]
            width = max(len(encoded["input_ids"][i]) for i in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            special = torch.ones((len(rows), width), dtype=torch.bool)
            for r, i in enumerate(rows):
                row = encoded["input_ids"][i]
                ids[r, : len(row)] = torch.tensor(row)
                attention[r, : len(row)] = 1
                special[r, : len(row)] = torch.tensor(encoded["special_tokens_mask"][i], dtype=torch.bool)
            inputs, chosen = _masked_inputs(ids, attention, special, config.mask_probability, mask_id, generator)
            inputs, attention, chosen = inputs.to(device), attention.to(device), chosen.to(device)
            with torch.no_grad():
                t_out = teacher(input_ids=inputs, attention_mask=attention, output_hidden_states=True)
            s_out = student(input_ids=inputs, attention_mask=attention, output_hidden_states=True)
            t_hidden, s_hidden = t_out.hidden_states, s_out.hidden_states
            if mlm:
                t_logits, s_logits = t_out.logits[chosen], s_out.logits[chosen]
            else:
                t_logits = t_hidden[-1][chosen] @ projection.T  # type: ignore[union-attr]
                s_logits = s_hidden[-1][chosen] @ projection.T  # type: ignore[union-attr]
            kl = nn.functional.kl_div(
                nn.functional.log_softmax(s_logits / temp, -1), nn.functional.log_softmax(t_logits / temp, -1),
                reduction="batchmean", log_target=True,
            ) * temp**2
            keep_tok = attention.bool()
            mse = torch.stack([
                nn.functional.mse_loss(s_hidden[j][keep_tok], t_hidden[layer_map[j]][keep_tok])
                for j in range(len(s_hidden))
            ]).mean()
            cos = (1 - nn.functional.cosine_similarity(s_hidden[-1][keep_tok], t_hidden[-1][keep_tok], dim=-1)).mean()
            loss = config.alpha_kl * kl + config.alpha_mse * mse + config.alpha_cos * cos
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for name, value in (("kl", kl), ("mse", mse), ("cos", cos), ("total", loss)):
                sums[name] += float(value.detach())
            step += 1
            if progress:
                progress(step, total)
    steps_last = steps_per_epoch
    losses = {k: v / steps_last for k, v in sums.items()}
    student.eval()
    report = DistillReport(
        teacher=str(teacher_name), output_dir=str(output_dir), teacher_layers=n_t, student_layers=n_s,
        kept_layers=keep, hidden_map=layer_map, soft_targets="mlm" if mlm else "hidden", texts=n, steps=step,
        seconds=time.perf_counter() - start, losses=losses,
        teacher_parameters=sum(p.numel() for p in teacher.parameters()),
        student_parameters=sum(p.numel() for p in student.parameters()), config=asdict(config),
    )
    _save_atomic(student, tokenizer, report, Path(output_dir))
    return report


def _save_atomic(student: PreTrainedModel, tokenizer, report: DistillReport, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.distill-{uuid.uuid4().hex[:8]}"
    try:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
        replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
