"""Tagging in `bench-labels`: the token head's curves (random sentences, and the service's order:
the tagging cold start, then MNLP through `order_pool`), the corpora's word features and their
cache, and the spans the annotators are shown as pre-annotations."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from transformers import PreTrainedModel

from backend.engine.acquisition.cold_start import tagging_typical_order
from backend.engine.acquisition.order import ColdStart, PoolScores, order_pool
from backend.engine.acquisition.sampling import UPS
from backend.engine.io import atomic_file
from backend.engine.metrics import evaluate
from backend.engine.models.transformer import TransformerModel
from backend.engine.packaged import resolve_model
from backend.engine.proxy import FeatureEncoder
from backend.engine.token_head import UPS_MIN_WORDS, TokenHead, score_update
from backend.engine.types import (
    BoolArray,
    Example,
    IndexArray,
    Predictions,
    TaggingExample,
    TaskType,
    tagging_examples,
)
from backend.engine.word_features import WordEncoder, WordFeatures
from backend.experiments.label_efficiency.config import (
    RANDOM,
    UNCERTAINTY,
    Corpus,
    LabelEfficiencyConfig,
    LabelRecord,
    Progress,
)


def _words(examples: Sequence[Example]) -> list[list[str]]:  # tagging's proxy path
    return [list(ex.words) for ex in tagging_examples(examples)]


def _tags(examples: Sequence[Example]) -> list[list[str]]:
    return [list(ex.tags) for ex in tagging_examples(examples)]


def tokens_labeled(examples: Sequence[Example]) -> dict[str, int]:
    """{"tokens": words labeled} for tagging examples, else nothing."""
    if not examples or not isinstance(examples[0], TaggingExample):
        return {}
    return {"tokens": int(sum(len(ex.words) for ex in tagging_examples(examples)))}


def tokens_of(detail: dict[str, Any]) -> dict[str, Any]:
    return {"tokens": detail["tokens"]} if "tokens" in detail else {}


def pool_words_of(corpus: Corpus) -> WordFeatures:
    assert corpus.pool_words is not None  # encoded (`_encode_words`) before any token head reads them
    return corpus.pool_words


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


class TaggingOrder:
    """Tagging's `next_to_label`, the fast update's order as one head follows another:
    `score_update` (on pools of at least `ups_min_words` words UPS's draw re-scored over the last
    head's scores, a full re-score every `FULL_RESCORE_EVERY`-th head; below it every sentence's
    MNLP), then `order_pool`, the cold start's sentences first (`tagging_typical_order`).
    `rescored` records each head's count (None: every sentence)."""

    def __init__(self, pool_words: WordFeatures, cold_start: ColdStart, seed: int,
                 ups_min_words: int = UPS_MIN_WORDS) -> None:
        self.pool_words, self.cold_start, self.seed, self.ups_min_words = pool_words, cold_start, seed, ups_min_words
        self.sampler = UPS(full_rescore_iterations=())
        self.rescored: list[int | None] = []
        self._head: TokenHead | None = None
        self._scores: PoolScores[Any] | None = None

    def next(self, head: TokenHead | None, labeled: BoolArray, k: int) -> IndexArray:
        if head is not None and head is not self._head:  # a new head: the next fast update
            last = self._scores
            stale = None if last is None else (last.confidence, last.uncertainty)
            update = len(self.rescored)
            self._scores, rescored = score_update(head, self.pool_words, stale, update, self.sampler,
                                                  np.random.default_rng((self.seed, update)), self.ups_min_words)
            self._head = head
            self.rescored.append(rescored)
        scores = self._scores if head is not None else None
        return order_pool(scores, labeled, k, int(labeled.sum()), self.cold_start).top


def tag_predictions(head: TokenHead, features: WordFeatures) -> Predictions:
    """The head's decoded (valid IOB2) tags as one-hot rows per word, so `evaluate`'s argmax reads
    exactly the Viterbi path."""
    outputs = head.predict(features)
    eye = np.eye(len(outputs.names), dtype=np.float32)
    return Predictions(TaskType.TAGGING, [eye[outputs.tags[outputs.offsets[i]: outputs.offsets[i + 1]]]
                                          for i in range(len(outputs))])


def shown_spans(corpus: Corpus, head: TokenHead, rows: IndexArray) -> dict[str, float]:
    """Strict span precision and recall of the head's pre-annotations on pool sentences `rows`
    (what the annotators are shown next) against their gold spans."""
    from seqeval.metrics import precision_score, recall_score
    from seqeval.scheme import IOB2

    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return {}
    predicted = head.predict(pool_words_of(corpus).take(rows)).all_tags()
    gold = _tags([corpus.pool.examples[i] for i in rows])
    kw: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {"shown_precision": float(precision_score(gold, predicted, **kw)),
            "shown_recall": float(recall_score(gold, predicted, **kw)),
            "shown_gold_spans": int(sum(t.startswith("B-") for row in gold for t in row))}


class TaggingCurves:
    """`LabelEfficiency`'s tagging half (a mixin: it reads the runner's config, cache and grid)."""

    config: LabelEfficiencyConfig
    cache: Path | None
    progress: Progress

    def grid(self, pool_size: int) -> list[int]:
        raise NotImplementedError

    def _encode_words(self, corpus: Corpus) -> None:
        """Tagging: the pool's and test set's per-word features (`WordEncoder`), cached like the
        sentence features."""
        key = corpus.features_key = digest({
            "corpus": corpus.name, "model": resolve_model(self.config.model), "max_length": self.config.max_length,
            "words": "word_features", "pool": _words(corpus.pool.examples), "test": _words(corpus.test.examples)})
        path = self.cache / "features" / f"{safe_name(corpus.name)}-words-{key}.npz" if self.cache else None
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as a:
                corpus.pool_words = WordFeatures(a["pool_matrix"], a["pool_shapes"], a["pool_offsets"])
                corpus.test_words = WordFeatures(a["test_matrix"], a["test_shapes"], a["test_offsets"])
                corpus.encode_seconds = float(a["seconds"])
            return
        encoder = WordEncoder(FeatureEncoder(self.config.model, max_length=self.config.max_length,
                                             device=self.config.device))
        start = time.perf_counter()
        corpus.pool_words = encoder.encode(_words(corpus.pool.examples))
        corpus.test_words = encoder.encode(_words(corpus.test.examples))
        corpus.encode_seconds = time.perf_counter() - start
        self.progress(f"{corpus.name}: encoded the words of {len(corpus.pool) + len(corpus.test)} sentences "
                      f"in {corpus.encode_seconds:.0f}s")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            pool, test = corpus.pool_words, corpus.test_words
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, pool_matrix=pool.matrix, pool_shapes=pool.shapes, pool_offsets=pool.offsets,
                         test_matrix=test.matrix, test_shapes=test.shapes, test_offsets=test.offsets,
                         seconds=np.float64(corpus.encode_seconds))

    def _token_head(self, corpus: Corpus, rows: IndexArray, seed: int) -> TokenHead:
        rows = np.asarray(rows, np.int64)
        return TokenHead(corpus.pool.schema, seed).fit(pool_words_of(corpus).take(rows),
                                                       _tags([corpus.pool.examples[i] for i in rows]))

    def _aligned_tag_metrics(self, corpus: Corpus, model: TransformerModel, rows: IndexArray,
                             seed: int) -> dict[str, float]:
        """The token head on the fine-tune's own word features, fitted on its labels: what the fast
        path re-fits on once that fine-tune wins (the service's feature build runs `WordEncoder` over
        the checkpoint's encoder; here the same encoder, in memory)."""
        base = cast(PreTrainedModel, model.model.base_model)
        encoder = WordEncoder(FeatureEncoder(model.name_or_path, max_length=self.config.max_length,
                                             device=self.config.device, model=base, tokenizer=model.tokenizer))
        labeled = [corpus.pool.examples[i] for i in rows]
        head = TokenHead(corpus.pool.schema, seed).fit(encoder.encode(_words(labeled)), _tags(labeled))
        return evaluate(tag_predictions(head, encoder.encode(_words(corpus.test.examples))), corpus.test.examples,
                        corpus.pool.schema)

    def _tag_metrics(self, corpus: Corpus, head: TokenHead, rows: IndexArray | None = None) -> dict[str, float]:
        """Span F1 on the test set, or on pool sentences `rows` (hybrid's hold-out)."""
        if rows is None:
            assert corpus.test_words is not None
            return evaluate(tag_predictions(head, corpus.test_words), corpus.test.examples, corpus.pool.schema)
        rows = np.asarray(rows, np.int64)
        return evaluate(tag_predictions(head, pool_words_of(corpus).take(rows)),
                        [corpus.pool.examples[i] for i in rows], corpus.pool.schema)

    def tagging_curves(self, corpus: Corpus, seed: int,
                       permutation: IndexArray) -> tuple[list[LabelRecord], IndexArray]:
        """Tagging's proxy curves: the token head on random sentences, and on the service's order
        (`tagging_typical_order`'s sentences, then MNLP through `order_pool`), re-fitted every
        `query_batch` sentences. Each record's detail holds the words labeled (`tokens`) and, for
        the default order, the precision and recall of the spans the annotators are shown next
        (`shown_spans`: the head's pre-annotations on the next query batch)."""
        pool_words, lengths = pool_words_of(corpus), pool_words_of(corpus).lengths
        grid, records = self.grid(len(corpus.pool)), []
        for b in grid:
            start = time.perf_counter()
            random_head = self._token_head(corpus, permutation[:b], seed)
            records.append(LabelRecord(corpus.name, RANDOM, seed, b, self._tag_metrics(corpus, random_head),
                                       time.perf_counter() - start, {"tokens": int(lengths[permutation[:b]].sum())}))
        labels = self.config.tagging_cold_start_labels
        first = tagging_typical_order(pool_words, labels, seed) if labels \
            else permutation[: min(self.config.query_batch, grid[0])]
        ordering = TaggingOrder(pool_words, ColdStart(len(first), first), seed, self.config.tagging_ups_min_words)
        order: list[int] = []
        labeled = np.zeros(len(corpus.pool), dtype=bool)
        head: TokenHead | None = None
        for b in grid:
            start = time.perf_counter()
            while len(order) < b:  # one query batch (two where the cold start ends inside it)
                picked = ordering.next(head, labeled, b - len(order))
                order.extend(int(i) for i in picked)
                labeled[picked] = True
            head = self._token_head(corpus, np.array(order), seed)
            shown = shown_spans(corpus, head, ordering.next(head, labeled, self.config.query_batch))
            records.append(LabelRecord(corpus.name, UNCERTAINTY, seed, b, self._tag_metrics(corpus, head),
                                       time.perf_counter() - start, {"tokens": int(lengths[order].sum()), **shown,
                                                                     "rescored": ordering.rescored[-1]}))
        self.progress(f"{corpus.name} seed {seed}: token-head curves to {grid[-1]} sentences")
        return records, np.array(order)
