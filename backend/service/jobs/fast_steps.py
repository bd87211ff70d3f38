"""The steps every fast update shares, whatever the task type (`fast_update` classifies texts,
`fast_tagging` tags words): open the project, fetch its labels, the cold start's typical set,
push-switch-publish under the switch lock, and the outcome record."""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from backend.engine.selection import ModelEstimate, ServingDecision
from backend.engine.types import IndexArray
from backend.labeling import ConversionReport, LabelConfig, parse_label_config, tasks_to_examples
from backend.service.checkpoints import FAST_PREFIX
from backend.service.jobs.feature_jobs import FeatureNotes, request_features
from backend.service.jobs.gate import fast_path_blocker, features_note
from backend.service.jobs.serving import SERVING_RULE
from backend.service.jobs.signals import StopPredictions, update_stop_signal
from backend.service.records import FastStatus, ProjectState
from backend.service.runtime import JobContext

FIRST_PUSH = 4  # of the FAST_TOP_K predictions, created before LS's switch (each POST costs LS ~21 ms idle,
# ~250 ms on a loaded 2-core machine); the rest follow in a "scoring" job after it. /next orders by
# score, so it serves the first ones (the most uncertain) either way.


@dataclass
class FastOutcome:
    """One fast update's result: what ``GET /projects/<id>`` shows under ``fast_path``."""

    status: FastStatus
    message: str
    reason: str = ""
    job: str | None = None
    seq: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    version: str | None = None
    labeled: int | None = None
    pool_size: int | None = None
    order: str | None = None
    scored: int | None = None
    rescored: int | None = None  # tagging, large pools: sentences UPS re-scored (the rest kept their scores)
    pushed: int | None = None
    pushed_before_switch: int | None = None
    empty_texts: int | None = None
    estimate: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    classes: list[str] | None = None
    audits: int | None = None  # audit slots among the pushed (drawn uniformly from the pool)
    stopping: dict[str, Any] | None = None  # the stopping signal after this update
    notes: FeatureNotes = field(default_factory=FeatureNotes)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "notes"}
        out["status"] = self.status.value
        return {**out, **self.notes.to_dict()}


class FastSkip(Exception):
    """A defined outcome that publishes nothing: the status and message say why."""

    def __init__(self, status: FastStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra



class FastSteps:
    """One fast update's shared steps, each timed (`_lap`); subclasses add fit, order and save."""

    serving_rule = SERVING_RULE
    audits: list[int]  # task ids of the audit slots this update pushed (`signals.pick_audits`)
    ordered: list[int]  # task ids of the other slots it pushed (the order's)
    stopping: dict[str, Any]  # the stopping signal after this update

    def __init__(self, ctx: JobContext, project_id: int, seq: int, t0: float,
                 decision: ServingDecision | None) -> None:
        self.ctx, self.project_id, self.seq, self.t0, self.decision = ctx, project_id, seq, t0, decision
        self.seconds: dict[str, float] = {}
        self.audits, self.ordered, self.stopping = [], [], {}
        self._mark = time.perf_counter()

    def _lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._mark
        self._mark = now

    def _open(self) -> tuple[ProjectState, LabelConfig]:
        state = self.ctx.store.get_project(self.project_id)
        blocker = fast_path_blocker(self.ctx, state)
        if blocker is not None or state is None:
            raise FastSkip(FastStatus.OFF, blocker or "unknown project")
        if not state.feature_key or not self.ctx.store.pool_exists(self.project_id):
            build = request_features(self.ctx, self.project_id, "first fast update")
            raise FastSkip(FastStatus.WAITING_FOR_FEATURES, f"pool features are being computed (job {build}); the "
                        "first fast update follows when they are ready", notes=FeatureNotes(features_job=build))
        return state, parse_label_config(state.label_config, state.control_name or None)

    def _fetch(self, config: LabelConfig) -> tuple[ConversionReport, dict[str, Any], list[int]]:
        labeled = self.ctx.ls.labeled_tasks(self.project_id)
        report = tasks_to_examples(labeled, config)
        self.ctx.store.set_ground_truth_ids(self.project_id, {int(t) for t in report.ground_truth_ids})
        conversion = report.as_dict(max_warnings=5)
        self.ctx.store.pool_remove(self.project_id, {int(task["id"]) for task in labeled})
        pool_ids = self.ctx.store.pool_ids(self.project_id)
        if not report.examples:
            raise FastSkip(FastStatus.SKIPPED, f"no usable labeled task yet ({report.summary()}); the order is "
                        "unchanged", conversion=conversion)
        self._check_labels(report, config, conversion)
        if not pool_ids:
            raise FastSkip(FastStatus.SKIPPED, "the pool is empty (every task is labeled): nothing to order",
                        conversion=conversion, labeled=len(report.examples))
        return report, conversion, pool_ids

    def _check_labels(self, report: ConversionReport, config: LabelConfig, conversion: dict[str, Any]) -> None:
        """Raise `FastSkip` when the labels cannot fit a head (the task type's own rule)."""

    def _cold_start_labels(self) -> int:
        """Labels taken from the typical set before uncertainty orders (FAST_COLD_START; 0: none)."""
        return self.ctx.settings.fast_cold_start

    def _typical_order(self, features: Any) -> IndexArray:
        """Rows of `features` in cold-start order, most typical first (the task type's own rule)."""
        raise NotImplementedError

    def _typical_positions(self, feature_key: str, features: Any, scored_ids: IndexArray,
                           n_labeled: int) -> IndexArray:
        """Positions in `scored_ids` of the cold start's typical tasks, most typical first, while
        the labels are fewer than FAST_COLD_START. The typical set depends only on the features, so
        it is computed once per feature set (~0.4 s at 10k tasks, 1.6 s at 100k) and kept."""
        store, wanted = self.ctx.store, self._cold_start_labels()
        if n_labeled >= wanted or not len(features.ids):
            return np.zeros(0, np.int64)
        ids = store.typical_ids(self.project_id, feature_key, wanted)
        if ids is None:
            ids = [int(features.ids[r]) for r in self._typical_order(features)]
            store.set_typical_ids(self.project_id, feature_key, wanted, ids)
        found = np.flatnonzero(np.isin(scored_ids, ids))  # vectorised: no per-task dict over a 100k pool
        position = {int(scored_ids[i]): int(i) for i in found}
        return np.asarray([position[t] for t in ids if t in position], np.int64)

    def _after_publish(self, version: str, n_labeled: int, pool_ids: list[int],
                       stop_predictions: StopPredictions) -> None:
        """Remember the audits shown and move the stopping signal (neither may fail the update)."""
        self.ctx.store.record_audits(self.project_id, self.audits, n_labeled, version, self.ordered)
        self.stopping = update_stop_signal(self.ctx, self.project_id, n_labeled, stop_predictions, pool_ids)
        self._lap("signals")

    def _new_audit_labels(self, labeled_ids: list[int]) -> bool:
        """Whether audit tasks were labeled since the last quality estimate."""
        audits = self.ctx.store.audit_ids(self.project_id)
        count = sum(1 for t in labeled_ids if t in audits)
        last = self.ctx.store.quality_estimate(self.project_id) or {}
        return count > 0 and count != last.get("audits")

    def _version_name(self) -> str:
        return f"{FAST_PREFIX}{self.seq}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"

    def _publish(self, version: str, predictions: list[dict[str, Any]], estimate: ModelEstimate) -> int:
        """Push the first predictions, switch LS, publish: under the switch lock, and only when no
        later update published first."""
        store, t = self.ctx.store, time.perf_counter()
        with store.ls_switch_lock(self.project_id):
            locked = time.perf_counter()
            current = store.get_project(self.project_id)
            if current is None or current.fast_published_seq >= self.seq:
                raise FastSkip(FastStatus.SUPERSEDED, "a newer fast update published first")
            blocker = fast_path_blocker(self.ctx, current)
            if blocker is not None:
                raise FastSkip(FastStatus.OFF, blocker)
            pushed = self.ctx.ls.create_predictions(predictions[:FIRST_PUSH])
            created = time.perf_counter()
            self.ctx.ls.set_model_version(self.project_id, version)
            switched = time.perf_counter()
            store.publish_version(self.project_id, version, None, None, serve=True, fast_seq=self.seq)
            store.set_fields(self.project_id, serving_model="proxy",
                             serving_reason=self._why(current, estimate))
        self.seconds.update(push_and_switch=switched - t, lock_wait=locked - t, create_predictions=created - locked,
                            switch=switched - created, total=switched - self.t0)
        return int(pushed)

    def _why(self, current: ProjectState, proxy: ModelEstimate) -> ServingDecision:
        base = self.decision or current.serving_reason or ServingDecision(
            serve="proxy", finetune_won=False, why="no full iteration has compared the models yet: the proxy head "
                                                   "orders the pool between them")
        if proxy.accuracy is None and base.proxy.accuracy is not None:
            proxy = base.proxy  # the last measured estimate stands until the next one
        return replace(base, proxy=proxy, rule=self.serving_rule, features=features_note(current))

