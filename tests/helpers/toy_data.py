"""Deterministic toy corpora that a tiny model can learn in seconds."""
from __future__ import annotations

import random

from backend.engine.types import ClassificationExample, TaggingExample

POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant", "moving", "fun", "charming"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "bad", "lifeless"]
FILLER = ["the", "movie", "film", "plot", "was", "really", "quite", "acting", "and", "story", "a", "is"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = ["paris", "london", "berlin", "tokyo", "lima", "oslo"]


def toy_classification(n: int, seed: int = 0) -> list[ClassificationExample]:
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        cue = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(3, 8)) + [cue]
        rng.shuffle(words)
        examples.append(ClassificationExample(" ".join(words), (label,)))
    return examples


def toy_tagging(n: int, seed: int = 0) -> list[TaggingExample]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(3, 7)):
            roll = rng.random()
            if roll < 0.2:
                words.append(rng.choice(PEOPLE))
                tags.append("B-PER")
                if rng.random() < 0.3:
                    words.append(rng.choice(PEOPLE))
                    tags.append("I-PER")
            elif roll < 0.35:
                words.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        examples.append(TaggingExample(words, tags))
    return examples


def corpus_lines() -> list[str]:
    return [" ".join(POSITIVE + NEGATIVE + FILLER + PEOPLE + PLACES)] + [
        e.text for e in toy_classification(200)
    ]


def write_toy_csv(path, n: int, seed: int = 0):
    """A CSV dataset file (text,label) for CLI tests."""
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for ex in toy_classification(n, seed):
            writer.writerow([ex.text, ex.labels[0]])
    return path
