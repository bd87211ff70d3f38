"""Suspect labels: a label that contradicts clearly separable data is flagged, with the class the
data points to; clean labels are not; a label never vouches for itself."""
import numpy as np
import pytest

from backend.engine.suspects import Suspect, flag_suspects, out_of_fold_probabilities, suspect_labels
from backend.engine.types import LabelSchema, TaskType

SCHEMA = LabelSchema(TaskType.CLASSIFICATION, ("cat", "dog", "fox"))


def blobs(per_class=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 3
    x = np.concatenate([rng.normal(c, 0.3, (per_class, 16)) for c in centres])
    labels = [(name,) for name in SCHEMA.labels for _ in range(per_class)]
    return x, labels


def test_a_flipped_label_on_separable_data_is_flagged_and_the_clean_ones_are_not():
    x, labels = blobs()
    labels[5] = ("dog",)  # a cat labeled dog
    suspects = suspect_labels(x, labels, SCHEMA, seed=0)
    assert [s.index for s in suspects] == [5]
    assert suspects[0].given == "dog" and suspects[0].predicted == "cat"
    assert suspects[0].confidence > 0.5 > suspects[0].given_probability


def test_clean_separable_labels_raise_no_suspects():
    x, labels = blobs(seed=1)
    assert suspect_labels(x, labels, SCHEMA, seed=1) == []


def test_the_most_suspicious_come_first():
    probs = np.array([[0.6, 0.4, 0.0], [0.95, 0.05, 0.0], [0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0]])
    given = np.array([1, 1, 1, 0, 0])  # rows 0 and 1 labeled dog, the head says cat; row 3 cat, says dog
    suspects = flag_suspects(probs, given, SCHEMA.labels, min_confidence=0.5)
    assert [s.index for s in suspects] == [1, 3, 0]
    assert suspects[0] == Suspect(1, "dog", "cat", 0.95, 0.05)
    # a higher floor keeps only the confident disagreements
    assert [s.index for s in flag_suspects(probs, given, SCHEMA.labels, min_confidence=0.9)] == [1]


def test_a_label_does_not_vouch_for_itself():
    """In-sample, a flexible head would fit the odd label; out of fold it never sees it."""
    x, labels = blobs(seed=2)
    labels[25] = ("fox",)  # a dog labeled fox
    probs = out_of_fold_probabilities(x, labels, SCHEMA, seed=2)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[25].argmax() == 1 and probs[25, 2] < 0.2


def test_a_class_with_one_label_is_never_flagged():
    x, labels = blobs(seed=3)
    x = x[:41]
    labels = labels[:41]  # one fox
    assert all(s.given != "fox" for s in suspect_labels(x, labels, SCHEMA, seed=3))


def test_multi_label_is_refused():
    schema = LabelSchema(TaskType.CLASSIFICATION, ("a", "b"), multi_label=True)
    with pytest.raises(ValueError, match="single-label"):
        suspect_labels(np.zeros((4, 2)), [("a",), ("b",), ("a",), ("b",)], schema)
