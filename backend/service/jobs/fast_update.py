"""The fast path: a new order in Label Studio within seconds of each annotation.

    fast_update     (queue "fast")  fetch the labels, fit `ProxyHead` on their pool features, order
                                    the pool with the engine's `order_pool` (the code `bench-labels`
                                    measures), save a fast version, push the first FIRST_PUSH of the
                                    top K, switch LS's model_version, publish
    features_ready                  a feature build completed: the set is used, an update follows

The rest of the top K, the CV estimate (`fast_followups`) and the deletion of superseded versions
(`ls_sync`) follow on the "scoring" queue. Annotation events ask for a fast update
(`request_fast_update`); at most one waits per project, so a burst of events folds into one run.
Every outcome, including each kind of bad input, is a `FastStatus` with a message in the project's
``fast_path`` (``GET /projects/<id>``); none crashes the job.

Aligned features: when a fine-tune wins the serving choice and its scoring chunks kept the pool's
features, the head is re-fitted on those at each annotation instead of freezing the order until the
next iteration (`serving.follow_serving_model`).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from rq import get_current_job
from rq.job import Job

from backend.engine.acquisition.cold_start import typical_order
from backend.engine.acquisition.order import ColdStart, PoolOrder, ProxyScorer, order_pool, proxy_strategy
from backend.engine.errors import EmptyPoolError, NotEnoughLabelsError
from backend.engine.proxy import ProxyHead
from backend.engine.selection import ModelEstimate, ServingDecision
from backend.engine.types import IndexArray, TaskType, classification_examples
from backend.labeling import ConversionReport, LabelConfig
from backend.service.checkpoints import checkpoint_dir
from backend.service.fast_versions import entry, save_fast_version
from backend.service.features import FeatureSet
from backend.service.jobs.common import META_PROJECT, enqueue
from backend.service.jobs.fast_followups import CvPlan, cv_plan, request_cv, request_extend
from backend.service.jobs.fast_steps import FIRST_PUSH, FastOutcome, FastSkip, FastSteps
from backend.service.jobs.fast_tagging import TaggingFastUpdate
from backend.service.jobs.feature_jobs import FeatureNotes, features_for
from backend.service.jobs.gate import base_feature_target, fast_path_blocker
from backend.service.jobs.ls_sync import request_prune
from backend.service.jobs.signals import StopPredictions, pick_audits, slot_scores
from backend.service.ls_errors import LabelStudioError
from backend.service.records import FastStatus, HistoryPoint, ProjectState
from backend.service.runtime import JobContext, context

log = logging.getLogger(__name__)

FAST_JOB_TIMEOUT = 600
# ------------------------------------------------------------------------------------ requests


def request_fast_update(ctx: JobContext, project_id: int, reason: str) -> dict[str, Any]:
    """Queue one fast update unless one is waiting (it will read the new labels). Never works
    here: callers are webhooks with LS's 1 s budget."""
    state = ctx.store.get_project(project_id)
    blocker = fast_path_blocker(ctx, state)
    if blocker is not None:
        if state is not None and (state.fast_status or {}).get("message") != blocker:
            ctx.store.set_fast_status(project_id, {"status": FastStatus.OFF.value, "message": blocker})
        return {"fast": "off"}
    ctx.store.note_fast_event(project_id)
    job_id = f"fast-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    holder = ctx.store.request_fast(project_id, job_id, ttl=FAST_JOB_TIMEOUT)
    if holder is not None:
        return {"fast": "queued", "fast_job": holder}
    try:
        enqueue(ctx.queues.fast, fast_update, (int(project_id), reason), job_id=job_id, timeout=FAST_JOB_TIMEOUT,
                meta={META_PROJECT: int(project_id)}, on_failure=on_fast_failure,
                description=f"fast update, project {project_id} ({reason})")
    except redis.exceptions.RedisError:
        ctx.store.release(project_id, "fast-queued", job_id)
        raise
    return {"fast": "enqueue", "fast_job": job_id}


def fast_update(project_id: int, reason: str = "annotation") -> dict[str, Any]:
    """The RQ job: wait out FAST_UPDATE_DELAY after the latest event, then `run_fast_update`."""
    ctx = context()
    job = get_current_job()
    job_id = job.id if job is not None else f"inline-{uuid.uuid4().hex[:8]}"
    seq = ctx.store.fast_begin(project_id, job_id)
    delay = ctx.settings.fast_update_delay
    if delay > 0:
        deadline = time.monotonic() + 10 * delay  # a steady stream of events cannot starve the update
        while time.monotonic() < deadline:
            wait = ctx.store.last_fast_event(project_id) + delay - time.time()
            if wait <= 0:
                break
            time.sleep(min(wait, 0.25))
    return run_fast_update(ctx, project_id, reason, seq, job_id=job_id).to_dict()


def features_ready(project_id: int, key: str, source: str, version: str, build_id: str) -> dict[str, Any]:
    """A feature build completed (`feature_jobs.build_features`): the proxy now works on the set
    (older sets are deleted); a fast update follows."""
    ctx = context()
    ctx.store.release(project_id, "features-build", build_id)
    state = ctx.store.get_project(project_id)
    if version and (state is None or not state.finetune_won or state.acq_version != version):
        return {"skipped": f"{version} no longer serves; its features are not used"}  # pruned by the next switch
    ctx.store.set_fields(project_id, feature_key=key, feature_source=source, feature_source_version=version)
    # the serving choice reads the base set
    ctx.features.drop_others(project_id, {key, base_feature_target(ctx, state.task_type if state else None).key})
    return request_fast_update(ctx, project_id, f"features of {version} ready" if version else "pool features ready")


def on_fast_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """An unexpected error (a bug, a worker that died): recorded in the project's fast_path."""
    ctx = context()
    project_id = int(job.meta[META_PROJECT])
    ctx.store.release(project_id, "fast-queued", job.id)
    name = getattr(exc_type, "__name__", str(exc_type))
    ctx.store.set_fast_status(project_id, {"status": FastStatus.FAILED.value, "job": job.id,
                                           "message": f"fast update failed: {name}: {exc_value}"[:1000]})


# ------------------------------------------------------------------------------------ the update


def run_fast_update(ctx: JobContext, project_id: int, reason: str, seq: int | None = None,
                    *, job_id: str = "", decision: ServingDecision | None = None) -> FastOutcome:
    """Fit the proxy head, order the pool, publish a fast version; returns (and records) the
    outcome. Label Studio errors and bad input become a status, not an exception. `decision` is the
    full iteration's serving decision when the iteration hands over to the proxy."""
    t0 = time.perf_counter()
    seq = ctx.store.next_fast_seq(project_id) if seq is None else seq
    try:
        outcome = _steps_for(ctx, project_id)(ctx, project_id, seq, t0, decision).run()
    except FastSkip as skip:
        outcome = FastOutcome(skip.status, skip.message, **skip.extra)
    except LabelStudioError as exc:
        outcome = FastOutcome(FastStatus.FAILED, f"Label Studio: {exc}"[:1000])
    outcome.reason, outcome.job, outcome.seq = reason, job_id or None, seq
    outcome.seconds.setdefault("total", round(time.perf_counter() - t0, 4))
    if outcome.status is not FastStatus.SUPERSEDED:  # the newer update's status is the one to show
        ctx.store.set_fast_status(project_id, outcome.to_dict())
    if outcome.status is FastStatus.PUBLISHED and outcome.version:
        record_fast_point(ctx, project_id, outcome)
    log.info("project %s: fast update %s: %s", project_id, outcome.status.value, outcome.message)
    return outcome


def _steps_for(ctx: JobContext, project_id: int) -> type[_FastUpdate] | type[TaggingFastUpdate]:
    state = ctx.store.get_project(project_id)
    return TaggingFastUpdate if state is not None and state.task_type is TaskType.TAGGING else _FastUpdate


def record_fast_point(ctx: JobContext, project_id: int, outcome: FastOutcome) -> None:
    """The published fast version on the project manager's curve."""
    state = ctx.store.get_project(project_id)
    decision = state.serving_reason if state is not None else None
    tagging = state is not None and state.task_type is TaskType.TAGGING
    cv = (outcome.estimate or {}).get("cv_accuracy")
    quality = ctx.store.quality_estimate(project_id)
    ctx.store.append_history(project_id, HistoryPoint(
        at=time.time(), version=str(outcome.version), kind="fast", labeled=outcome.labeled or 0, serving="proxy",
        metric="span F1" if tagging else "accuracy",
        cv=cv if cv is not None else (decision.proxy.accuracy if decision else None),
        seconds=outcome.seconds.get("total"), scored=outcome.scored, pool=outcome.pool_size,
        estimate=quality if quality and quality.get("value") is not None else None, stop=outcome.stopping))


@dataclass
class _Labels:
    report: ConversionReport
    conversion: dict[str, Any]
    y: list[list[str]]  # the labels of the labeled tasks that have features
    task_ids: list[int]  # and their ids
    rows: IndexArray  # and their rows in the feature set


class _FastUpdate(FastSteps):
    """Classification's fast update: fit the proxy head on the texts' features, order, save, publish."""

    def run(self) -> FastOutcome:
        state, config = self._open()
        report, conversion, pool_ids = self._fetch(config)
        self._lap("fetch_labels")
        found, notes = features_for(self.ctx, self.project_id, state, report, pool_ids)
        assert isinstance(found, FeatureSet)  # a classification project's set holds a vector per text
        features = found
        self._lap("encode")
        labels = self._labels_with_features(report, conversion, features, notes, config)
        head, plan = self._fit(features, labels, config, state)
        self._lap("fit")
        scored_ids, order = self._order(features, pool_ids, head, state, len(labels.y))
        self._lap("score")
        version, predictions = self._save(state, config, head, scored_ids, order, len(labels.y))
        self._lap("save")
        pushed = self._publish(version, predictions, self._estimate(head, len(labels.y)))
        if predictions[FIRST_PUSH:]:
            request_extend(self.ctx, self.project_id, version, predictions[FIRST_PUSH:])
        request_prune(self.ctx, self.project_id)
        self._after_publish(version, len(labels.y), pool_ids, self._stop_predictions(features, head, config))
        if plan.due or self._new_audit_labels(labels.task_ids):  # off the fast worker: CV, the audit estimate
            request_cv(self.ctx, self.project_id, state.feature_key, labels.task_ids, labels.y)
        return self._outcome(version, order, scored_ids, pool_ids, pushed, predictions, head, labels, notes)

    @staticmethod
    def _stop_predictions(features: FeatureSet, head: ProxyHead,
                          config: LabelConfig) -> StopPredictions:
        def predict(stop_ids: list[int]) -> IndexArray | None:
            rows, found = features.rows(stop_ids)
            if not found.all():
                return None
            probs = head.predict_proba(features.matrix[rows])
            return (probs >= 0.5).astype(np.int64) if config.schema.multi_label else probs.argmax(axis=1)
        return predict

    def _check_labels(self, report: ConversionReport, config: LabelConfig, conversion: dict[str, Any]) -> None:
        seen = sorted({label for ex in classification_examples(report.examples) for label in ex.labels})
        if not config.schema.multi_label and len(seen) < 2:
            raise FastSkip(FastStatus.SKIPPED, f"the labels hold one class only ({', '.join(seen)}); the proxy "
                           "head needs two classes to order the pool, the order is unchanged",
                           conversion=conversion, classes=seen)

    def _typical_order(self, features: FeatureSet) -> IndexArray:
        return typical_order(features.matrix, self.ctx.settings.fast_cold_start, self.ctx.settings.seed)

    @staticmethod
    def _estimate(head: ProxyHead, n_labeled: int) -> ModelEstimate:
        estimate = head.estimate
        return ModelEstimate(accuracy=estimate.accuracy if estimate else None, labels=n_labeled,
                             folds=estimate.folds if estimate else 0, c=estimate.c if estimate else None)

    def _labels_with_features(self, report: ConversionReport, conversion: dict[str, Any], features: FeatureSet,
                              notes: FeatureNotes, config: LabelConfig) -> _Labels:
        rows, found = features.rows([int(i) for i in report.task_ids])
        kept = np.flatnonzero(found)
        examples = classification_examples(report.examples)  # the fast path is classification-only (gate)
        y = [list(examples[i].labels) for i in kept]
        if not config.schema.multi_label and len({row[0] for row in y}) < 2:
            raise FastSkip(FastStatus.WAITING_FOR_FEATURES, "features of the labeled tasks are still being computed; "
                        "the order is unchanged", conversion=conversion, notes=notes)
        return _Labels(report, conversion, y, [int(report.task_ids[i]) for i in kept], rows[found])

    def _fit(self, features: FeatureSet, labels: _Labels, config: LabelConfig,
             state: ProjectState) -> tuple[ProxyHead, CvPlan]:
        plan = cv_plan(self.ctx, self.project_id, labels.y, state.feature_key)
        try:  # one fit (C set by the label count); the CV estimate runs after the switch when due
            head = ProxyHead(config.schema, self.ctx.settings.seed).fit(features.matrix[labels.rows], labels.y,
                                                                         estimate=False)
        except NotEnoughLabelsError as exc:
            raise FastSkip(FastStatus.SKIPPED, str(exc), conversion=labels.conversion) from None
        head.estimate = plan.last
        return head, plan

    def _order(self, features: FeatureSet, pool_ids: list[int], head: ProxyHead, state: ProjectState,
               n_labeled: int) -> tuple[IndexArray, PoolOrder]:
        """The engine's order over the pool tasks that have features (scored on every row of the set:
        cheaper than gathering the pool's rows first)."""
        pool_rows, pool_found = features.rows(pool_ids)
        scored_ids = np.asarray(pool_ids, np.int64)[pool_found]
        scores = ProxyScorer(head, proxy_strategy(self.ctx.settings.strategy)).score_pool(features.matrix)
        scores = scores.take(pool_rows[pool_found])
        cold_start = ColdStart(self.ctx.settings.fast_cold_start,
                               self._typical_positions(state.feature_key, features, scored_ids, n_labeled))
        try:
            order = order_pool(scores, np.zeros(len(scored_ids), bool), self.ctx.settings.fast_top_k, n_labeled,
                               cold_start)
        except EmptyPoolError:
            raise FastSkip(FastStatus.SKIPPED, "no pool task has text to order (all empty)") from None
        return scored_ids, order

    def _save(self, state: ProjectState, config: LabelConfig, head: ProxyHead, scored_ids: IndexArray,
              order: PoolOrder, n_labeled: int) -> tuple[str, list[dict[str, Any]]]:
        settings, scores = self.ctx.settings, order.scores
        assert scores is not None  # the fast update always has a head
        version = self._version_name()
        save_fast_version(checkpoint_dir(settings.model_dir, self.project_id, version), head, state.label_config,
                          scored_ids, scores.outputs, scores.confidence, scores.uncertainty,
                          {"project": self.project_id, "version": version, "encoder": state.feature_source,
                           "feature_key": state.feature_key, "control_name": config.control_name,
                           "strategy": settings.strategy, "labeled": n_labeled,
                           "estimate": head.estimate.to_dict() if head.estimate else {}})
        picks = pick_audits(self.ctx, self.project_id, self.seq, order.top, np.flatnonzero(~scores.empty))
        self.audits = [int(scored_ids[i]) for i in picks.audit_items]
        self.ordered = [int(scored_ids[i]) for i in picks.ordered_items]
        predictions = [{"task": int(scored_ids[i]), "score": score, "model_version": version,
                        "result": entry(scores.outputs[i], scores.confidence[i], scores.uncertainty[i], config).result}
                       for i, score in zip(picks.items, slot_scores(picks, order.top, scores.confidence), strict=True)]
        return version, predictions

    def _outcome(self, version: str, order: PoolOrder, scored_ids: IndexArray, pool_ids: list[int], pushed: int,
                 predictions: list[dict[str, Any]], head: ProxyHead, labels: _Labels,
                 notes: FeatureNotes) -> FastOutcome:
        settings, n = self.ctx.settings, len(labels.y)
        estimate = head.estimate.to_dict() if head.estimate else {}
        rest = len(predictions[FIRST_PUSH:])
        cold = (f"cold start ({n} of {settings.fast_cold_start} labels): the {len(order.top)} most typical "
                "unlabeled texts (k-means over the pool's features) come first; " if order.phase == "typical" else "")
        message = (cold + f"{len(scored_ids)} pool tasks ordered by the proxy head ({n} labels, CV accuracy "
                   f"{estimate.get('cv_accuracy')}); top {pushed} pushed to Label Studio before the switch"
                   + (f", {rest} more queued after it" if rest else ""))
        assert order.scores is not None
        return FastOutcome(
            FastStatus.PUBLISHED, message, version=version, labeled=n, pool_size=len(pool_ids), order=order.phase,
            scored=int(len(scored_ids)), pushed=pushed + rest, pushed_before_switch=pushed,
            empty_texts=int(order.scores.empty.sum()), estimate=estimate, conversion=labels.conversion, notes=notes,
            audits=len(self.audits), stopping=self.stopping or None,
            seconds={k: round(v, 4) for k, v in self.seconds.items()})
