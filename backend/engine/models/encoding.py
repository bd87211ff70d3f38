"""Examples to model inputs and back: tokenisation for both task types, padded batches, and the
per-word reading of a tagger's sub-token outputs.

Classification tokenizes each text (truncated to `max_length`) with its class index, or a 0/1
row for multi-label, as target. Tagging tokenizes the words and remembers each kept word's first
sub-token: the training target sits there (`IGNORE_INDEX` on continuation sub-tokens, special
tokens and padding), and that is where a prediction is read back (`word_probs`); it also keeps
each kept word's shape byte (`word_features.word_shape`: the casing an uncased tokenizer drops).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import BatchEncoding, PreTrainedTokenizerBase

from backend.engine.models.training import pad_and_mask, pad_rows
from backend.engine.types import (
    ClassificationExample,
    Example,
    FloatArray,
    IndexArray,
    LabelSchema,
    TaggingExample,
    TaskType,
    classification_examples,
    tagging_examples,
)
from backend.engine.word_features import SHAPE_BITS, sentence_shapes, unpack_shapes

IGNORE_INDEX = -100  # target of the sub-tokens that carry no word's tag (torch's cross-entropy skips it)


@dataclass
class Encoded:
    """One tokenized example: sub-token ids and, for tagging, the first sub-token of each word;
    with labels, its training target."""

    input_ids: list[int]
    word_starts: list[int] = field(default_factory=list)  # sub-token position of each kept word
    # a tag id per sub-token (tagging) or [class index] (single-label classification)
    labels: list[int] | None = None
    multi_hot: list[float] | None = None  # multi-label classification: 1.0 for each gold class
    word_shapes: list[int] = field(default_factory=list)  # tagging: shape byte of each kept word


def encode(
    tokenizer: PreTrainedTokenizerBase, schema: LabelSchema, examples: Sequence[Example], max_length: int,
    with_labels: bool = False,
) -> list[Encoded]:
    """Tokenize examples of the schema's task type (truncated to `max_length`); with labels as
    training targets."""
    if schema.task_type is TaskType.CLASSIFICATION:
        return encode_texts(tokenizer, schema, classification_examples(examples), max_length, with_labels)
    return encode_words(tokenizer, schema, tagging_examples(examples), max_length, with_labels)


def _input_ids(encoding: BatchEncoding) -> list[list[int]]:
    ids: list[list[int]] = encoding["input_ids"]
    return ids


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, schema: LabelSchema, examples: Sequence[ClassificationExample],
    max_length: int, with_labels: bool,
) -> list[Encoded]:
    ids = _input_ids(tokenizer([ex.text for ex in examples], truncation=True, max_length=max_length))
    encoded = [Encoded(list(row)) for row in ids]
    if with_labels:
        index = {name: i for i, name in enumerate(schema.labels)}
        for enc, ex in zip(encoded, examples):
            if schema.multi_label:
                enc.multi_hot = [0.0] * len(index)
                for label in ex.labels:
                    enc.multi_hot[index[label]] = 1.0
            else:
                enc.labels = [index[ex.labels[0]]]
    return encoded


def encode_words(
    tokenizer: PreTrainedTokenizerBase, schema: LabelSchema, examples: Sequence[TaggingExample], max_length: int,
    with_labels: bool,
) -> list[Encoded]:
    words = [list(ex.words) or [""] for ex in examples]
    batch = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    ids = _input_ids(batch)
    tag_index = {name: i for i, name in enumerate(schema.output_names)}
    encoded = []
    for i, ex in enumerate(examples):
        starts: list[int] = []
        seen: set[int] = set()
        for pos, wid in enumerate(batch.word_ids(i)):
            if wid is not None and wid not in seen:
                seen.add(wid)
                starts.append(pos)
        enc = Encoded(list(ids[i]), starts, word_shapes=sentence_shapes(ex.words)[: len(starts)].tolist())
        if with_labels:
            labels = [IGNORE_INDEX] * len(enc.input_ids)
            for word_idx, pos in enumerate(starts):
                labels[pos] = tag_index[ex.tags[word_idx]]
            enc.labels = labels
        encoded.append(enc)
    return encoded


def _targets(enc: Encoded) -> list[int]:
    if enc.labels is None:
        raise ValueError("an example encoded without labels: encode(..., with_labels=True) to train on it")
    return enc.labels


def _multi_hot(enc: Encoded) -> list[float]:
    if enc.multi_hot is None:
        raise ValueError("an example encoded without labels: encode(..., with_labels=True) to train on it")
    return enc.multi_hot


def collate(
    batch: Sequence[Encoded], schema: LabelSchema, pad_id: int, device: torch.device, with_labels: bool = False
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example, on `device`; `labels` with targets."""
    out = pad_and_mask([e.input_ids for e in batch], pad_id)
    if with_labels:
        if schema.task_type is TaskType.TAGGING:
            out["labels"] = pad_rows([_targets(e) for e in batch], IGNORE_INDEX)
        elif schema.multi_label:
            out["labels"] = torch.tensor([_multi_hot(e) for e in batch], dtype=torch.float)
        else:
            out["labels"] = torch.tensor([_targets(e)[0] for e in batch], dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}


def batch_positions(encoded: Sequence[Encoded], batch_size: int, sort_by_length: bool = True) -> Iterator[IndexArray]:
    """Positions in `encoded` of each inference batch; sorted by length, padding stays small."""
    order: IndexArray
    if sort_by_length:
        order = np.argsort([len(e.input_ids) for e in encoded], kind="stable")
    else:
        order = np.arange(len(encoded))
    for b in range(0, len(order), batch_size):
        yield order[b : b + batch_size]


def pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` right-padded to `width` sub-tokens."""
    extra = width - batch["input_ids"].shape[1]
    ids = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id)
    mask = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
    return {"input_ids": ids, "attention_mask": mask}


def word_probs(token_probs: FloatArray, enc: Encoded, n_words: int) -> NDArray[np.float32]:
    """Per-word tag probabilities read at each word's first sub-token. Words cut off by
    truncation get a certain 'O': no prediction for them rather than a guess."""
    out = np.zeros((n_words, token_probs.shape[-1]), dtype=np.float32)
    out[:, 0] = 1.0
    kept = min(len(enc.word_starts), n_words)
    if kept:
        out[:kept] = token_probs[enc.word_starts[:kept]]
    return out


def shape_bits(batch: Sequence[Encoded], width: int) -> torch.Tensor:
    """(batch, width, len(SHAPE_BITS)) float 0/1: each kept word's shape bits at its first
    sub-token, zeros elsewhere (positions no tag is trained or read at)."""
    out = np.zeros((len(batch), width, len(SHAPE_BITS)), np.float32)
    for row, enc in enumerate(batch):
        if enc.word_starts:
            out[row, enc.word_starts] = unpack_shapes(np.asarray(enc.word_shapes, np.uint8))
    return torch.from_numpy(out)

