"""Tagging's fast update: the token head (`backend.engine.token_head`) fitted on the labeled
sentences' word features, the pool ordered by MNLP through the engine's `order_pool` (the code
`bench-labels` measures), the top K pushed to Label Studio with the head's spans as pre-annotations.

The pool's word features are computed once by the chunk jobs (`feature_jobs`, a ``words-`` set).
A fit takes about a second on hundreds of labeled sentences; scoring a 100k-sentence pool (~2M
words) 1-9 s depending on the CPU's float16 arithmetic (`TokenHead.log_proba`), so large pools
re-score a UPS subsample (`_scores`), and only the pushed sentences are decoded. The
fast version keeps the head and the pool's scores; /predict decodes other tasks on demand
(`fast_versions.TaggingFastCheckpoint`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.engine.acquisition.cold_start import TAGGING_COLD_START_LABELS, tagging_typical_order
from backend.engine.acquisition.order import ColdStart, PoolOrder, PoolScores, order_pool
from backend.engine.acquisition.sampling import UPS
from backend.engine.errors import EmptyPoolError, NotEnoughLabelsError
from backend.engine.selection import ModelEstimate
from backend.engine.token_head import HeadTags, TagOutputs, TokenHead, score_update
from backend.engine.types import IndexArray, TaggingExample, tagging_examples
from backend.labeling import ConversionReport, LabelConfig, decoded_tagging_results, text_to_example
from backend.service.checkpoints import FAST_PREFIX, checkpoint_dir
from backend.service.fast_versions import save_tagging_version, stale_tagging_scores
from backend.service.features import WordFeatureSet
from backend.service.jobs.fast_followups import request_extend
from backend.service.jobs.fast_steps import FIRST_PUSH, FastOutcome, FastSkip, FastSteps
from backend.service.jobs.feature_jobs import FeatureNotes, features_for
from backend.service.jobs.ls_sync import request_prune
from backend.service.jobs.serving import TAGGING_SERVING_RULE
from backend.service.jobs.signals import StopPredictions, held_out, pick_audits, slot_scores, tagging_quality
from backend.service.records import FastStatus, ProjectState


@dataclass
class _TaggedLabels:
    tags: list[list[str]]  # IOB2 tags of the labeled sentences that have features
    task_ids: list[int]
    rows: IndexArray  # their rows in the feature set
    entities: int  # labeled spans among them
    mismatched: int  # labeled tasks whose words differ from the stored features' (text edited since)


class TaggingFastUpdate(FastSteps):
    """Fit the token head, order the pool by MNLP, push the top K with spans, publish."""

    serving_rule = TAGGING_SERVING_RULE
    rescored: int | None = None  # sentences a UPS subsample re-scored (None: every one)

    def run(self) -> FastOutcome:
        state, config = self._open()
        report, conversion, pool_ids = self._fetch(config)
        self._lap("fetch_labels")
        found, notes = features_for(self.ctx, self.project_id, state, report, pool_ids)
        assert isinstance(found, WordFeatureSet)  # a tagging project's set is per word (gate.base_feature_target)
        features = found
        self._lap("encode")
        labels = self._labels_with_features(report, conversion, features, notes)
        head = self._fit(features, labels, config, conversion)
        self._lap("fit")
        order, scored = self._order(features, pool_ids, head, state, len(labels.tags))
        self._lap("score")
        version, predictions, shown = self._save(state, config, head, features, order, scored, len(labels.tags))
        self._lap("save")
        estimate = ModelEstimate(labels=len(labels.tags), note="span F1 is estimated at each full iteration")
        pushed = self._publish(version, predictions, estimate)
        if predictions[FIRST_PUSH:]:
            request_extend(self.ctx, self.project_id, version, predictions[FIRST_PUSH:])
        request_prune(self.ctx, self.project_id)
        self._after_publish(version, len(labels.tags), pool_ids, self._stop_predictions(features, head))
        if self._new_audit_labels(labels.task_ids):
            self._audit_quality(features, labels, config)
        return self._outcome(version, order, scored, pool_ids, pushed, predictions, shown, labels, conversion, notes)

    @staticmethod
    def _stop_predictions(features: WordFeatureSet, head: TokenHead) -> StopPredictions:
        def predict(stop_ids: list[int]) -> IndexArray | None:  # every word's tag of the stop set's sentences
            rows, found = features.rows(stop_ids)
            return head.predict(features.words.take(rows)).tags.astype(np.int64) if found.all() else None
        return predict

    def _audit_quality(self, features: WordFeatureSet, labels: _TaggedLabels, config: LabelConfig) -> None:
        """Strict span F1 on the held-out sentences (audits, ground truth) of a token head fitted on
        the other labels."""
        mask, counts = held_out(self.ctx, self.project_id, labels.task_ids)
        if mask.all():
            return
        head = TokenHead(config.schema, self.ctx.settings.seed)
        try:
            head.fit(features.words.take(labels.rows[~mask]), [t for t, m in zip(labels.tags, mask) if not m])
        except NotEnoughLabelsError:
            return
        predicted = head.predict(features.words.take(labels.rows[mask])).all_tags()
        tagging_quality(self.ctx, self.project_id, [t for t, m in zip(labels.tags, mask) if m], predicted,
                        len(labels.tags), counts)
        self._lap("quality")

    def _cold_start_labels(self) -> int:
        return TAGGING_COLD_START_LABELS if self.ctx.settings.fast_cold_start > 0 else 0

    def _typical_order(self, features: WordFeatureSet) -> IndexArray:
        return tagging_typical_order(features.words, self._cold_start_labels(), self.ctx.settings.seed)

    def _labels_with_features(self, report: ConversionReport, conversion: dict[str, Any], features: WordFeatureSet,
                              notes: FeatureNotes) -> _TaggedLabels:
        rows, found = features.rows([int(i) for i in report.task_ids])
        examples = tagging_examples(report.examples)
        lengths = features.words.lengths
        keep, mismatched = [], 0
        for i in np.flatnonzero(found):
            if lengths[rows[i]] == len(examples[i].words):
                keep.append(int(i))
            else:
                mismatched += 1
        if not keep:
            raise FastSkip(FastStatus.WAITING_FOR_FEATURES, "word features of the labeled tasks are still being "
                           "computed; the order is unchanged", conversion=conversion, notes=notes)
        tags = [list(examples[i].tags) for i in keep]
        entities = sum(t.startswith("B-") for row in tags for t in row)
        return _TaggedLabels(tags, [int(report.task_ids[i]) for i in keep], rows[keep], entities, mismatched)

    def _fit(self, features: WordFeatureSet, labels: _TaggedLabels, config: LabelConfig,
             conversion: dict[str, Any]) -> TokenHead:
        try:
            return TokenHead(config.schema, self.ctx.settings.seed).fit(features.words.take(labels.rows), labels.tags)
        except NotEnoughLabelsError as exc:
            raise FastSkip(FastStatus.SKIPPED, str(exc), conversion=conversion) from None

    def _order(self, features: WordFeatureSet, pool_ids: list[int], head: TokenHead, state: ProjectState,
               n_labeled: int) -> tuple[PoolOrder[HeadTags], IndexArray]:
        """The engine's order over the whole feature set, with every row that is not an unlabeled
        pool task masked out (scoring all rows is cheaper than gathering the pool's first). Large
        pools re-score a UPS subsample (`token_head.rows_to_rescore`), the serving fast version's
        scores standing for the rest."""
        scores = self._scores(features, head, state)
        pool_rows, in_pool = features.rows(pool_ids)
        outside = np.ones(len(features.ids), bool)
        outside[pool_rows[in_pool]] = False
        cold_start = ColdStart(self._cold_start_labels(),
                               self._typical_positions(state.feature_key, features, features.ids, n_labeled))
        try:
            order = order_pool(scores, outside, self.ctx.settings.fast_top_k, n_labeled, cold_start)
        except EmptyPoolError:
            raise FastSkip(FastStatus.SKIPPED, "no pool task has a word to tag (all empty)") from None
        return order, pool_rows[in_pool]

    def _scores(self, features: WordFeatureSet, head: TokenHead, state: ProjectState) -> PoolScores[HeadTags]:
        settings, stale = self.ctx.settings, None
        if state.version.startswith(FAST_PREFIX):
            stale = stale_tagging_scores(checkpoint_dir(settings.model_dir, self.project_id, state.version),
                                         state.feature_key, features.ids)
        sampler = UPS(settings.ups_gamma, settings.ups_temperature, full_rescore_iterations=())
        scores, self.rescored = score_update(head, features.words, stale, self.seq, sampler,
                                             np.random.default_rng((settings.seed, self.seq)))
        return scores

    def _save(self, state: ProjectState, config: LabelConfig, head: TokenHead, features: WordFeatureSet,
              order: PoolOrder[HeadTags], scored: IndexArray, n_labeled: int
              ) -> tuple[str, list[dict[str, Any]], TagOutputs]:
        """The fast version (head, pool scores, the shown sentences' decoded tags) and the top K's
        predictions with the head's spans."""
        scores = order.scores
        assert scores is not None
        candidates = np.flatnonzero(~scores.empty)
        candidates = candidates[np.isin(candidates, scored)]  # unlabeled pool sentences with words
        picks = pick_audits(self.ctx, self.project_id, self.seq, order.top, candidates)
        shown = scores.outputs.take(picks.items).decode()
        version = self._version_name()
        top_ids = features.ids[picks.items]
        self.audits = [int(t) for t in features.ids[picks.audit_items]]
        self.ordered = [int(t) for t in features.ids[picks.ordered_items]]
        slot = slot_scores(picks, order.top, scores.confidence)
        save_tagging_version(
            checkpoint_dir(self.ctx.settings.model_dir, self.project_id, version), head, state.label_config,
            features.ids[scored], scores.confidence[scored], scores.uncertainty[scored], top_ids, shown,
            {"project": self.project_id, "version": version, "encoder": state.feature_source,
             "feature_key": state.feature_key, "control_name": config.control_name, "labeled": n_labeled})
        texts = self.ctx.store.pool_texts(self.project_id, [int(t) for t in top_ids])
        predictions = []
        for k, (task_id, text) in enumerate(zip(top_ids.tolist(), texts, strict=True)):
            example = text_to_example(text or "", config)
            tags, probs = shown.sentence(k)
            result = (decoded_tagging_results(example, tags, probs, config)
                      if isinstance(example, TaggingExample) and len(example.words) == len(tags) else [])
            predictions.append({"task": int(task_id), "score": slot[k], "model_version": version, "result": result})
        return version, predictions, shown

    def _outcome(self, version: str, order: PoolOrder[HeadTags], scored: IndexArray, pool_ids: list[int],
                 pushed: int, predictions: list[dict[str, Any]], shown: TagOutputs, labels: _TaggedLabels,
                 conversion: dict[str, Any], notes: FeatureNotes) -> FastOutcome:
        n, rest = len(labels.tags), len(predictions[FIRST_PUSH:])
        spans = sum(len(p["result"]) for p in predictions)
        cold = (f"cold start ({n} of {self._cold_start_labels()} labeled sentences): typical sentences rich in "
                "name-like words come first; " if order.phase == "typical" else "")
        none_yet = ("no entity is labeled yet: the head tags every word O until one is; " if not labels.entities
                    else "")
        mismatch = (f"{labels.mismatched} labeled tasks left out: their words differ from the stored features' "
                    "(text edited since they were encoded); " if labels.mismatched else "")
        ups = (f"UPS re-scored {self.rescored} sentences, the rest kept the last version's scores; "
               if self.rescored is not None else "")
        message = (cold + none_yet + mismatch + ups + f"{len(scored)} pool sentences ordered by the token head ({n} "
                   f"labeled sentences, {labels.entities} entities); top {pushed} pushed to Label Studio with {spans} "
                   "pre-annotated spans among the shown" + (f", {rest} more queued after the switch" if rest else ""))
        assert order.scores is not None
        return FastOutcome(
            FastStatus.PUBLISHED, message, version=version, labeled=n, pool_size=len(pool_ids), order=order.phase,
            scored=int(len(scored)), rescored=self.rescored, pushed=pushed + rest, pushed_before_switch=pushed,
            empty_texts=int(order.scores.empty[scored].sum()), conversion=conversion, notes=notes,
            classes=sorted({t[2:] for row in labels.tags for t in row if t != "O"}),
            audits=len(self.audits), stopping=self.stopping or None,
            seconds={k: round(v, 4) for k, v in self.seconds.items()})
