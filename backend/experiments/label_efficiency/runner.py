"""Runs every method on every corpus and seed, with a cache of features, curves and fine-tunes."""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from backend.engine.acquisition.cold_start import tagging_typical_order, typical_order
from backend.engine.acquisition.order import ColdStart, ProxyScorer, order_pool, proxy_strategy
from backend.engine.io import atomic_file, atomic_write_json
from backend.engine.metrics import evaluate
from backend.engine.models.transformer import FitReport, TrainingConfig, TransformerModel
from backend.engine.packaged import resolve_model
from backend.engine.proxy import C_MAX, C_MIN, C_SCALE, FeatureEncoder, ProxyHead
from backend.engine.selection import ModelEstimate, decide_serving, switch_standard_errors
from backend.engine.token_head import BALANCE, DEFAULT_C
from backend.engine.types import (
    BoolArray,
    Example,
    FloatArray,
    IndexArray,
    Predictions,
    TaskType,
    classification_examples,
)
from backend.experiments.label_efficiency.config import (
    ALIGNED,
    FEWSHOT,
    FINETUNED,
    HYBRID,
    OLD,
    PAPER_EXTRAS,
    RANDOM,
    UNCERTAINTY,
    Corpus,
    LabelEfficiencyConfig,
    LabelRecord,
    Progress,
    load_corpus,
)
from backend.experiments.label_efficiency.tagging import (
    TaggingCurves,
    TaggingOrder,
    digest,
    pool_words_of,
    safe_name,
    tag_predictions,
    tokens_labeled,
    tokens_of,
)
from backend.experiments.reports import jsonable

__all__ = ["LabelEfficiency", "TaggingOrder", "next_to_label", "progress_to_stderr", "tag_predictions"]


def _texts(examples: Sequence[Example]) -> list[str]:  # the proxy path: classification only
    return [ex.text for ex in classification_examples(examples)]


def _gold(examples: Sequence[Example]) -> list[tuple[str, ...]]:
    return [tuple(ex.labels) for ex in classification_examples(examples)]


def _cv_accuracy(head: ProxyHead) -> float | None:
    assert head.estimate is not None  # `fit` estimates it unless told not to
    return head.estimate.accuracy


def _features(features: FloatArray | None) -> FloatArray:
    assert features is not None  # encoded (`_encode`, or asked of the model) before any head reads them
    return features


def next_to_label(pool_features: FloatArray, head: ProxyHead | None, labeled: BoolArray, k: int,
                  cold_start: ColdStart) -> IndexArray:
    """The next `k` pool rows proxy-uncertainty labels: the fast update's order (`order_pool` over
    the head's `ProxyScorer` with the service's default strategy), fitted on the rows labeled so far."""
    scores = ProxyScorer(head, proxy_strategy()).score_pool(pool_features) if head is not None else None
    return order_pool(scores, labeled, k, int(labeled.sum()), cold_start).top


class LabelEfficiency(TaggingCurves):
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
        orders: dict[int, IndexArray] = {}
        permutations = {s: np.random.default_rng(s).permutation(len(corpus.pool)) for s in config.seeds}
        if {RANDOM, UNCERTAINTY, HYBRID} & set(config.methods):
            self._encode(corpus)
            for seed in config.seeds:
                seed_records, orders[seed] = self._cached_curves(corpus, seed, permutations[seed])
                records.extend(seed_records)
        tuned: list[LabelRecord | None] = []
        for b in budgets:  # every seed at a budget before the next budget: partial runs stay useful
            for seed in finetune:
                wanted = set(config.methods) | ({FEWSHOT} if ALIGNED in config.methods else set())
                for method in (m for m in FINETUNED if m in wanted):
                    tuned.append(self._cached_or(corpus, method, seed, b, partial(
                        self.finetune, corpus, method, seed, permutations[seed][:b])))
                if HYBRID in config.methods:
                    tuned.append(self._cached_or(corpus, HYBRID, seed, b, partial(
                        self.hybrid, corpus, seed, orders[seed][:b])))
        records += [r for r in tuned if r is not None]
        records += [LabelRecord(r.corpus, ALIGNED, r.seed, r.labeled, r.detail["aligned_proxy"], r.seconds,
                                {"from": FEWSHOT, **tokens_of(r.detail)})
                    for r in records if r.method == FEWSHOT and "aligned_proxy" in r.detail]
        if HYBRID in config.methods:  # between fine-tune budgets it serves the proxy
            measured = {(r.seed, r.labeled) for r in records if r.method == HYBRID}
            for r in [r for r in records if r.method == UNCERTAINTY and r.labeled in config.budgets]:
                if r.labeled not in budgets and (r.seed, r.labeled) not in measured:
                    records.append(LabelRecord(corpus.name, HYBRID, r.seed, r.labeled, dict(r.metrics), r.seconds,
                                               {"served": "proxy", "why": "no fine-tune at this budget",
                                                **tokens_of(r.detail)}))
        return [r for r in records if r.method in config.methods]  # the proxy curves serve hybrid too

    # ------------------------------------------------------------------------ proxy path
    def _encode(self, corpus: Corpus) -> None:
        """Pool and test features, from the cache when this corpus/model/split was encoded before."""
        if corpus.tagging:
            self._encode_words(corpus)
            return
        key = corpus.features_key = digest({
            "corpus": corpus.name, "model": resolve_model(self.config.model), "max_length": self.config.max_length,
            "pool": _texts(corpus.pool.examples), "test": _texts(corpus.test.examples)})
        path = self.cache / "features" / f"{safe_name(corpus.name)}-{key}.npz" if self.cache else None
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

    def _head(self, corpus: Corpus, rows: IndexArray, seed: int) -> ProxyHead:
        return ProxyHead(corpus.pool.schema, seed).fit(
            _features(corpus.pool_features)[rows], _gold([corpus.pool.examples[i] for i in rows]))

    def _test_metrics(self, corpus: Corpus, head: ProxyHead, features: FloatArray | None = None) -> dict[str, float]:
        probs = head.predict_proba(_features(corpus.test_features if features is None else features))
        schema = corpus.pool.schema
        return evaluate(Predictions(schema.task_type, probs, None, schema.multi_label), corpus.test.examples, schema)

    def grid(self, pool_size: int) -> list[int]:
        """Label counts the proxy curves are recorded at: every query batch up to the largest budget,
        plus the table's and fine-tunes' budgets."""
        top = min(max(self.config.budgets + self.config.finetune_budgets), pool_size)
        steps = range(self.config.query_batch, top + 1, self.config.query_batch)
        return sorted({*steps, *(b for b in self.config.budgets + self.config.finetune_budgets if b <= top)})

    def proxy_curves(self, corpus: Corpus, seed: int,
                     permutation: IndexArray) -> tuple[list[LabelRecord], IndexArray]:
        """Random and least-confidence curves of the proxy head (both cheap; hybrid follows the
        second); returns the uncertainty order."""
        if corpus.tagging:
            return self.tagging_curves(corpus, seed, permutation)
        grid, records = self.grid(len(corpus.pool)), []
        for b in grid:
            start = time.perf_counter()
            random_head = self._head(corpus, permutation[:b], seed)
            records.append(LabelRecord(corpus.name, RANDOM, seed, b, self._test_metrics(corpus, random_head),
                                       time.perf_counter() - start, {"cv_accuracy": _cv_accuracy(random_head)}))
        assert corpus.pool_features is not None
        # the cold start's first labels: the most typical texts, or random's first query batch with 0
        first = typical_order(corpus.pool_features, self.config.cold_start_labels, seed) \
            if self.config.cold_start_labels else permutation[: min(self.config.query_batch, grid[0])]
        cold_start = ColdStart(len(first), first)
        order: list[int] = []
        labeled = np.zeros(len(corpus.pool), dtype=bool)
        head: ProxyHead | None = None
        for b in grid:
            start = time.perf_counter()
            while len(order) < b:  # one query batch (two where the cold start ends inside it)
                picked = next_to_label(corpus.pool_features, head, labeled, b - len(order), cold_start)
                order.extend(int(i) for i in picked)
                labeled[picked] = True
            head = self._head(corpus, np.array(order), seed)
            records.append(LabelRecord(corpus.name, UNCERTAINTY, seed, b, self._test_metrics(corpus, head),
                                       time.perf_counter() - start, {"cv_accuracy": _cv_accuracy(head)}))
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

    def _fit(self, corpus: Corpus, method: str, seed: int,
             examples: Sequence[Example]) -> tuple[TransformerModel, FitReport]:
        schema = corpus.pool.schema
        model = TransformerModel(self.config.model, schema, self.training(method, seed, schema.task_type))
        return model, model.fit(examples)

    def finetune(self, corpus: Corpus, method: str, seed: int, rows: IndexArray) -> LabelRecord:
        examples = [corpus.pool.examples[i] for i in rows]
        model, report = self._fit(corpus, method, seed, examples)
        start = time.perf_counter()
        aligned = method == FEWSHOT and ALIGNED in self.config.methods
        predictions = model.predict(corpus.test.examples, return_features=aligned and not corpus.tagging)
        metrics = evaluate(predictions, corpus.test.examples, corpus.pool.schema)
        detail: dict[str, Any] = {"steps": report.steps, "test_seconds": time.perf_counter() - start,
                                  **tokens_labeled(examples)}
        if aligned and corpus.tagging:
            detail["aligned_proxy"] = self._aligned_tag_metrics(corpus, model, rows, seed)
        elif aligned:  # the head on this fine-tune's features, fitted on the same labels
            pool_features = model.predict(corpus.pool.examples, return_features=True).features
            head = ProxyHead(corpus.pool.schema, seed).fit(_features(pool_features)[rows], _gold(examples))
            detail["aligned_proxy"] = self._test_metrics(corpus, head, predictions.features)
        self.progress(f"{corpus.name} seed {seed} {method} @{len(rows)}: {metrics['main']:.3f} "
                      f"({report.seconds:.0f}s fit, {report.steps} steps)"
                      + (f"; aligned proxy {detail['aligned_proxy']['main']:.3f}" if aligned else ""))
        return LabelRecord(corpus.name, method, seed, len(rows), metrics, report.seconds, detail)

    def hybrid(self, corpus: Corpus, seed: int, rows: IndexArray) -> LabelRecord:
        """The default path at a fine-tune budget: proxy head or few-shot fine-tune, whichever is more
        accurate on a held-out share of the labeled rows when both learn from the rest."""
        start = time.perf_counter()
        fit_rows, held_rows = _holdout(corpus, rows, self.config.holdout_share, seed)
        held = [corpus.pool.examples[i] for i in held_rows]
        schema = corpus.pool.schema
        if corpus.tagging:  # the token head; span F1 of the held-out sentences
            proxy_estimate = self._tag_metrics(corpus, self._token_head(corpus, fit_rows, seed), held_rows)["main"]
        else:
            proxy_held = self._head(corpus, fit_rows, seed).predict_proba(_features(corpus.pool_features)[held_rows])
            proxy_predictions = Predictions(schema.task_type, proxy_held, None, schema.multi_label)
            proxy_estimate = evaluate(proxy_predictions, held, schema)["main"]
        trial, report = self._fit(corpus, FEWSHOT, seed, [corpus.pool.examples[i] for i in fit_rows])
        finetune_estimate = evaluate(trial.predict(held), held, schema)["main"]
        detail: dict[str, Any] = {"proxy_holdout": proxy_estimate, "finetune_holdout": finetune_estimate,
                                  "holdout": len(held_rows), **tokens_labeled([corpus.pool.examples[i] for i in rows])}
        if corpus.tagging:
            proxy_metrics = self._tag_metrics(corpus, self._token_head(corpus, rows, seed))
        else:
            head = self._head(corpus, rows, seed)
            detail["proxy_cv_accuracy"] = _cv_accuracy(head)
            proxy_metrics = self._test_metrics(corpus, head)
        # both test figures are kept, so the record shows what the choice won or lost
        finetune_metrics = evaluate(trial.predict(corpus.test.examples), corpus.test.examples, schema)
        detail.update(finetune_test=finetune_metrics["main"], proxy_test=proxy_metrics["main"], steps=report.steps,
                      trained_on=len(fit_rows))
        decision = decide_serving(ModelEstimate(finetune_estimate, len(held_rows), "hold-out share"),  # the service's
                                  ModelEstimate(proxy_estimate, len(fit_rows), "hold-out share"),  # rule
                                  standard_errors=switch_standard_errors(schema.task_type))
        metrics = finetune_metrics if decision.serve == "finetuned" else proxy_metrics
        if corpus.tagging and decision.serve == "finetuned":  # once its word features are built, the token head
            metrics = self._aligned_tag_metrics(corpus, trial, rows, seed)  # re-fits on them: that serves
            detail["aligned_test"] = metrics["main"]
        detail.update(served=decision.serve, why=decision.why, margin=decision.margin)
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
            key["order"] = self._order_key(corpus, seed)
            key["switch_standard_errors"] = switch_standard_errors(corpus.pool.schema.task_type)
            if corpus.tagging:
                key["after_a_win"] = "the token head on the fine-tune's word features"
        return digest(key)

    def _order_key(self, corpus: Corpus, seed: int) -> dict[str, Any]:
        """What proxy-uncertainty's labels depend on besides the features and seed (for tagging, the
        cold start's sentences themselves: cheap to compute, and they change with its rule)."""
        if not corpus.tagging:
            return {"c_schedule": (C_SCALE, C_MIN, C_MAX), "cold_start": self.config.cold_start_labels}
        labels = self.config.tagging_cold_start_labels
        first = tagging_typical_order(pool_words_of(corpus), labels, seed) if labels else np.zeros(0, np.int64)
        ups = self.config.tagging_ups_min_words
        return {"token_head": (DEFAULT_C, BALANCE), "cold_start": labels, "first": first.tolist(),
                "detail": "shown-spans+rescored",  # the records hold the shown batch's precision / recall
                **({"ups_min_words": ups} if int(pool_words_of(corpus).offsets[-1]) >= ups else {})}

    def _read_cache(self) -> dict[str, LabelRecord]:
        path = self.cache / "records.jsonl" if self.cache else None
        if path is None or not path.is_file():
            return {}
        out = {}
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                record = LabelRecord(**row["record"])
                if record.detail.get("served") == "finetune":  # spelled so before ServingDecision
                    record.detail["served"] = "finetuned"
                out[row["key"]] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run
        return out

    def _cached_curves(self, corpus: Corpus, seed: int,
                       permutation: IndexArray) -> tuple[list[LabelRecord], IndexArray]:
        """`proxy_curves`, read back from the cache when the same features, seed and grid ran before."""
        key = digest({"corpus": corpus.name, "features": corpus.features_key, "seed": seed,
                       "grid": self.grid(len(corpus.pool)), "query_batch": self.config.query_batch,
                       "order": self._order_key(corpus, seed)})
        path = self.cache / "curves" / f"{safe_name(corpus.name)}-{key}.json" if self.cache else None
        if path is not None and path.is_file():
            saved = json.loads(path.read_text())
            return [LabelRecord(**r) for r in saved["records"]], np.array(saved["order"], dtype=np.int64)
        records, order = self.proxy_curves(corpus, seed, permutation)
        if path is not None:
            atomic_write_json(path, json.loads(json.dumps(
                {"records": [asdict(r) for r in records], "order": order.tolist()}, default=jsonable)))
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
                fh.write(json.dumps({"key": key, "record": asdict(record)}, default=jsonable) + "\n")
        self._cached[key] = record
        return record


def _holdout(corpus: Corpus, rows: IndexArray, share: float, seed: int) -> tuple[IndexArray, IndexArray]:
    """(fit rows, held-out rows): stratified when every class has two labeled rows, else random."""
    from sklearn.model_selection import train_test_split as split

    n_held = max(1, math.ceil(share * len(rows)))
    if corpus.tagging:  # sentences hold several labels each: a random share
        fit, held = split(np.asarray(rows), test_size=n_held, random_state=seed)
        return fit, held
    labels = [ex.labels[0] for ex in classification_examples([corpus.pool.examples[i] for i in rows])]
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and n_held >= len(counts) and not corpus.pool.schema.multi_label else None
    fit, held = split(np.asarray(rows), test_size=n_held, random_state=seed, stratify=stratify)
    return fit, held


def progress_to_stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
