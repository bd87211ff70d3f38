"""What a tagging fine-tune of a pretrained encoder adds to `TransformerModel.fit`, so that tens of
labeled sentences teach it something (issue 18):

* LP-FT: the token classifier starts from the per-word probe (`probe.tagging_probe`, a `TokenHead`
  on what the classifier reads at each word's first sub-token) instead of a random layer;
* a word-shape term: (tags, 6 shape bits) weights whose product with each word's shape bits is
  added to its tag logits (an uncased encoder never sees casing), started from the probe's;
* a class-weighted loss (`TrainingConfig.tag_balance`), as the token head weighs its words.

Decoding the result into valid IOB2 is `iob2.iob2_tags`' (`TransformerModel.decode_tags`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedModel

from backend.engine.models import encoding, probe
from backend.engine.models.encoding import IGNORE_INDEX, Encoded
from backend.engine.types import Example, LabelSchema, tagging_examples
from backend.engine.word_features import SHAPE_BITS

SHAPE_KEY = "word_shape_weights"  # al_schema.json: a tagger's (tags, shape bits) shape term


class WithShapes(torch.nn.Module):
    """What a tagging fit trains: the model and its shape term's weights, as one module (so the
    optimizer and gradient clipping see both)."""

    def __init__(self, model: PreTrainedModel, shape_weight: torch.nn.Parameter) -> None:
        super().__init__()
        self.model = model
        self.shape_weight = shape_weight


def zero_shape_term(num_outputs: int, device: torch.device) -> torch.nn.Parameter:
    """A shape term that adds nothing until trained (no probe to start it from)."""
    return torch.nn.Parameter(torch.zeros((num_outputs, len(SHAPE_BITS)), device=device))


def tag_weights(encoded: Sequence[Encoded], num_outputs: int, balance: float,
                device: torch.device) -> torch.Tensor | None:
    """Per-tag loss weights: each tag the labels show weighs (words / (tags shown * its words))
    ** `balance`, as `TokenHead` weighs its words; tags not shown 1; None when `balance` is 0."""
    if not balance:
        return None
    counts = np.bincount([t for e in encoded for t in (e.labels or []) if t != IGNORE_INDEX],
                         minlength=num_outputs).astype(np.float64)
    seen = counts > 0
    weights = np.ones(num_outputs)
    weights[seen] = (counts.sum() / (seen.sum() * counts[seen])) ** balance
    return torch.tensor(weights, dtype=torch.float32, device=device)


def with_shapes(logits: torch.Tensor, batch: Sequence[Encoded], shape_weight: torch.Tensor | None) -> torch.Tensor:
    """Tag logits (batch, sub-tokens, tags) plus the shape bits' term at each word's first
    sub-token (unchanged without `shape_weight`)."""
    if shape_weight is None:
        return logits
    bits = encoding.shape_bits(batch, logits.shape[1]).to(logits.device)
    return logits + bits @ shape_weight.T


def tagging_loss(logits: torch.Tensor, labels: torch.Tensor, batch: Sequence[Encoded],
                 shape_weight: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
    """Weighted cross-entropy of the tag logits (plus the shape term) at the sub-tokens that carry
    a word's tag."""
    logits = with_shapes(logits.float(), batch, shape_weight)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), weight=weights, ignore_index=IGNORE_INDEX)


def start_from_probe(
    model: PreTrainedModel, schema: LabelSchema, examples: Sequence[Example], encoded: Sequence[Encoded],
    batches: probe.Batches, autocast: Callable[[], AbstractContextManager[object]], seed: int, *, word_shapes: bool,
) -> NDArray[np.float32] | None:
    """Tagging's LP-FT: set `model`'s token classifier to the per-word probe fitted on what it reads
    at each word's first sub-token (with the shape bits when `word_shapes`). Returns the probe's
    shape weights (tags, bits) for the shape term; None when nothing was fitted (no classifier
    found, or labels that show nothing but O: the probe would only learn the prior)."""
    head = probe.classifier_head(model, schema.num_outputs)
    if head is None:
        return None
    kept = [len(e.word_starts) for e in encoded]
    tags = [list(ex.tags[:n]) for ex, n in zip(tagging_examples(examples), kept, strict=True)]
    if not any(t != "O" for row in tags for t in row):
        return None
    features = probe.word_inputs(model, head, batches, encoded, autocast)
    shapes = np.array([s for e in encoded for s in e.word_shapes], np.uint8)
    fitted, scale = probe.tagging_probe(features, kept, tags, shapes, schema, seed, shape_bits=word_shapes)
    shape = probe.init_tagging_from_probe(head, fitted, scale)
    return shape if word_shapes else None
