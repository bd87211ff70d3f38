"""Tagging's fast-path head: multinomial logistic regression per word over IOB2 tags, on frozen
word features (`word_features.WordFeatures`), decoded by constrained Viterbi, scored by MNLP.

Decoding never emits an invalid IOB2 sequence: I-X only after B-X or I-X (so never first), by
`iob2.viterbi_iob2` (constraint-only transitions, O(tags) per word).

A sentence's uncertainty is MNLP, the mean negative log-probability of its decoded tags
(DESIGN §2); its confidence exp(-MNLP). Sentences without words are `empty`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from backend.engine.acquisition.order import PoolScores
from backend.engine.acquisition.sampling import PoolSampler
from backend.engine.device import HALF_PRODUCT_CHUNK, fastest_half_product, half_product
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.iob2 import is_valid_iob2 as is_valid_iob2  # re-exported: its home before iob2
from backend.engine.iob2 import viterbi_iob2
from backend.engine.metrics import strict_span_f1
from backend.engine.types import FloatArray, IndexArray, LabelSchema, TaskType
from backend.engine.word_features import SHAPE_BITS, WordFeatures, ragged_rows, unpack_shapes

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]

# sklearn's C (inverse L2 strength) on unit-norm word vectors. Unlike the sentence proxy's
# schedule (C = 1000 / n within 1..100), one value: on WNUT-16 (random sentences, 3 seeds, class
# balance 0.5) span F1 was flat from C = 30 to 100 at 20-200 sentences, while C <= 10 left the head
# predicting almost all O below 100 sentences (0.004 / 0.03 / 0.03 at 20 / 50 / 100 with C 5 / 2 / 1).
DEFAULT_C = 30.0
# class weighting (see `TokenHead`): measured on WNUT-16 (C 30-100, 3 seeds) 0 left the rare tags
# unpredicted at 20-50 sentences (0.04-0.05 / 0.14-0.15), 1 ("balanced") led there (0.09 / 0.21)
# but over-predicted entities by 200 (0.25-0.26); 0.5 held up at both ends (0.07 / 0.20 / 0.25 / 0.29).
BALANCE = 0.5
SHAPE_SCALE = 1.0  # the shape columns' value when set (word vectors are unit-norm)
SCORE_CHUNK_WORDS = HALF_PRODUCT_CHUNK  # word rows multiplied at a time when scoring (cache-sized temporaries)
UNSEEN_BIAS = -10.0  # the intercept of tags no label has shown: never predicted, little mass
CV_FOLDS = 5  # sentence folds of the span-F1 estimate
MIN_CV_SENTENCES = 10  # fewer labeled sentences: no estimate (a fold would hold one or two)
# UPS in the fast update (`rows_to_rescore`): pools of at least this many words re-score a subsample
# (about 0.3 s of scoring on 2 cores below it), and every this-many-th update the whole pool.
UPS_MIN_WORDS = 400_000
FULL_RESCORE_EVERY = 10


# ------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class TagOutputs:
    """Decoded sentences: `tags` (words,) tag indices (valid IOB2) and `tag_probs` (words,) float16
    the probability the head gave each decoded tag, flat with `offsets` (sentences + 1,); `names`
    the tags (`LabelSchema.output_names`)."""

    tags: NDArray[np.int16]
    tag_probs: NDArray[np.float16]
    offsets: I64
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: IndexArray) -> TagOutputs:
        """The outputs of sentences `rows` only, in that order."""
        flat, offsets = ragged_rows(self.offsets, rows)
        return TagOutputs(self.tags[flat], self.tag_probs[flat], offsets, self.names)

    def sentence(self, i: int) -> tuple[NDArray[np.int16], NDArray[np.float16]]:
        """(tag indices, their probabilities) of sentence `i`."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tags[start:end], self.tag_probs[start:end]

    def sentence_tags(self, i: int) -> list[str]:
        """The decoded IOB2 tags of sentence `i`."""
        return [self.names[t] for t in self.tags[self.offsets[i] : self.offsets[i + 1]]]

    def all_tags(self) -> list[list[str]]:
        return [self.sentence_tags(i) for i in range(len(self))]


def decode(log_probs: F32, offsets: I64, names: tuple[str, ...]) -> TagOutputs:
    """Constrained Viterbi over per-word log-probabilities, with each decoded tag's probability."""
    tags = viterbi_iob2(log_probs, offsets)
    picked = np.exp(log_probs[np.arange(len(tags)), tags]) if len(tags) else np.zeros(0, np.float32)
    return TagOutputs(tags.astype(np.int16), picked.astype(np.float16), offsets, names)


# --------------------------------------------------------------------------------------- head
@dataclass(frozen=True)
class TagEstimate:
    """The head's strict span F1 measured by cross-validation over labeled sentences (each fold's
    sentences predicted by a head fitted on the others, spans pooled over folds, as seqeval does)."""

    f1: float | None  # None: too few labeled sentences to cross-validate
    folds: int
    sentences: int

    def to_dict(self) -> dict[str, Any]:
        return {"cv_span_f1": self.f1, "folds": self.folds, "sentences": self.sentences}


class TokenHead:
    """Multinomial logistic regression per word over the schema's IOB2 tags, on the word vector
    plus (with `shape_bits`) the shape columns. Each seen tag's words weigh
    (words / (tags seen * its words)) ** `balance`: 0 unweighted, 1 sklearn's "balanced"."""

    def __init__(self, schema: LabelSchema, seed: int = 0, *, shape_bits: bool = True,
                 balance: float = BALANCE) -> None:
        if schema.task_type is not TaskType.TAGGING:
            raise ValueError("the token head tags words; classification uses the proxy head")
        self.schema = schema
        self.seed = seed
        self.shape_bits = shape_bits
        self.balance = balance
        self.coef: F32 | None = None  # (tags, dim + shape columns)
        self.intercept: F32 | None = None  # (tags,)

    @property
    def names(self) -> tuple[str, ...]:
        return self.schema.output_names

    def targets(self, tags: Sequence[Sequence[str]]) -> I64:
        """Flat tag indices of the labeled sentences' words."""
        index = {name: i for i, name in enumerate(self.names)}
        unknown = sorted({t for row in tags for t in row if t not in index})
        if unknown:
            raise ValueError(f"tags outside the schema: {unknown[:5]}")
        return np.array([index[t] for row in tags for t in row], np.int64)

    def inputs(self, features: WordFeatures, rows: I64) -> F32:
        """(len(rows), columns) float32 design matrix of flat word `rows`."""
        x = features.matrix[rows].astype(np.float32)
        if not self.shape_bits:
            return x
        return np.concatenate([x, unpack_shapes(features.shapes[rows]) * SHAPE_SCALE], axis=1)

    def fit(self, features: WordFeatures, tags: Sequence[Sequence[str]], c: float | None = None) -> TokenHead:
        """Fit on labeled sentences: `features` holds them (one sentence per `tags` row, same word
        counts). C defaults to `DEFAULT_C`. Raises `NotEnoughLabelsError`
        without labeled words."""
        if len(features) != len(tags) or [len(t) for t in tags] != features.lengths.tolist():
            raise ValueError("features and tags differ in sentences or words")
        y = self.targets(tags)
        if len(y) == 0:
            raise NotEnoughLabelsError("no labeled words to fit the token head on")
        x = self.inputs(features, np.arange(len(y), dtype=np.int64))
        c = DEFAULT_C if c is None else float(c)
        with threadpool_limits(limits=1):  # a few thousand rows: more BLAS threads only contend
            self.coef, self.intercept = self._fit_arrays(x, y, c)
        return self

    def _fit_arrays(self, x: F32, y: I64, c: float) -> tuple[F32, F32]:
        n_tags = len(self.names)
        coef, intercept = np.zeros((n_tags, x.shape[1]), np.float32), np.full(n_tags, UNSEEN_BIAS, np.float32)
        classes = np.unique(y)
        if len(classes) == 1:  # one tag seen (all O): a constant prediction for it
            intercept[classes[0]] = -UNSEEN_BIAS
            return coef, intercept
        from sklearn.linear_model import LogisticRegression

        counts = np.bincount(y, minlength=n_tags)[classes]
        weights = (len(y) / (len(classes) * counts)) ** self.balance
        lr = LogisticRegression(C=c, max_iter=300, random_state=self.seed,
                                class_weight={int(k): float(w) for k, w in zip(classes, weights, strict=True)})
        lr.fit(x, y)
        if len(classes) == 2:  # sklearn's binary form: one row for the second class
            a, b = int(classes[0]), int(classes[1])
            coef[b], intercept[b] = lr.coef_[0] / 2, lr.intercept_[0] / 2
            coef[a], intercept[a] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
        else:
            coef[classes], intercept[classes] = lr.coef_, lr.intercept_
        return coef, intercept

    def log_proba(self, features: WordFeatures, product_dtype: torch.dtype | None = None) -> F32:
        """(words, tags) float32 log-probabilities of every word, a cache-sized chunk at a time
        (the product of the float16 features, the shape columns' contribution looked up by shape
        byte, log-softmax); `product_dtype` overrides the CPU's fastest (`fastest_half_product`)."""
        if self.coef is None or self.intercept is None:
            raise RuntimeError("the token head is not fitted")
        dim = features.dim
        weight = np.ascontiguousarray(self.coef[:, :dim].T, np.float32)
        # the bias of each of the 2^bits shape bytes: intercept plus the set columns' weights
        by_shape = np.broadcast_to(self.intercept, (1 << len(SHAPE_BITS), len(self.names))).copy()
        if self.shape_bits:
            by_shape += unpack_shapes(np.arange(1 << len(SHAPE_BITS), dtype=np.uint8)) @ self.coef[:, dim:].T
        out = np.empty((len(features.matrix), len(self.names)), np.float32)
        # in the CPU's fastest dtype for float16 rows, float32 accumulation: ~10x numpy's float16 ->
        # float32 copy and product (2M words x 384 in 0.35 s on 2 cores with float16 arithmetic),
        # logits within ~2e-2; a few thousand rows at a time (`HALF_PRODUCT_CHUNK`)
        dtype = product_dtype or fastest_half_product(dim, len(self.names), torch.get_num_threads())
        weight_t = torch.from_numpy(weight).to(dtype)
        bias = torch.from_numpy(np.ascontiguousarray(by_shape, np.float32))
        with torch.inference_mode():
            for start in range(0, len(out), SCORE_CHUNK_WORDS):
                rows = features.matrix[start : start + SCORE_CHUNK_WORDS]
                logits = out[start : start + len(rows)]
                product = half_product(torch.from_numpy(rows), weight_t)
                product += bias[torch.from_numpy(features.shapes[start : start + len(rows)]).long()]
                torch.log_softmax(product, dim=1, out=torch.from_numpy(logits))
        return out

    def cross_validate(self, features: WordFeatures, tags: Sequence[Sequence[str]],
                       folds: int = CV_FOLDS) -> TagEstimate:
        """Strict span F1 of this configuration over `folds` sentence folds (seeded); the fitted
        weights are left as they were."""
        n = len(tags)
        folds = min(folds, n)
        if n < MIN_CV_SENTENCES or folds < 2:
            return TagEstimate(None, 0, n)
        assignment = np.random.default_rng(self.seed).permutation(n) % folds
        predicted: list[list[str]] = [[] for _ in range(n)]
        for fold in range(folds):
            test, train = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
            head = TokenHead(self.schema, self.seed, shape_bits=self.shape_bits, balance=self.balance)
            try:
                head.fit(features.take(train), [tags[i] for i in train])
            except NotEnoughLabelsError:
                return TagEstimate(None, 0, n)
            out = head.predict(features.take(test))
            for k, i in enumerate(test):
                predicted[int(i)] = out.sentence_tags(k)
        return TagEstimate(round(strict_span_f1(tags, predicted), 4), folds, n)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """`token_head.npz` + `token_head.json` (no pickle)."""
        if self.coef is None or self.intercept is None:
            raise RuntimeError("the token head is not fitted")
        path = Path(directory)
        np.savez(path / "token_head.npz", coef=self.coef, intercept=self.intercept)
        meta = {"schema": self.schema.to_dict(), "seed": self.seed, "shape_bits": self.shape_bits,
                "balance": self.balance}
        (path / "token_head.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TokenHead:
        path = Path(directory)
        meta = json.loads((path / "token_head.json").read_text())
        head = cls(LabelSchema.from_dict(meta["schema"]), int(meta.get("seed", 0)),
                   shape_bits=bool(meta.get("shape_bits", True)), balance=float(meta.get("balance", BALANCE)))
        with np.load(path / "token_head.npz", allow_pickle=False) as arrays:
            head.coef, head.intercept = arrays["coef"], arrays["intercept"]
        return head

    def predict(self, features: WordFeatures) -> TagOutputs:
        """The decoded (valid IOB2) tags of every sentence and their probabilities."""
        return decode(self.log_proba(features), features.offsets, self.names)


def mnlp(log_probs: F32, tags: IndexArray, offsets: I64) -> F32:
    """Per sentence, the mean negative log-probability of its decoded tags (0 without words)."""
    picked = -log_probs[np.arange(len(tags)), np.asarray(tags, np.int64)]
    sums = np.concatenate([[0.0], np.cumsum(picked, dtype=np.float64)])
    lengths = np.diff(offsets)
    means: F32 = ((sums[offsets[1:]] - sums[offsets[:-1]]) / np.maximum(lengths, 1)).astype(np.float32)
    return means


@dataclass(frozen=True)
class HeadTags:
    """A scored pool's outputs (`RowOutputs`): the head and the sentences' word features, decoded
    (log-probabilities, then constrained Viterbi) only for the sentences taken, since decoding a
    whole 100k-sentence pool costs seconds and a UPS re-score (`TokenScorer.rescore`) holds fresh
    log-probabilities for a subsample only."""

    head: TokenHead
    features: WordFeatures

    def __len__(self) -> int:
        return len(self.features)

    def take(self, rows: IndexArray) -> HeadTags:
        return HeadTags(self.head, self.features.take(np.asarray(rows, np.int64)))

    def decode(self) -> TagOutputs:
        return self.head.predict(self.features)


@dataclass(frozen=True)
class TokenScorer:
    """Tagging's `PoolScorer`: a fitted `TokenHead` over a pool's `WordFeatures`. Uncertainty is
    MNLP of each word's most probable tag (the unconstrained best path: the constrained Viterbi
    path can only be less probable, and only where the best path breaks IOB2), confidence
    exp(-MNLP); sentences without words are empty (confidence 1, uncertainty 0). The outputs are
    decoded for the sentences that are shown (`HeadTags`)."""

    head: TokenHead

    def score_pool(self, features: WordFeatures) -> PoolScores[HeadTags]:
        log_probs = self.head.log_proba(features)
        uncertainty = mnlp(log_probs, log_probs.argmax(axis=1), features.offsets)
        empty = features.lengths == 0
        uncertainty[empty] = 0.0
        confidence = np.exp(-uncertainty).astype(np.float32)
        return PoolScores(confidence, uncertainty, empty, HeadTags(self.head, features))

    def rescore(self, features: WordFeatures, rows: IndexArray, stale_confidence: FloatArray,
                stale_uncertainty: FloatArray) -> PoolScores[HeadTags]:
        """UPS: fresh scores for the sentences `rows`, the stale ones (an earlier head's, one per
        sentence of `features`) for the rest."""
        rows = np.asarray(rows, np.int64)
        fresh = self.score_pool(features.take(rows))
        confidence = np.array(stale_confidence, np.float32)
        uncertainty = np.array(stale_uncertainty, np.float32)
        confidence[rows], uncertainty[rows] = fresh.confidence, fresh.uncertainty
        empty = features.lengths == 0
        confidence[empty], uncertainty[empty] = 1.0, 0.0
        return PoolScores(confidence, uncertainty, empty, HeadTags(self.head, features))


def rows_to_rescore(features: WordFeatures, stale_uncertainty: FloatArray | None, update: int,
                    sampler: PoolSampler, rng: np.random.Generator,
                    min_words: int | None = None) -> IndexArray | None:
    """The sentences a fast update re-scores: None (every one) below `min_words` words (default
    `UPS_MIN_WORDS`, read when called), without an earlier version's scores or every
    `FULL_RESCORE_EVERY`-th update; else `sampler`'s draw over the stale uncertainties (NaN: never
    scored, always drawn). Measured on 100k synthetic sentences (1.95M words, 1 thread, AMD EPYC):
    scoring every word 0.75-0.78 s, UPS's draw 0.08-0.09 s."""
    threshold = UPS_MIN_WORDS if min_words is None else min_words
    if stale_uncertainty is None or int(features.offsets[-1]) < threshold or update % FULL_RESCORE_EVERY == 0:
        return None
    if np.isnan(np.asarray(stale_uncertainty, np.float64)).all():
        return None
    return np.flatnonzero(sampler.select(stale_uncertainty, iteration=-1, rng=rng))


def score_update(head: TokenHead, features: WordFeatures, stale: tuple[FloatArray, FloatArray] | None, update: int,
                 sampler: PoolSampler, rng: np.random.Generator,
                 min_words: int | None = None) -> tuple[PoolScores[HeadTags], int | None]:
    """A fast update's pool scores: `rows_to_rescore`'s UPS draw re-scored over the `stale`
    (confidence, uncertainty) of the last version, or every sentence. Returns the scores and how
    many sentences UPS re-scored (None: every one). The service, the compute benchmark and
    bench-labels' tagging order call it."""
    scorer = TokenScorer(head)
    rows = rows_to_rescore(features, None if stale is None else stale[1], update, sampler, rng, min_words)
    if rows is None or stale is None:
        return scorer.score_pool(features), None
    return scorer.rescore(features, rows, *stale), len(rows)
