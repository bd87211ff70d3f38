"""IOB2 decoding: the most probable valid tag sequence of each sentence (I-X only after B-X or
I-X, so never first) from per-word tag probabilities, by constrained Viterbi.

The transitions are constraints only (allowed or not), so Viterbi maximises the sum of the words'
log-probabilities over valid sequences, and a step costs O(tags) per word, not O(tags²): O and B-X
follow any tag (the previous best), I-X follows the better of B-X and I-X. Every tagger's output
goes through it (the token head's, a fine-tune's, `metrics.decode_tags`), where an argmax per word
could emit an I-X that no B-X opens.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
MIN_PROB = 1e-30  # probabilities are floored here before their log (a tag given 0 stays possible)


def _layout(n_tags: int) -> tuple[I64, I64]:
    """(B indices, I indices) of `LabelSchema.output_names`' layout: O, B-X1, I-X1, B-X2, ..."""
    if n_tags < 1 or n_tags % 2 == 0:
        raise ValueError(f"{n_tags} tags is not O plus B/I pairs")
    return np.arange(1, n_tags, 2, dtype=np.int64), np.arange(2, n_tags, 2, dtype=np.int64)


def _forward(log_probs: F32, offsets: I64, order: I64, lengths: I64) -> tuple[I64, NDArray[np.bool_], I64]:
    """Viterbi's forward pass: (best previous tag per word for O/B targets, per word and label
    whether I-X came from B-X, the final tag of each sentence)."""
    n_tags = log_probs.shape[1]
    b_idx, i_idx = _layout(n_tags)
    best_prev = np.zeros(len(log_probs), np.int64)
    from_b = np.zeros((len(log_probs), len(b_idx)), bool)
    final = np.zeros(len(lengths), np.int64)
    score: F32 = np.zeros((0, n_tags), np.float32)
    for t in range(int(lengths.max(initial=0))):
        n = int(np.count_nonzero(lengths > t))  # `order` is longest first: the active prefix
        rows = offsets[order[:n]] + t
        emit = log_probs[rows]
        if t == 0:
            score = emit
            score[:, i_idx] = -np.inf
        else:
            prev = score[:n]
            best_prev[rows] = prev.argmax(axis=1)
            from_b[rows] = prev[:, b_idx] >= prev[:, i_idx]
            new = emit + prev.max(axis=1, keepdims=True)
            new[:, i_idx] = emit[:, i_idx] + np.maximum(prev[:, b_idx], prev[:, i_idx])
            score = new
        ending = lengths[order[:n]] == t + 1
        final[order[:n][ending]] = score[ending].argmax(axis=1)
    return best_prev, from_b, final


def viterbi_iob2(log_probs: F32, offsets: I64) -> I64:
    """The most probable valid IOB2 tag sequence of each sentence, as flat (words,) tag indices
    into `LabelSchema.output_names` (O, B-X1, I-X1, ...), given per-word log-probabilities
    (words, tags) and sentence offsets."""
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    best_prev, from_b, final = _forward(np.asarray(log_probs, np.float32), offsets, order, lengths)
    tags = np.zeros(len(log_probs), np.int64)
    current = final[order].copy()  # per sentence (longest first): the tag at the position being read
    for t in range(int(lengths.max(initial=0)) - 1, -1, -1):
        n = int(np.count_nonzero(lengths > t))
        rows = offsets[order[:n]] + t
        cur = current[:n]
        tags[rows] = cur
        if t:
            is_inside = (cur > 0) & (cur % 2 == 0)
            label = np.maximum(cur - 1, 0) // 2
            came_from_b = from_b[rows, label]
            current[:n] = np.where(is_inside, np.where(came_from_b, 2 * label + 1, 2 * label + 2), best_prev[rows])
    return tags


def is_valid_iob2(tags: Sequence[str]) -> bool:
    """True when every I-X follows B-X or I-X."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def _offsets(lengths: Sequence[int]) -> I64:
    """(sentences + 1,) start of each sentence in the flat word rows."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def iob2_tags(probs: Sequence[NDArray[np.floating]], names: Sequence[str]) -> list[list[str]]:
    """The most probable valid IOB2 tag sequence of each sentence from its (words, tags) tag
    probabilities (columns = `LabelSchema.output_names`): `viterbi_iob2` over their logs."""
    offsets = _offsets([len(p) for p in probs])
    if not offsets[-1]:
        return [[] for _ in probs]
    flat = np.concatenate([np.asarray(p, np.float32) for p in probs if len(p)])
    tags = viterbi_iob2(np.log(np.maximum(flat, np.float32(MIN_PROB))), offsets)
    return [[names[t] for t in tags[offsets[i] : offsets[i + 1]]] for i in range(len(probs))]
