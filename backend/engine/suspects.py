"""Labels worth a second look: the given label is improbable to a head that never saw it.

Out-of-fold class probabilities of the proxy head (stratified k-fold; each labeled text is scored by
a head fitted on the other folds, at the C the head uses for all the labels, `default_c`), then a
confident-learning rule (Northcutt et al. 2021): class j's threshold t_j is the mean out-of-fold
probability of j over the texts labeled j; a text labeled g is suspect when some other class j
reaches both its threshold t_j and the floor `min_confidence`, and beats g; the most probable such j
is the suggestion. Suspects come most suspicious first (largest gap between the suggested class's
probability and the given label's). A class with a single label gives no out-of-fold evidence
about itself: its label is never flagged.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from backend.engine.proxy import MAX_CV_FOLDS, ProxyHead, default_c
from backend.engine.types import FloatArray, IndexArray, LabelSchema

# the suggested class's out-of-fold probability must reach this too (bench-pm-signals, tuning corpora, 5%
# of labels flipped): 0.6 and 0.7 had the best F1 of the flags at 100 and 300 labels; 0.7 flags half as
# many texts as 0.6, 20-26% of them flipped (0 alone: 4-8x as many flags, 11-12% flipped)
MIN_CONFIDENCE = 0.7


@dataclass(frozen=True)
class Suspect:
    """Labeled row `index` (position in the labels given) holds `given`; a head that did not see it
    says `predicted` with probability `confidence` and gives `given` only `given_probability`."""

    index: int
    given: str
    predicted: str
    confidence: float
    given_probability: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def out_of_fold_probabilities(features: FloatArray, labels: Sequence[Sequence[str]], schema: LabelSchema,
                              seed: int = 0, folds: int = MAX_CV_FOLDS) -> FloatArray:
    """(n, classes) probabilities of each labeled row from a `ProxyHead` fitted on the other folds
    (stratified, seeded; k = the smallest class count of at least 2, at most `folds`). Single-label
    classification only."""
    if schema.multi_label:
        raise ValueError("suspect labels are found for single-label classification only")
    head = ProxyHead(schema, seed)
    x, y = np.asarray(features, np.float32), head.targets(labels)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows for {len(y)} labels")
    counts = np.bincount(y, minlength=len(schema.labels))
    paired = counts[counts >= 2]
    k = int(min(folds, paired.min())) if len(paired) else 0
    if k < 2 or len(np.unique(y)) < 2:  # nothing to validate against: every row says its own label
        return np.eye(len(schema.labels), dtype=np.float32)[y]
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros((len(y), len(schema.labels)), np.float32)
    c = default_c(len(y))
    names = [tuple(row) for row in labels]
    with warnings.catch_warnings():  # singleton classes: "the least populated class has 1 member"
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    for train, test in splits:
        fold = ProxyHead(schema, seed).fit(x[train], [names[i] for i in train], c=c, estimate=False)
        out[test] = fold.predict_proba(x[test])
    return out


def flag_suspects(probabilities: FloatArray, given: IndexArray, class_names: Sequence[str],
                  min_confidence: float = MIN_CONFIDENCE) -> list[Suspect]:
    """The confident-learning rule over out-of-fold `probabilities` (n, classes) and the given class
    indices: suspects, most suspicious first."""
    probs = np.asarray(probabilities, np.float64)
    given = np.asarray(given, np.int64)
    n_classes = probs.shape[1]
    counts = np.bincount(given, minlength=n_classes)
    thresholds = np.array([probs[given == j, j].mean() if counts[j] else 1.0 for j in range(n_classes)])
    rows = np.arange(len(given))
    reach = (probs >= np.maximum(thresholds, min_confidence)) & (probs > probs[rows, given][:, None])
    reach[rows, given] = False
    reach[counts[given] < 2] = False  # a class's only label: no out-of-fold evidence about the class
    masked = np.where(reach, probs, -1.0)
    suggested = masked.argmax(axis=1)
    flagged = np.flatnonzero(reach.any(axis=1))
    gap = probs[flagged, suggested[flagged]] - probs[flagged, given[flagged]]
    order = flagged[np.argsort(-gap, kind="stable")]
    return [Suspect(int(i), class_names[given[i]], class_names[suggested[i]], float(probs[i, suggested[i]]),
                    float(probs[i, given[i]])) for i in order]


def suspect_labels(features: FloatArray, labels: Sequence[Sequence[str]], schema: LabelSchema, seed: int = 0,
                   min_confidence: float = MIN_CONFIDENCE, folds: int = MAX_CV_FOLDS) -> list[Suspect]:
    """Labeled rows whose given label a cross-validated proxy head doubts, most suspicious first
    (`features[i]` is labeled `labels[i]`, one class per row)."""
    probs = out_of_fold_probabilities(features, labels, schema, seed, folds)
    index = {name: i for i, name in enumerate(schema.labels)}
    given = np.array([index[row[0]] for row in labels], dtype=np.int64)
    return flag_suspects(probs, given, schema.labels, min_confidence)
