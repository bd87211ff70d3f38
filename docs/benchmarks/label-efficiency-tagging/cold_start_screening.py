"""The tagging cold-start screening behind `tagging_typical_order` (WNUT-16, bench-labels' split).

Each choice orders the first L sentences; then the token head's MNLP order takes over through
`order_pool`, re-fitted every 10 sentences, as `bench-labels`' proxy-uncertainty does. Span F1
(strict IOB2) on the test set, per seed, at every 10 sentences with the tokens labeled. Run from
the repository root (one core, ~30-60 s a curve):

    HF_HUB_OFFLINE=1 python docs/benchmarks/label-efficiency-tagging/cold_start_screening.py \\
        baseline:0 mix-frac-0.25:20:0 names:10:1 ...   # choice:L:seed (baseline:seed = random sentences)

Appends one JSON line per curve to cold_start_screening.jsonl next to this file.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from backend.engine.acquisition.cold_start import name_like_counts, sentence_means, typical_order
from backend.engine.acquisition.order import ColdStart, order_pool
from backend.engine.metrics import evaluate
from backend.engine.proxy import FeatureEncoder
from backend.engine.token_head import TokenHead, TokenScorer
from backend.engine.types import Predictions, TaskType
from backend.engine.word_features import WordEncoder
from backend.experiments.label_efficiency import load_corpus

HERE = Path(__file__).parent
GRID = sorted({*range(10, 310, 10), 75})
torch.set_num_threads(1)
corpus = load_corpus("wnut16", 3000, 1000)  # bench-labels' defaults: 1,796 pool / 598 test sentences
encoder = WordEncoder(FeatureEncoder("all-MiniLM-L6-v2", max_length=128, device="cpu"))
pool = encoder.encode([e.words for e in corpus.pool.examples])
test = encoder.encode([e.words for e in corpus.test.examples])
schema, tags, lengths = corpus.pool.schema, [e.tags for e in corpus.pool.examples], pool.lengths
counts = name_like_counts(pool).astype(np.float64)
share = counts / np.maximum(lengths, 1)
everything = np.arange(len(pool))


def f1(head: TokenHead) -> float:
    out = head.predict(test)
    eye = np.eye(len(schema.output_names), dtype=np.float32)
    probs = [eye[out.tags[out.offsets[i]: out.offsets[i + 1]]] for i in range(len(out))]
    return evaluate(Predictions(TaskType.TAGGING, probs), corpus.test.examples, schema)["main"]


def fit(rows, seed: int) -> TokenHead:
    rows = np.asarray(rows, np.int64)
    return TokenHead(schema, seed).fit(pool.take(rows), [tags[i] for i in rows])


def first_sentences(choice: str, seed: int, k: int) -> np.ndarray:
    if choice == "random":  # frozen-lr-random's own first sentences
        return np.random.default_rng(seed).permutation(len(pool))
    if choice == "typical":  # k-means over the mean word vectors of the whole pool
        return typical_order(sentence_means(pool, everything), k, seed)
    if choice in ("names", "names-frac"):  # most name-like words (count, or share of the words)
        score = counts if choice == "names" else share
        return np.lexsort((np.random.default_rng(seed).random(len(pool)), -score))
    if choice.startswith("mix"):  # k-means typical among the richest share ("mix-0.25": by count)
        score = share if "frac" in choice else counts
        rich = np.flatnonzero(score >= np.quantile(score, 1 - float(choice.split("-")[-1])))
        return rich[typical_order(sentence_means(pool, rich), k, seed)]
    raise ValueError(choice)


def baseline(seed: int) -> list[tuple[int, int, float]]:
    order = np.random.default_rng(seed).permutation(len(pool))
    return [(b, int(lengths[order[:b]].sum()), f1(fit(order[:b], seed))) for b in GRID]


def curve(choice: str, first: int, seed: int) -> list[tuple[int, int, float]]:
    typical = first_sentences(choice, seed, first)[:first]
    cold_start = ColdStart(len(typical), typical)
    labeled, order, head, out = np.zeros(len(pool), bool), [], None, []
    for b in GRID:
        while len(order) < b:
            scores = TokenScorer(head).score_pool(pool) if head is not None else None
            picked = order_pool(scores, labeled, b - len(order), int(labeled.sum()), cold_start).top
            order.extend(int(i) for i in picked)
            labeled[picked] = True
        head = fit(order, seed)
        out.append((b, int(lengths[order].sum()), f1(head)))
    return out


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        for job in sys.argv[1:]:
            start, parts = time.time(), job.split(":")
            if parts[0] == "baseline":
                result = baseline(int(parts[1]))
            else:
                result = curve(parts[0], int(parts[1]), int(parts[2]))
            with open(HERE / "cold_start_screening.jsonl", "a") as fh:
                fh.write(json.dumps({"job": job, "curve": result, "seconds": time.time() - start}) + "\n")
            print(job, f"{time.time() - start:.0f}s", flush=True)
