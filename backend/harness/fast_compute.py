"""The fast update's compute alone, without Label Studio or Redis (`bench-backend --mode
fast-latency`'s ``--compute-pool``): fit, score, top-K and writing the version, on synthetic
features, so the figure is the fast path's own cost at pool sizes no test project reaches.
Classification: `compute_benchmark`; tagging (``--task ner``): `tagging_compute_benchmark`, which
also measures the per-word feature set's memory and disk size."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.order import ProxyScorer, order_pool, proxy_strategy
from backend.engine.acquisition.sampling import UPS
from backend.engine.device import fastest_half_product
from backend.engine.proxy import ProxyHead
from backend.engine.token_head import TagOutputs, TokenHead, score_update
from backend.engine.types import BoolArray, LabelSchema, TaskType
from backend.engine.word_features import SHAPE_BITS, WordFeatures, offsets_of
from backend.harness.common import load_avg, ner_label_config
from backend.service.fast_versions import save_fast_version, save_tagging_version, stale_tagging_scores
from backend.service.features import FeatureStore, WordFeatureSet, word_key


def compute_benchmark(n_pool: int, n_labeled: int, dim: int = 384, repeats: int = 7, top_k: int = 32,
                      seed: int = 0) -> dict[str, Any]:
    """The fast update's compute on synthetic unit-norm float16 features (two classes split by a
    random hyperplane, 10% label noise): a fit with its CV estimate, a fit alone (what a fast update runs),
    scoring, the engine's order (`order_pool`) and writing the fast version; medians over `repeats`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_pool, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float16)
    w = rng.standard_normal(dim).astype(np.float32)
    y = (x[:n_labeled].astype(np.float32) @ w > 0).astype(int)
    flip = rng.random(n_labeled) < 0.1
    y[flip] = 1 - y[flip]
    schema = LabelSchema(TaskType.CLASSIFICATION, ("neg", "pos"))
    labels = [[schema.labels[v]] for v in y]
    ids = np.arange(n_pool, dtype=np.int64)
    strategy = proxy_strategy("least_confidence")
    pool_rows = np.arange(n_labeled, n_pool)
    times: dict[str, list[float]] = {k: [] for k in ("fit_cv", "fit", "score", "top_k", "save")}
    with tempfile.TemporaryDirectory(prefix="bench-fast-compute-") as tmp:
        for r in range(repeats):
            t = time.perf_counter()
            ProxyHead(schema, seed).fit(x[:n_labeled], labels)  # with its CV estimate
            times["fit_cv"].append(time.perf_counter() - t)
            t = time.perf_counter()
            head2 = ProxyHead(schema, seed).fit(x[:n_labeled], labels, estimate=False)
            times["fit"].append(time.perf_counter() - t)
            t = time.perf_counter()
            # as the fast update does: every row scored, then the pool's taken
            scores = ProxyScorer(head2, strategy).score_pool(x).take(pool_rows)
            times["score"].append(time.perf_counter() - t)
            t = time.perf_counter()
            order_pool(scores, np.zeros(len(pool_rows), bool), top_k, n_labeled)
            times["top_k"].append(time.perf_counter() - t)
            t = time.perf_counter()
            save_fast_version(Path(tmp) / f"v{r}", head2, "<View/>", ids[n_labeled:], scores.outputs, scores.confidence,
                              scores.uncertainty, {"bench": True})
            times["save"].append(time.perf_counter() - t)
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    return {"pool": n_pool, "labeled": n_labeled, "dim": dim, "repeats": repeats, "median_seconds": med,
            "compute_first_fit_s": round(med["fit_cv"] + med["score"] + med["top_k"], 4),
            "compute_s": round(med["fit"] + med["score"] + med["top_k"], 4),
            "compute_with_save_s": round(med["fit"] + med["score"] + med["top_k"] + med["save"], 4),
            "load_avg": load_avg()}


# ------------------------------------------------------------------------------------ tagging
# Synthetic sentences of 1..38 words (uniform: mean 19.5, WNUT-16's is 19.4, its longest 39).
MIN_WORDS, MAX_WORDS = 1, 38
SHARD_SENTENCES = 1000  # sentences per shard, as the chunk jobs write them (SCORE_CHUNK_SIZE's default)
TAGGING_LABELS = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
                  "sportsteam", "tvshow")  # WNUT-16's entity types: 21 IOB2 tags


def synthetic_words(n_sentences: int, dim: int, rng: np.random.Generator) -> WordFeatures:
    """`n_sentences` of random length with unit-norm float16 word vectors and random shape bytes,
    generated a chunk at a time (no float32 copy of the whole matrix)."""
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, n_sentences)
    offsets = offsets_of(lengths)
    total = int(offsets[-1])
    matrix = np.empty((total, dim), np.float16)
    for start in range(0, total, 1 << 17):
        chunk = rng.standard_normal((min(1 << 17, total - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        matrix[start:start + len(chunk)] = chunk
    shapes = rng.integers(0, 1 << len(SHAPE_BITS), total, dtype=np.uint8)
    return WordFeatures(matrix, shapes, offsets)


def synthetic_tags(words: WordFeatures, schema: LabelSchema, rng: np.random.Generator) -> list[list[str]]:
    """IOB2 tags a random linear teacher gives the words (~10% in entities), made valid (an I-X
    that does not follow X becomes B-X), so the head has something learnable to fit."""
    names = schema.output_names
    teacher = rng.standard_normal((len(names), words.dim)).astype(np.float32)
    logits = words.matrix.astype(np.float32) @ teacher.T * 1.5
    logits[:, 0] += 5.0  # O dominates (~90% of the words), as in real text
    best = logits.argmax(axis=1)
    out = []
    for i in range(len(words)):
        row, previous = [], "O"
        for k in best[words.offsets[i]:words.offsets[i + 1]]:
            tag = names[int(k)]
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tag = "B-" + tag[2:]
            row.append(tag)
            previous = tag
        out.append(row)
    return out


def real_labeled(corpus: str, encoder: str, n: int, seed: int) -> tuple[WordFeatures, list[list[str]], LabelSchema]:
    """`n` sentences of a tagging corpus with their gold tags, encoded as the chunk jobs encode
    them (`WordEncoder` over the packaged encoder, on the CPU)."""
    from backend.engine.data import load_dataset
    from backend.engine.proxy import FeatureEncoder
    from backend.engine.types import tagging_examples
    from backend.engine.word_features import WordEncoder

    dataset = load_dataset(corpus, max_examples=n, seed=seed)
    if dataset.task_type is not TaskType.TAGGING:
        raise ValueError(f"{corpus!r} is not a tagging corpus")
    examples = tagging_examples(dataset.examples)
    words = WordEncoder(FeatureEncoder(encoder, device="cpu")).encode([e.words for e in examples])
    return words, [list(e.tags) for e in examples], dataset.schema


# Loads a feature set in a fresh interpreter and prints what it cost: RSS growth, peak RSS growth
# (VmHWM, reset after the imports by clear_refs 5) and seconds; in-process figures would be blurred
# by what the allocator kept from the sets generated before.
_LOAD_PROBE = """
import json, sys, time
from pathlib import Path
from backend.service.features import FeatureStore

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

try:
    Path("/proc/self/clear_refs").write_text("5")
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
t = time.perf_counter()
loaded = FeatureStore(Path(sys.argv[1])).load_words(int(sys.argv[2]), sys.argv[3])
seconds = time.perf_counter() - t
print(json.dumps({"rss_delta_bytes": status("VmRSS") - before,
                  "peak_rss_delta_bytes": status("VmHWM") - before if reset else None,
                  "load_s": round(seconds, 3), "sentences": len(loaded.ids)}))
"""


def load_cost(root: Path, project: int, key: str) -> dict[str, Any]:
    """`FeatureStore.load_words` of a stored set in a fresh process: RSS and peak RSS growth, seconds."""
    done = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(root), str(project), key], capture_output=True,
                          text=True, timeout=1800, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    cost: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return cost


def stored_word_features(root: Path, n_sentences: int, dim: int, seed: int,
                         load: bool = True) -> tuple[WordFeatureSet | None, dict[str, Any]]:
    """Write `n_sentences` synthetic sentences as the chunk jobs do (`FeatureStore.write_words`,
    one shard per `SHARD_SENTENCES`), then read them back as a fast update does (`load_words`) in
    a fresh process (`load_cost`) and, with `load`, here (returned). The cost: bytes in memory
    (`WordFeatures.nbytes`), on disk, and the loading process's RSS growth and peak growth."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(root)
    key, project = word_key("synthetic"), 1
    t = time.perf_counter()
    words = 0
    for start in range(0, n_sentences, SHARD_SENTENCES):
        n = min(SHARD_SENTENCES, n_sentences - start)
        chunk = synthetic_words(n, dim, rng)
        words += int(chunk.offsets[-1])
        store.write_words(project, key, list(range(start, start + n)), chunk)
        del chunk
    write_s = time.perf_counter() - t
    shards = list(store.directory(project, key).glob("shard-*.npz"))
    disk = sum(p.stat().st_size for p in shards)
    cost = load_cost(root, project, key)
    nbytes = words * (dim * np.dtype(np.float16).itemsize + 1) + (n_sentences + 1) * 8  # = WordFeatures.nbytes
    loaded = None
    if load:
        loaded = FeatureStore(root).load_words(project, key)
        nbytes = loaded.words.nbytes
    memory = {
        "sentences": n_sentences, "words": words, "dim": dim, "mean_words": round(words / max(n_sentences, 1), 2),
        "nbytes": nbytes, "bytes_per_sentence": round(nbytes / max(n_sentences, 1), 1),
        "ids_bytes": n_sentences * 8, "shards": len(shards), "disk_bytes": disk,
        "disk_bytes_per_sentence": round(disk / max(n_sentences, 1), 1),
        "rss_delta_bytes": cost["rss_delta_bytes"], "peak_rss_delta_bytes": cost["peak_rss_delta_bytes"],
        "write_s": round(write_s, 2), "load_s": cost["load_s"]}
    return loaded, memory


@contextmanager
def torch_threads_set(threads: int) -> Iterator[int]:
    """torch's intra-op threads set to `threads` (0: left as they are) inside; yields the count in use."""
    import torch

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield threads or before
    finally:
        torch.set_num_threads(before)


def _timed_update(times: dict[str, list[float]], fit_words: Callable[[], WordFeatures], tags: list[list[str]],
                  schema: LabelSchema, seed: int, loaded: WordFeatureSet, outside: BoolArray, top_k: int,
                  version_dir: Path, last_version: Path | None = None) -> tuple[TagOutputs, int]:
    """One fast update's compute with the code that serves, each stage appended to `times`: the
    token head fitted, the sentences scored (with `last_version`, as `TaggingFastUpdate._scores`:
    `rows_to_rescore`'s UPS draw over its stale scores, the stages' keys suffixed ``_ups``; else
    every one), the pool ordered (no cold start: with this many labels the service's is over too,
    MNLP orders), the top K decoded, the version written. Returns the top K's tags and how many
    sentences were scored."""
    suffix = "" if last_version is None else "_ups"
    t = time.perf_counter()
    head = TokenHead(schema, seed).fit(fit_words(), tags)
    times["fit" + suffix].append(time.perf_counter() - t)
    t = time.perf_counter()
    key = "synthetic"
    stale = None if last_version is None else stale_tagging_scores(last_version, key, loaded.ids)
    scores, rescored = score_update(head, loaded.words, stale, 1, UPS(full_rescore_iterations=()),
                                    np.random.default_rng(seed))
    times["score" + suffix].append(time.perf_counter() - t)
    t = time.perf_counter()
    order = order_pool(scores, outside, top_k, int(outside.sum()))
    times["order" + suffix].append(time.perf_counter() - t)
    t = time.perf_counter()
    shown = scores.outputs.take(order.top).decode()
    times["decode_top_k" + suffix].append(time.perf_counter() - t)
    t = time.perf_counter()
    scored = np.flatnonzero(~outside)
    save_tagging_version(version_dir, head, ner_label_config(TAGGING_LABELS), loaded.ids[scored],
                         scores.confidence[scored], scores.uncertainty[scored], loaded.ids[order.top], shown,
                         {"bench": True, "feature_key": key})
    times["save" + suffix].append(time.perf_counter() - t)
    return shown, len(loaded.ids) if rescored is None else rescored


def _stored_sets(root: Path, n_pool: int, memory_sizes: tuple[int, ...], dim: int, seed: int,
                 memory: dict[str, Any]) -> WordFeatureSet:
    """Each of `memory_sizes` written, measured into `memory` and deleted; then the pool's set,
    measured and returned."""
    for size in sorted(set(memory_sizes) - {n_pool}):
        _, memory[str(size)] = stored_word_features(root / f"m{size}", size, dim, seed, load=False)
        shutil.rmtree(root / f"m{size}")
    found, memory[str(n_pool)] = stored_word_features(root / "pool", n_pool, dim, seed)
    assert found is not None
    return found


def tagging_compute_benchmark(n_pool: int, n_labeled: int, dim: int = 384, repeats: int = 7, top_k: int = 32,
                              seed: int = 0, memory_sizes: tuple[int, ...] = (10_000,),
                              torch_threads: int = 0, labeled_from: tuple[str, str] | None = None) -> dict[str, Any]:
    """Tagging's fast update on synthetic word features, with the code that serves: the set is
    written and read back through `FeatureStore` (its memory and disk size measured there, also at
    each of `memory_sizes`), then per repeat the token head fitted on the first `n_labeled`
    sentences (`TokenHead.fit` on `WordFeatures.take`, as `TaggingFastUpdate._fit`), every sentence
    scored (`TokenScorer.score_pool`), the pool ordered (`order_pool`, the labeled rows masked),
    the top K decoded (Viterbi) and the version written (`save_tagging_version`); medians.

    The labeled sentences are the set's first `n_labeled`, tagged by a random linear teacher
    (`synthetic_tags`); with `labeled_from` = (tagging corpus, encoder) the head is fitted instead
    on that many real sentences encoded by the encoder (their gold tags: the fit's iterations depend
    on the data), the synthetic-teacher fit timed beside it (``fit_synthetic``, not in the sum)."""
    schema = LabelSchema(TaskType.TAGGING, TAGGING_LABELS)
    stages = ("fit", "score", "order", "decode_top_k", "save")
    times: dict[str, list[float]] = {k + suffix: [] for k in stages for suffix in ("", "_ups")}
    memory: dict[str, Any] = {}
    real = None
    if labeled_from is not None:  # first: the pool's width is the encoder's
        real = real_labeled(*labeled_from, n_labeled, seed)
        dim = real[0].dim
        times["fit_synthetic"] = []
    with torch_threads_set(torch_threads) as threads, tempfile.TemporaryDirectory(prefix="bench-fast-tagging-") as tmp:
        loaded = _stored_sets(Path(tmp), n_pool, memory_sizes, dim, seed, memory)
        words = loaded.words
        labeled_rows = np.arange(n_labeled, dtype=np.int64)
        tags = synthetic_labels = synthetic_tags(words.take(labeled_rows), schema, np.random.default_rng(seed + 1))
        if real is not None:
            tags, schema = real[1], real[2]
        outside = np.zeros(len(loaded.ids), bool)
        outside[labeled_rows] = True  # the labeled sentences are in the set, out of the order
        for r in range(repeats):
            if real is not None:
                t = time.perf_counter()
                TokenHead(schema, seed).fit(words.take(labeled_rows), synthetic_labels)
                times["fit_synthetic"].append(time.perf_counter() - t)
            # as `TaggingFastUpdate._fit`: the labeled sentences' rows taken from the set, then fitted
            def fit_words() -> WordFeatures:
                return words.take(labeled_rows) if real is None else real[0]

            shown, _ = _timed_update(times, fit_words, tags, schema, seed, loaded, outside, top_k, Path(tmp) / f"v{r}")
            _, rescored = _timed_update(times, fit_words, tags, schema, seed, loaded, outside, top_k,
                                        Path(tmp) / f"u{r}", last_version=Path(tmp) / f"v{r}")
        version_bytes = sum(p.stat().st_size for p in (Path(tmp) / "v0").iterdir())
        spans_shown = sum(tag.startswith("B-") for row in shown.all_tags() for tag in row)
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    return {"task": "ner", "pool": n_pool, "labeled": n_labeled, "labeled_words": sum(len(t) for t in tags),
            "labeled_entity_words": sum(t != "O" for row in tags for t in row),
            "labeled_source": (f"{labeled_from[0]} sentences encoded by {labeled_from[1]}" if labeled_from
                               else "synthetic (random linear teacher)"),
            "dim": dim, "tags": len(schema.output_names), "words": int(words.offsets[-1]), "repeats": repeats,
            "top_k": top_k, "torch_threads": threads, "median_seconds": med,
            "product_dtype": str(fastest_half_product(dim, len(schema.output_names), threads)).removeprefix("torch."),
            "compute_s": round(sum(med[k] for k in stages), 4),  # fit + score + order + decode the top K + save
            "compute_without_save_s": round(med["fit"] + med["score"] + med["order"] + med["decode_top_k"], 4),
            # the same update after one that scored every sentence: UPS re-scores a subsample
            "compute_ups_s": round(sum(med[k + "_ups"] for k in stages), 4), "rescored_ups": rescored,
            "version_bytes": version_bytes, "spans_in_top_k": spans_shown, "memory": memory,
            "load_avg": load_avg()}
