"""The fast update's compute alone, without Label Studio or Redis (`bench-backend --mode
fast-latency`'s ``--compute-pool``): fit, score, top-K and writing the version, on synthetic
features, so the figure is the fast path's own cost at pool sizes no test project reaches."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.order import ProxyScorer, order_pool, proxy_strategy
from backend.engine.proxy import ProxyHead
from backend.engine.types import LabelSchema, TaskType
from backend.harness.common import load_avg
from backend.service.fast_versions import save_fast_version


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
