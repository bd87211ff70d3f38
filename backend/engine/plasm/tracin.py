"""TracIn self-influence (Pruthi et al., 2020) for spotting wrong pseudo-labels.

TracIn-CP scores a training example z by its self-influence over checkpoints θ_1..θ_K saved while
training on the (noisy) data: `SI(z) = Σ_k η_k ||∇_θ ℓ(z; θ_k)||²`. Mislabelled examples keep a
large loss gradient through training, so the highest self-influence ones are dropped first.

Form used here: the **exact closed form over the last layer** (the output `nn.Linear`, weights and
bias, as Pruthi et al. do in practice), not the full gradient. For the output layer `z = W h + b`
and the loss gradient with respect to its outputs `g = ∂ℓ/∂z`:

* classification: `g = p - y` (softmax + cross-entropy, or sigmoid + BCE for multi-label), so
  `||∇_W ℓ||² + ||∇_b ℓ||² = ||g||² (||h||² + 1)`;
* tagging, with the example's loss the sum over its words `t`: `∇_W ℓ = Σ_t g_t h_tᵀ`, whose squared
  Frobenius norm is `Σ_{t,s} (g_t·g_s)(h_t·h_s)` (the element-wise product of the two Gram
  matrices), plus `||Σ_t g_t||²` for the bias. For a CRF output (the BiLSTM-CRF), `∂NLL/∂e_t =
  μ_t - y_t` with `μ_t` the posterior tag marginals, which that model returns as softmax(logits):
  the same formula is exact there too.

Cost: one forward pass (no backward, no per-example gradients) over the scored examples at each
checkpoint, i.e. K inference passes, plus O(n² (T + H)) per tagged text for the Gram matrices;
the checkpoints are taken during the successor's training (end of K evenly spaced epochs), so
nothing is written to disk. The full-gradient form would need one backward pass per example and
checkpoint (≈3× the compute of a forward pass, not batchable without per-sample gradients) and the
checkpoints stored: about an order of magnitude more for a Transformer successor.
`η_k` is the mean learning rate of the linear warm-up/decay schedule over the steps since the
previous checkpoint.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from backend.engine.callbacks import Progress
from backend.engine.models.transformer import IGNORE_INDEX, TransformerModel
from backend.engine.types import Example, TaskType

FORM = "last-layer closed form (TracIn-CP, exact for the output linear layer)"


def output_layer(model: nn.Module, num_outputs: int) -> nn.Linear:
    """The linear layer that produces the logits: the last registered `nn.Linear` with
    `num_outputs` outputs (BERT's `classifier`, ELECTRA's `classifier.out_proj`, ...)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_outputs]
    if not found:
        raise ValueError(f"no output nn.Linear with {num_outputs} outputs in {type(model).__name__}")
    return found[-1]


def last_layer_grad_norms(
    wrapper: TransformerModel, examples: Sequence[Example], batch_size: int | None = None
) -> NDArray[np.float64]:
    """`||∇ℓ(z)||²` over the output layer's weights and bias for each labeled example, at the
    model's current weights (eval mode: no dropout)."""
    if not examples:
        return np.zeros(0)
    model = wrapper.model
    schema = wrapper.schema
    layer = output_layer(model, schema.num_outputs)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    was_training = model.training
    model.eval()
    encoded = wrapper.encode(examples, with_labels=True)
    bs = batch_size or wrapper.config.inference_batch_size or (256 if wrapper.device.type == "cuda" else 64)
    out = np.zeros(len(encoded))
    try:
        with torch.no_grad():
            for idx, batch in wrapper.batches(encoded, bs, with_labels=True):
                labels = batch.pop("labels")
                captured.clear()
                with wrapper.autocast():
                    logits = model(**batch).logits.float()
                if not captured:
                    raise RuntimeError("the output layer was not called in the forward pass")
                h = captured[-1].float()
                out[idx] = _grad_sq_norms(logits, h, labels, schema.task_type, schema.multi_label).cpu().numpy()
    finally:
        hook.remove()
        model.train(was_training)
    return out


def _grad_sq_norms(
    logits: torch.Tensor, h: torch.Tensor, labels: torch.Tensor, task: TaskType, multi_label: bool
) -> torch.Tensor:
    if task is TaskType.CLASSIFICATION:
        if multi_label:
            g = torch.sigmoid(logits) - labels.float()
        else:
            g = torch.softmax(logits, -1) - nn.functional.one_hot(labels, logits.shape[-1]).float()
        return (g * g).sum(-1) * ((h * h).sum(-1) + 1.0)
    if h.shape[:2] != logits.shape[:2]:
        raise RuntimeError(f"output layer input {tuple(h.shape)} does not align with logits {tuple(logits.shape)}")
    valid = (labels != IGNORE_INDEX).float()[..., None]
    y = nn.functional.one_hot(labels.clamp(min=0), logits.shape[-1]).float()
    g = (torch.softmax(logits, -1) - y) * valid  # (B, L, T)
    hv = h * valid  # (B, L, H)
    gram = torch.einsum("blt,bmt->blm", g, g) * torch.einsum("blh,bmh->blm", hv, hv)
    bias = g.sum(1)
    return gram.sum((1, 2)) + (bias * bias).sum(-1)


def checkpoint_steps(total_steps: int, epochs: int, checkpoints: int) -> list[int]:
    """Optimizer step counts at the end of `checkpoints` evenly spaced epochs (the last included)."""
    if total_steps < 1 or epochs < 1:
        return []
    k = max(1, min(checkpoints, epochs))
    per_epoch = total_steps / epochs
    ends = sorted({int(round(round(j * epochs / k) * per_epoch)) for j in range(1, k + 1)})
    return [s for s in ends if s > 0]


def linear_schedule_lr(step_index: int, total: int, warmup: int, base: float) -> float:
    """Learning rate of optimizer step `step_index` (0-based) under transformers' linear schedule."""
    if step_index < warmup:
        return base * step_index / max(1, warmup)
    return base * max(0.0, (total - step_index) / max(1, total - warmup))


class TracInCheckpoints:
    """Accumulates TracIn-CP self-influence of `examples` while a successor trains.

    Pass `tracker.progress` as `fit(..., progress=...)`: at each checkpoint step it scores the
    examples with the current weights. `extra_progress` still receives every (done, total).
    """

    def __init__(
        self,
        wrapper: TransformerModel,
        examples: Sequence[Example],
        checkpoints: int = 3,
        extra_progress: Progress | None = None,
        *,
        training_size: int | None = None,
    ) -> None:
        """`training_size`: examples the tracked fit trains on (default: `examples`), which sets its
        epochs and so where epoch ends, the checkpoints, fall."""
        if checkpoints < 1:
            raise ValueError("TracIn needs at least one checkpoint")
        self.wrapper = wrapper
        self.examples = list(examples)
        self.checkpoints = checkpoints
        self.extra_progress = extra_progress
        self.scores = np.zeros(len(self.examples))
        self.weights: list[float] = []
        self.steps: list[int] = []
        self.seconds = 0.0
        self._plan: list[int] | None = None
        self.training_size = training_size if training_size is not None else len(self.examples)

    def progress(self, done: int, total: int) -> None:
        if self._plan is None:
            # the same epochs the fit resolved for this many examples (the few-shot floor may raise them)
            epochs = self.wrapper.config.resolved_epochs(self.wrapper.schema.task_type, self.training_size)
            self._plan = checkpoint_steps(total, epochs, self.checkpoints)
        if done in self._plan:
            start = time.perf_counter()
            cfg = self.wrapper.config
            base = cfg.resolved_learning_rate(self.wrapper.schema.task_type)
            warmup = int(cfg.warmup_ratio * total)
            previous = self.steps[-1] if self.steps else 0
            eta = float(np.mean([linear_schedule_lr(i, total, warmup, base) for i in range(previous, done)]))
            self.scores += eta * last_layer_grad_norms(self.wrapper, self.examples)
            self.weights.append(eta)
            self.steps.append(done)
            self.seconds += time.perf_counter() - start
        if self.extra_progress:
            self.extra_progress(done, total)
