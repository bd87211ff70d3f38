"""Per-word features for tagging's fast path: the frozen encoder's sub-token vectors pooled per
word, plus word-shape bits.

The encoder runs once over the pool (sentences as word lists, `is_split_into_words=True`); each
word's vector is the mean of its sub-tokens' last hidden states, L2-normalised, kept as float16.
The packaged encoder (all-MiniLM-L6-v2) is uncased, so capitalisation, the strongest cue for names,
reaches the head only through the shape bits (`SHAPE_BITS`, one uint8 per word).

A pool is one `WordFeatures`: a flat (total words, dim) float16 matrix, the shape byte per word and
sentence offsets, no per-sentence arrays. At dim 384 that is 769 bytes a word: ~15 KB a sentence at
WNUT-16's 19.4 words, ~1.5 GB for 100k sentences. `projection_dim=128` (a seeded random orthogonal
projection, data-independent, so chunks encoded apart stay comparable) brings that to ~5 KB a
sentence, ~0.5 GB at 100k.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from backend.engine.callbacks import Progress
from backend.engine.device import autocast
from backend.engine.models.training import pad_and_mask
from backend.engine.proxy import FEATURE_DTYPE, FeatureEncoder
from backend.engine.types import IndexArray

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]

# one bit each, in this order (bit i = 1 << i)
SHAPE_BITS = ("capitalised", "all_caps", "has_digit", "punctuation_only", "sentence_initial",
              "inner_capitals")
PROJECTION_SEED = 0  # fixed: every chunk of a pool (and every process) projects the same way


def word_shape(word: str, initial: bool) -> int:
    """The shape byte of one word (`SHAPE_BITS`)."""
    letters = [ch for ch in word if ch.isalpha()]
    capitalised = bool(word) and word[0].isupper()
    all_caps = len(letters) > 1 and all(ch.isupper() for ch in letters)
    bits = (capitalised, all_caps, any(ch.isdigit() for ch in word),
            bool(word) and not any(ch.isalnum() for ch in word), initial,
            not all_caps and any(ch.isupper() for ch in word[1:]))
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def sentence_shapes(words: Sequence[str]) -> U8:
    """(len(words),) shape bytes of a sentence's words."""
    return np.array([word_shape(w, i == 0) for i, w in enumerate(words)], dtype=np.uint8)


def unpack_shapes(shapes: U8) -> F32:
    """(words, len(SHAPE_BITS)) 0/1 float32 columns of shape bytes."""
    bits = np.arange(len(SHAPE_BITS), dtype=np.uint8)
    return ((np.asarray(shapes, np.uint8)[:, None] >> bits) & 1).astype(np.float32)


def offsets_of(lengths: Sequence[int] | IndexArray) -> I64:
    """Sentence offsets (n + 1,) into the flat word rows, from word counts."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(np.asarray(lengths, np.int64), out=out[1:])
    return out


def ragged_rows(offsets: I64, rows: IndexArray) -> tuple[I64, I64]:
    """(flat word rows of sentences `rows`, in that order; the new offsets)."""
    rows = np.asarray(rows, np.int64)
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    new_offsets = offsets_of(lengths)
    # word j of the result belongs to sentence k = searchsorted; its row is starts[k] + (j - new_offsets[k])
    owner = np.repeat(np.arange(len(rows)), lengths)
    flat = np.arange(int(new_offsets[-1]), dtype=np.int64) - new_offsets[owner] + starts[owner]
    return flat, new_offsets


@dataclass(frozen=True)
class WordFeatures:
    """A pool's word features: `matrix` (total words, dim) float16, `shapes` (total words,) uint8,
    `offsets` (sentences + 1,) int64 (sentence i's words are rows offsets[i]:offsets[i + 1]).
    Words the encoder never saw (past its max length, or no sub-tokens) have all-zero vectors."""

    matrix: NDArray[np.float16]
    shapes: U8
    offsets: I64

    def __post_init__(self) -> None:
        if len(self.matrix) != len(self.shapes) or int(self.offsets[-1]) != len(self.matrix):
            raise ValueError(f"{len(self.matrix)} word rows, {len(self.shapes)} shapes, "
                             f"offsets ending at {int(self.offsets[-1])}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> I64:
        """Words per sentence."""
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.shapes.nbytes + self.offsets.nbytes)

    def sentence(self, i: int) -> tuple[NDArray[np.float16], U8]:
        """(vectors, shape bytes) of sentence `i`: views, not copies."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.matrix[start:end], self.shapes[start:end]

    def word_rows(self, rows: IndexArray) -> I64:
        """The flat word rows of sentences `rows`, in that order."""
        return ragged_rows(self.offsets, rows)[0]

    def take(self, rows: IndexArray) -> WordFeatures:
        """The features of sentences `rows` only (copies), in that order."""
        flat, offsets = ragged_rows(self.offsets, rows)
        return WordFeatures(self.matrix[flat], self.shapes[flat], offsets)

    @classmethod
    def empty(cls, dim: int) -> WordFeatures:
        return cls(np.zeros((0, dim), FEATURE_DTYPE), np.zeros(0, np.uint8), np.zeros(1, np.int64))

    @classmethod
    def concat(cls, parts: Sequence[WordFeatures]) -> WordFeatures:
        """One pool from chunks, sentences in order (the chunk jobs' outputs)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(np.concatenate([p.matrix for p in parts]), np.concatenate([p.shapes for p in parts]),
                   offsets_of(lengths))


def random_projection(dim: int, out_dim: int, seed: int = PROJECTION_SEED) -> F32:
    """(dim, out_dim) orthonormal columns from a seeded Gaussian (QR): the same for a given seed."""
    if not 0 < out_dim <= dim:
        raise ValueError(f"projection to {out_dim} dims from {dim}")
    gaussian = np.random.default_rng(seed).standard_normal((dim, out_dim))
    q, _ = np.linalg.qr(gaussian)
    return np.ascontiguousarray(q, np.float32)


class WordEncoder:
    """Per-word features from a frozen encoder (`FeatureEncoder` loads the model and tokenizer;
    it must be a fast tokenizer, for `word_ids`). `projection_dim` stores a random orthogonal
    projection of each word vector (re-normalised) instead of the full width."""

    def __init__(self, encoder: FeatureEncoder, projection_dim: int | None = None) -> None:
        self.encoder = encoder
        self.projection_dim = projection_dim
        self._projection: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.projection_dim or self.encoder.dim

    def _project(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.projection_dim is None:
            return vectors
        if self._projection is None:
            matrix = random_projection(self.encoder.dim, self.projection_dim)
            self._projection = torch.from_numpy(matrix).to(vectors.device)
        return torch.nn.functional.normalize(vectors @ self._projection, dim=-1)

    def encode(self, sentences: Sequence[Sequence[str]], progress: Progress | None = None) -> WordFeatures:
        """The word features of `sentences` (lists of words), in input order: the encoder's batches
        go shortest first, padded per batch, under `torch.inference_mode()`."""
        lengths = np.array([len(s) for s in sentences], np.int64)
        offsets = offsets_of(lengths)
        matrix = np.zeros((int(offsets[-1]), self.dim), FEATURE_DTYPE)
        shapes = np.concatenate([sentence_shapes(s) for s in sentences]) if len(matrix) else np.zeros(0, np.uint8)
        ids, word_ids = self._tokenize(sentences)
        order = [i for i in np.argsort([len(r) for r in ids], kind="stable") if lengths[i] > 0]
        batch_size = self.encoder.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                pooled = self._pool_batch([ids[i] for i in rows], [word_ids[i] for i in rows],
                                          lengths[rows])
                matrix[ragged_rows(offsets, np.asarray(rows, np.int64))[0]] = pooled
                if progress:
                    progress(min(start + batch_size, len(order)), len(order))
        return WordFeatures(matrix, shapes, offsets)

    def _tokenize(self, sentences: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[list[int]]]:
        """(input ids, word index per token, -1 for special tokens) of each sentence."""
        tokenizer = self.encoder.tokenizer
        ids: list[list[int]] = [[] for _ in sentences]
        word_ids: list[list[int]] = [[] for _ in sentences]
        present = [i for i, s in enumerate(sentences) if len(s)]
        if not present:
            return ids, word_ids
        encoded = tokenizer([list(sentences[i]) for i in present], is_split_into_words=True,
                            truncation=True, max_length=self.encoder.max_length)
        for k, i in enumerate(present):
            ids[i] = list(encoded["input_ids"][k])
            word_ids[i] = [-1 if w is None else int(w) for w in encoded.word_ids(k)]
        return ids, word_ids

    def _pool_batch(self, ids: list[list[int]], word_ids: list[list[int]], lengths: I64) -> NDArray[np.float16]:
        """(words of the batch, dim) float16: the mean of each word's sub-token states, normalised."""
        device = self.encoder.device
        pad = self.encoder.tokenizer.pad_token_id or 0
        batch = {k: v.to(device) for k, v in pad_and_mask(ids, pad).items()}
        with autocast(device):
            hidden = self.encoder.model(**batch).last_hidden_state
        hidden = hidden.float()
        width = hidden.shape[1]
        base = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # the batch's first word row per sentence
        target = np.full((len(ids), width), -1, np.int64)  # batch word row of each token, -1: none
        for r, row in enumerate(word_ids):
            w = np.asarray(row, np.int64)
            target[r, : len(w)] = np.where(w >= 0, w + base[r], -1)
        flat_target = torch.from_numpy(target.reshape(-1)).to(device)
        keep = flat_target >= 0
        total = int(lengths.sum())
        sums = torch.zeros((total, hidden.shape[2]), dtype=torch.float32, device=device)
        sums.index_add_(0, flat_target[keep], hidden.reshape(-1, hidden.shape[2])[keep])
        counts = torch.zeros(total, dtype=torch.float32, device=device)
        counts.index_add_(0, flat_target[keep], torch.ones_like(flat_target[keep], dtype=torch.float32))
        vectors = torch.nn.functional.normalize(sums / counts.clamp(min=1.0)[:, None], dim=-1)
        vectors = self._project(vectors)
        vectors[counts == 0] = 0.0
        return vectors.cpu().numpy().astype(FEATURE_DTYPE)
