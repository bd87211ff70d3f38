"""LP-FT (Kumar et al., 2022): start a fine-tune's output layer from a linear probe.

A logistic regression fitted on the frozen features the output layer reads replaces the random
head, so the first steps do not push random-head gradients into the pretrained features.
Classification: the proxy's `ProxyHead` (its C chosen by cross-validation) on what the classifier
reads (e.g. BERT's pooled [CLS]); off by default. Tagging: the fast path's `TokenHead` (class
balance, fixed C, tags no label showed kept improbable) on the sub-token state read at each word's
first sub-token (the classifier's input there), with the 6 word-shape bits; on by default
(`TrainingConfig.linear_probe_init`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from numpy.typing import NDArray

from backend.engine.models.encoding import Encoded
from backend.engine.proxy import FEATURE_DTYPE, ProxyHead
from backend.engine.token_head import TokenHead
from backend.engine.types import FloatArray, IndexArray, LabelSchema
from backend.engine.word_features import WordFeatures, offsets_of

Batches = Iterable[tuple[IndexArray, dict[str, torch.Tensor]]]  # (positions, collated batch)


def classifier_head(model: torch.nn.Module, num_outputs: int) -> torch.nn.Linear | None:
    """The linear layer that outputs a classifier's logits (BERT's `classifier`, RoBERTa's
    `classifier.out_proj`, ...): the last `Linear` with one output per label."""
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_outputs]
    return heads[-1] if heads else None


def _states(
    model: torch.nn.Module, head: torch.nn.Linear, batches: Batches,
    autocast: Callable[[], AbstractContextManager[object]],
) -> Iterator[tuple[IndexArray, NDArray[np.float32]]]:
    """(positions, what `head` read for that batch) batch by batch, dropout off: a forward
    pre-hook captures the head's input."""
    seen: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach().float().cpu())

    hook = head.register_forward_pre_hook(capture)
    model.eval()
    try:
        with torch.inference_mode():
            for idx, batch in batches:
                with autocast():
                    model(**batch)
                yield idx, seen.pop().numpy()
    finally:
        hook.remove()


def head_inputs(
    model: torch.nn.Module, head: torch.nn.Linear, batches: Batches, rows: int,
    autocast: Callable[[], AbstractContextManager[object]],
) -> NDArray[np.float32]:
    """What `head` reads for each of `rows` examples (e.g. BERT's pooled [CLS]), dropout off."""
    out = np.zeros((rows, head.in_features), dtype=np.float32)
    for idx, states in _states(model, head, batches, autocast):
        out[idx] = states
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


def word_inputs(
    model: torch.nn.Module, head: torch.nn.Linear, batches: Batches, encoded: Sequence[Encoded],
    autocast: Callable[[], AbstractContextManager[object]],
) -> NDArray[np.float32]:
    """(kept words of all `encoded` in order, head.in_features): what a token classifier's `head`
    reads at each word's first sub-token (where its tag is trained and read back), dropout off."""
    offsets = offsets_of([len(e.word_starts) for e in encoded])
    out = np.zeros((int(offsets[-1]), head.in_features), dtype=np.float32)
    for idx, states in _states(model, head, batches, autocast):
        for row, i in enumerate(idx):
            out[offsets[i] : offsets[i + 1]] = states[row, encoded[i].word_starts]
    return out


def tagging_probe(
    features: FloatArray, lengths: Sequence[int], tags: Sequence[Sequence[str]], shapes: NDArray[np.uint8],
    schema: LabelSchema, seed: int, *, shape_bits: bool = True,
) -> tuple[TokenHead, float]:
    """The per-word probe of a token classifier: a `TokenHead` (with the shape bits when the
    model adds a shape term) fitted on `features` (words, dim) divided by their mean norm, so its
    C means what it means on the fast path's unit-norm word vectors. Returns (the head, that scale)."""
    scale = float(np.linalg.norm(features, axis=1).mean()) if len(features) else 1.0
    scale = scale if scale > 0 else 1.0
    words = WordFeatures((features / scale).astype(FEATURE_DTYPE), shapes, offsets_of(lengths))
    return TokenHead(schema, seed=seed, shape_bits=shape_bits).fit(words, tags), scale


def init_tagging_from_probe(head: torch.nn.Linear, probe: TokenHead, scale: float) -> NDArray[np.float32]:
    """Copy a `tagging_probe`'s word-vector weights (over `scale`) and intercepts into `head`;
    returns its shape-bit weights (tags, bits; no columns for a probe without them), for a model
    that adds them to the logits."""
    if probe.coef is None or probe.intercept is None:
        raise RuntimeError("the tagging probe is not fitted")
    dim = head.in_features
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(probe.coef[:, :dim] / scale))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(probe.intercept))
    shape: NDArray[np.float32] = np.ascontiguousarray(probe.coef[:, dim:], np.float32)
    return shape
