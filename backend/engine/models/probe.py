"""LP-FT (Kumar et al., 2022): start a fine-tune's classification head from a linear probe.

A logistic regression fitted on the frozen features the head reads (the proxy's `ProxyHead`,
its C chosen by cross-validation) replaces the random head, so the first steps do not push
random-head gradients into the pretrained features. Off by default (`TrainingConfig.linear_probe_init`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from numpy.typing import NDArray

from backend.engine.proxy import ProxyHead
from backend.engine.types import FloatArray, IndexArray, LabelSchema

Batches = Iterable[tuple[IndexArray, dict[str, torch.Tensor]]]  # (positions, collated batch)


def classifier_head(model: torch.nn.Module, num_outputs: int) -> torch.nn.Linear | None:
    """The linear layer that outputs a classifier's logits (BERT's `classifier`, RoBERTa's
    `classifier.out_proj`, ...): the last `Linear` with one output per label."""
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_outputs]
    return heads[-1] if heads else None


def head_inputs(
    model: torch.nn.Module, head: torch.nn.Linear, batches: Batches, rows: int,
    autocast: Callable[[], AbstractContextManager[object]],
) -> NDArray[np.float32]:
    """What `head` reads for each of `rows` examples (e.g. BERT's pooled [CLS]), dropout off."""
    seen: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach().float().cpu())

    hook = head.register_forward_pre_hook(capture)
    out = np.zeros((rows, head.in_features), dtype=np.float32)
    model.eval()
    try:
        with torch.inference_mode():
            for idx, batch in batches:
                with autocast():
                    model(**batch)
                out[idx] = seen.pop().numpy()
    finally:
        hook.remove()
    return out


def init_from_probe(
    head: torch.nn.Linear, features: FloatArray, labels: Sequence[Sequence[str]], schema: LabelSchema, seed: int
) -> None:
    """Fit the probe on `features` (its C from `ProxyHead.choose_c`) and copy its weights into `head`."""
    probe = ProxyHead(schema, seed=seed)
    probe.fit(features, labels, c=probe.choose_c(features, labels), estimate=False)
    coef, intercept = probe.weights()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(intercept))
