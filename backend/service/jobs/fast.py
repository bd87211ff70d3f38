"""The fast path: a new order in Label Studio within seconds of each annotation.

    fast_update     (queue "fast")      fetch the labels, fit `ProxyHead` on their pool features,
                                        score the whole pool (one matrix product), save it as a
                                        fast version, push the FIRST_PUSH most uncertain tasks'
                                        predictions one by one, switch LS's model_version, publish
    extend_fast_version (queue "scoring") the rest of the top-K, after the switch (off the path)
    cross_validate_job  (queue "scoring")   the proxy head's CV estimate when due (off the latency path)
    build_features  (queue "scoring")   list the pool, fan out `encode_chunk` jobs for the tasks
    encode_chunk x N                    without features (FEATURE_MODEL's mean-pooled float16 vectors)
    features_ready                      mark the set complete, ask for a fast update
    prune_ls_job    (queue "scoring")   delete superseded versions' predictions in LS, off the fast path

Annotation events ask for a fast update (`request_fast_update`); at most one waits per project,
so a burst of events folds into one run, and events during a run queue exactly one more. Every
outcome, including each kind of bad input, is a defined status with a message in the project's
``fast_path`` (``GET /projects/<id>``); none crashes the job.

Aligned features: a full-rescore iteration's scoring chunks also write the fine-tuned encoder's
features of the pool (the same forward pass, `LoadedCheckpoint.score_and_encode`). When that
fine-tune wins the serving choice, a feature build completes the set (the labeled tasks, a few
hundred texts) and the fast path goes on from it: the head is re-fitted on the fine-tuned model's
features at each annotation instead of freezing the order until the next iteration. The pretrained
encoder's set is kept: the serving choice compares the fine-tune with the proxy on *those*
features, because a head on the fine-tuned features would be cross-validated on the very labels
the encoder was trained on (an optimistic estimate).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import redis
from rq import get_current_job
from rq.job import Job

from backend.engine.acquisition.cold_start import typical_order
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.proxy import HeadEstimate, ProxyHead
from backend.engine.selection import finetune_beats_proxy, switch_margin
from backend.engine.types import TaskType
from backend.labeling import (
    LabelConfig,
    MissingTextFieldError,
    parse_label_config,
    result_choices,
    task_text,
    tasks_to_examples,
)
from backend.service.checkpoints import FAST_PREFIX, checkpoint_dir, prune_checkpoints
from backend.service.fast_versions import entry, proxy_strategy, save_fast_version, score_probs
from backend.service.features import FeatureSet, base_key, finetuned_key
from backend.service.jobs.common import META_PROJECT, after_all, enqueue
from backend.service.ls_errors import LabelStudioError
from backend.service.records import UNTRAINED, ProjectState
from backend.service.runtime import JobContext, context

log = logging.getLogger(__name__)

FAST_JOB_TIMEOUT = 600
SUPERSEDED = "superseded"  # a fast update with a later sequence number published first
TYPICAL_FIELD = "typical"  # + ":<feature key>:<count>": the cold start's task ids, most typical first
FAST_CV_FIELD = "fast_cv"  # the last CV's result: C, estimate, labels and classes it saw
CV_REFRESH_GROWTH = 1.2  # the CV reruns once the labels grew by 20% (cheap early, rare later)
FIRST_PUSH = 4  # of the FAST_TOP_K predictions, created before LS's switch (each POST costs LS ~21 ms idle,
# ~250 ms on a loaded 2-core machine); the rest follow in a "scoring" job after it. /next orders by
# score, so it serves the first ones (the most uncertain) either way.
FEATURE_JOB_TIMEOUT = 3600
SERVING_RULE = ("the fine-tuned model serves once its accuracy on labels that arrived after it was trained "
                "(at least FINETUNE_MIN_HELDOUT of them) beats the proxy head's cross-validated accuracy by more "
                "than one standard error of that held-out accuracy; until then the proxy head serves")


# ------------------------------------------------------------------------------------ requests


def fast_path_blocker(ctx: JobContext, state: ProjectState | None) -> str | None:
    """Why this project gets no fast update now, or None."""
    if not ctx.settings.fast_enabled:
        return "FAST_PATH=off: only full iterations change the order"
    if state is None:
        return "unknown project"
    if not ctx.settings.label_studio_configured:
        return "the fast path needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (it pushes to Label Studio)"
    if state.task_type is not TaskType.CLASSIFICATION:
        return ("tagging (NER) projects have no fast path (the proxy head classifies whole texts); "
                "full iterations order the pool")
    if state.finetune_won and not state.feature_source_version:
        return ("the fine-tuned model serves (it measured better than the proxy head); the fast path resumes on "
                "its features once they are complete")
    return None


def aligned_features_wanted(ctx: JobContext, state: ProjectState | None) -> bool:
    """Whether scoring chunks should keep the fine-tuned encoder's pool features: whenever the fast
    path could run, whichever model serves now."""
    return state is not None and fast_path_blocker(ctx, _without_win(state)) is None


def base_feature_target(ctx: JobContext) -> tuple[str, str, str]:
    """(key, source, version) of the pretrained encoder's features (FEATURE_MODEL)."""
    source = ctx.settings.feature_encoder
    return base_key(source), source, ""


def follow_serving_model(ctx: JobContext, project_id: int, version: str, served: str,
                         full_rescore: bool) -> str | None:
    """After a published iteration: when its fine-tune won and scored the whole pool (its chunks
    kept the pool's features), complete that set so the fast path goes on from it; with no set at
    all yet, build the pretrained encoder's. Returns the feature build's job id when one was queued.
    (A UPS iteration's winner keeps the earlier winner's features, or none: encoding the whole pool
    again would spend the inference UPS saves.)"""
    state = ctx.store.get_project(project_id)
    if not aligned_features_wanted(ctx, state):
        return None
    assert state is not None
    if served == "finetuned" and state.finetune_won and full_rescore:
        target = (finetuned_key(version), str(checkpoint_dir(ctx.settings.model_dir, project_id, version)), version)
        return request_features(ctx, project_id, f"aligned features of {version}", target=target)
    if not state.feature_key:
        return request_features(ctx, project_id, "after a full iteration")
    return None


def drop_unused_features(ctx: JobContext, state: ProjectState) -> None:
    """Before a full rescore writes a new fine-tune's set: delete the sets of fine-tunes that lost
    (7.7 MB per 10k tasks each), keeping the one in use, the pretrained encoder's and the latest
    fine-tune's (its build may still be completing)."""
    keep = {state.feature_key, base_feature_target(ctx)[0], finetuned_key(state.acq_version)}
    ctx.features.drop_others(state.project_id, keep)
    key = ctx.store.key(state.project_id)  # and the cold start's typical sets computed on the dropped ones
    stale = [name for name in ctx.store.r.hkeys(key)
             if name.startswith(f"{TYPICAL_FIELD}:") and name.split(":")[1] not in keep]
    if stale:
        ctx.store.r.hdel(key, *stale)


def use_base_features(ctx: JobContext, project_id: int) -> None:
    """The proxy serves again: its head works on the pretrained encoder's features (kept on disk;
    tasks missing from them are encoded by the next fast update or a build)."""
    state = ctx.store.get_project(project_id)
    if state is not None and state.feature_source_version:
        key, source, _ = base_feature_target(ctx)
        ctx.store.set_fields(project_id, feature_key=key, feature_source=source, feature_source_version="")


def request_fast_update(ctx: JobContext, project_id: int, reason: str) -> dict[str, Any]:
    """Queue one fast update unless one is waiting (it will read the new labels). Never works
    here: callers are webhooks with LS's 1 s budget."""
    state = ctx.store.get_project(project_id)
    blocker = fast_path_blocker(ctx, state)
    if blocker is not None:
        if state is not None and (state.fast_status or {}).get("message") != blocker:
            ctx.store.set_fast_status(project_id, {"status": "off", "message": blocker})
        return {"fast": "off"}
    ctx.store.set_fields(project_id, fast_last_event=time.time())
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


def request_features(ctx: JobContext, project_id: int, reason: str,
                     target: tuple[str, str, str] | None = None) -> str:
    """Queue a build of the missing features of `target` (key, encoder source, fine-tuned version;
    default: the set the fast path uses), one build per project at a time; returns its job id."""
    job_id = f"features-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    holder = ctx.store.claim(project_id, "features-build", job_id, FEATURE_JOB_TIMEOUT)
    if holder is not None:
        return holder
    state = ctx.store.get_project(project_id)
    key, source, version = target or _feature_target(ctx, state)
    try:
        enqueue(ctx.queues.scoring, build_features, (int(project_id), key, source, version), job_id=job_id,
                timeout=FEATURE_JOB_TIMEOUT, meta={META_PROJECT: int(project_id), "build": job_id},
                on_failure=on_features_failure, description=f"pool features, project {project_id} ({reason})")
    except redis.exceptions.RedisError:
        ctx.store.release(project_id, "features-build", job_id)
        raise
    return job_id


def _feature_target(ctx: JobContext, state: ProjectState | None) -> tuple[str, str, str]:
    """(key, encoder source, fine-tuned version or "") of the feature set to complete."""
    if state is not None and state.feature_key:
        return state.feature_key, state.feature_source, state.feature_source_version
    return base_feature_target(ctx)


# ------------------------------------------------------------------------------------ fast update


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
            last = float(ctx.store.r.hget(ctx.store.key(project_id), "fast_last_event") or 0)
            wait = last + delay - time.time()
            if wait <= 0:
                break
            time.sleep(min(wait, 0.25))
    return run_fast_update(ctx, project_id, reason, seq, job_id=job_id)


class _Skip(Exception):
    """A defined outcome that publishes nothing: the status and message say why."""

    def __init__(self, status: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def run_fast_update(ctx: JobContext, project_id: int, reason: str, seq: int | None = None,
                    *, job_id: str = "", selection: dict | None = None) -> dict[str, Any]:
    """Fit the proxy head, order the pool, publish a fast version; returns (and records) the
    outcome. Label Studio errors and bad input become a status, not an exception."""
    t0 = time.perf_counter()
    if seq is None:
        seq = int(ctx.store.r.hincrby(ctx.store.key(project_id), "fast_seq", 1))
    base = {"reason": reason, "job": job_id or None, "seq": seq}
    try:
        outcome = _fast_update(ctx, project_id, seq, base, t0, selection)
    except _Skip as skip:
        outcome = {**base, "status": skip.status, "message": skip.message, **skip.extra,
                   "seconds": {"total": round(time.perf_counter() - t0, 4)}}
    except LabelStudioError as exc:
        outcome = {**base, "status": "failed", "message": f"Label Studio: {exc}"[:1000],
                   "seconds": {"total": round(time.perf_counter() - t0, 4)}}
    if outcome["status"] != SUPERSEDED:  # the newer update's status is the one to show
        ctx.store.set_fast_status(project_id, outcome)
    log.info("project %s: fast update %s: %s", project_id, outcome["status"], outcome.get("message", ""))
    return outcome


def _labels(ctx: JobContext, project_id: int, config: LabelConfig) -> tuple[Any, set[int], float]:
    t = time.perf_counter()
    labeled = ctx.ls.labeled_tasks(project_id)
    report = tasks_to_examples(labeled, config)
    return report, {int(task["id"]) for task in labeled}, time.perf_counter() - t


def _fast_update(ctx: JobContext, project_id: int, seq: int, base: dict, t0: float,
                 selection: dict | None) -> dict[str, Any]:
    store, settings = ctx.store, ctx.settings
    state = store.get_project(project_id)
    blocker = fast_path_blocker(ctx, state)
    if blocker is not None:
        raise _Skip("off", blocker)
    assert state is not None
    config = parse_label_config(state.label_config, state.control_name or None)
    if not state.feature_key or not store.pool_exists(project_id):
        build = request_features(ctx, project_id, "first fast update")
        raise _Skip("waiting_for_features", f"pool features are being computed (job {build}); the first "
                    "fast update follows when they are ready", features_job=build)
    report, labeled_ids, fetch_s = _labels(ctx, project_id, config)
    conversion = report.as_dict(max_warnings=5)
    store.pool_remove(project_id, labeled_ids)
    pool_ids = store.pool_ids(project_id)
    if not report.examples:
        raise _Skip("skipped", f"no usable labeled task yet ({report.summary()}); the order is unchanged",
                    conversion=conversion)
    labels = [list(ex.labels) for ex in report.examples]
    seen = sorted({label for row in labels for label in row})
    if not config.schema.multi_label and len(seen) < 2:
        raise _Skip("skipped", f"the labels hold one class only ({', '.join(seen)}); the proxy head needs two "
                    "classes to order the pool, the order is unchanged", conversion=conversion, classes=seen)
    if not pool_ids:
        raise _Skip("skipped", "the pool is empty (every task is labeled): nothing to order",
                    conversion=conversion, labeled=len(labels))

    t = time.perf_counter()
    features, notes = _features_for(ctx, project_id, state, [int(i) for i in report.task_ids], report, pool_ids)
    encode_s = time.perf_counter() - t
    lab_rows, lab_found = features.rows([int(i) for i in report.task_ids])
    y = [labels[i] for i in np.flatnonzero(lab_found)]
    if not config.schema.multi_label and len({row[0] for row in y}) < 2:
        raise _Skip("waiting_for_features", "features of the labeled tasks are still being computed; "
                    "the order is unchanged", conversion=conversion, **notes)
    t = time.perf_counter()
    x_lab = features.matrix[lab_rows[lab_found]]
    prev_cv, cv_due = _cv_plan(store, project_id, y, state.feature_key)
    try:  # one fit (C set by the label count); the CV estimate runs after the switch when due
        head = ProxyHead(config.schema, settings.seed).fit(x_lab, y, estimate=False)
    except NotEnoughLabelsError as exc:
        raise _Skip("skipped", str(exc), conversion=conversion) from None
    if prev_cv:
        head.estimate = HeadEstimate(prev_cv.get("cv_accuracy"), int(prev_cv.get("folds", 0)), float(prev_cv["c"]))
    fit_s = time.perf_counter() - t

    t = time.perf_counter()
    pool_rows, pool_found = features.rows(pool_ids)
    scored_ids = np.asarray(pool_ids, np.int64)[pool_found]
    all_probs, all_empty = head.predict_pool(features.matrix)  # every row: cheaper than gathering the pool's
    probs, empty = all_probs[pool_rows[pool_found]], all_empty[pool_rows[pool_found]]
    strategy = proxy_strategy(settings.strategy)
    confidence, uncertainty = score_probs(probs, config.schema.multi_label, strategy)
    confidence[empty], uncertainty[empty] = 1.0, 0.0  # empty texts (zero vectors): nothing to learn, last
    k = min(settings.fast_top_k, int((~empty).sum()))
    typical = _cold_start(ctx, project_id, state.feature_key, features, scored_ids, len(y))
    if len(typical):  # the first labels: only the most typical unlabeled texts hold this version,
        top = typical[:k]  # lowest score first (LS's order: those created before the switch lead)
        top = top[np.argsort(confidence[top], kind="stable")]
    else:
        top = np.argsort(-uncertainty, kind="stable")[:k]
    score_s = time.perf_counter() - t

    t = time.perf_counter()
    version = f"{FAST_PREFIX}{seq}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    estimate = head.estimate.to_dict() if head.estimate else {}
    save_fast_version(checkpoint_dir(settings.model_dir, project_id, version), head, state.label_config,
                      scored_ids, probs, confidence, uncertainty,
                      {"project": project_id, "version": version, "encoder": state.feature_source,
                       "feature_key": state.feature_key, "control_name": config.control_name,
                       "strategy": settings.strategy, "labeled": len(y), "estimate": estimate})
    predictions = [{"task": int(scored_ids[i]), "result": entry(probs[i], confidence[i], uncertainty[i], config).result,
                    "score": float(confidence[i]), "model_version": version} for i in top]
    if not predictions:
        raise _Skip("skipped", "no pool task has text to order (all empty)", conversion=conversion)
    save_s = time.perf_counter() - t

    t = time.perf_counter()
    with store.ls_switch_lock(project_id):
        locked = time.perf_counter()
        current = store.get_project(project_id)
        if current is None or current.fast_published_seq >= seq:
            raise _Skip(SUPERSEDED, "a newer fast update published first")
        blocker = fast_path_blocker(ctx, current)
        if blocker is not None:
            raise _Skip("off", blocker)
        pushed = ctx.ls.create_predictions(predictions[:FIRST_PUSH])
        created = time.perf_counter()
        ctx.ls.set_model_version(project_id, version)
        switched = time.perf_counter()
        why = {**(selection or current.serving_reason or {}), "proxy": {**estimate, "labeled": len(y)},
               "rule": SERVING_RULE, "features": _features_note(current)}
        store.publish_version(project_id, version, None, None, serve=True, fast_seq=seq)
        store.set_fields(project_id, serving_model="proxy", serving_reason=why)
    push_s = switched - t
    if predictions[FIRST_PUSH:]:
        request_extend(ctx, project_id, version, predictions[FIRST_PUSH:])
    request_prune(ctx, project_id)
    seconds = {"fetch_labels": fetch_s, "encode": encode_s, "fit": fit_s, "score": score_s, "save": save_s,
               "push_and_switch": push_s,
               "lock_wait": locked - t, "create_predictions": created - locked, "switch": switched - created,
               "total": switched - t0}
    if cv_due:  # off the fast worker: the next updates report the accuracy it estimates
        request_cv(ctx, project_id, state.feature_key, [int(report.task_ids[i]) for i in np.flatnonzero(lab_found)], y)
    return {**base, "status": "published", "version": version, "labeled": len(y), "pool_size": len(pool_ids),
            "order": "typical" if len(typical) else "uncertainty",
            "scored": int(len(scored_ids)), "pushed": int(pushed) + len(predictions[FIRST_PUSH:]),
            "pushed_before_switch": int(pushed),
            "empty_texts": int(empty.sum()),
            "estimate": estimate, "conversion": conversion, **notes,
            "message": (f"cold start ({len(y)} of {settings.fast_cold_start} labels): the {len(top)} most typical "
                        "unlabeled texts (k-means over the pool's features) come first; "
                        if len(typical) else "")
                       + f"{len(scored_ids)} pool tasks ordered by the proxy head ({len(y)} labels, CV accuracy "
                       f"{estimate.get('cv_accuracy')}); top {pushed} pushed to Label Studio before the switch"
                       + (f", {len(predictions[FIRST_PUSH:])} more queued after it" if predictions[FIRST_PUSH:] else ""),
            "seconds": {k2: round(v, 4) for k2, v in seconds.items()}}


def _cold_start(ctx: JobContext, project_id: int, feature_key: str, features: FeatureSet, scored_ids: np.ndarray,
                n_labeled: int) -> np.ndarray:
    """Positions in `scored_ids` of the typical texts not labeled yet, most typical first, while
    the labels are fewer than FAST_COLD_START (else empty). The typical set depends only on the
    features, so it is computed once per feature set (~0.4 s at 10k tasks, 1.6 s at 100k) and kept."""
    wanted = ctx.settings.fast_cold_start
    if n_labeled >= wanted or not len(features.ids):
        return np.zeros(0, np.int64)
    field_name = f"{TYPICAL_FIELD}:{feature_key}:{wanted}"
    raw = ctx.store.r.hget(ctx.store.key(project_id), field_name)
    if raw is None:
        rows = typical_order(features.matrix, wanted, ctx.settings.seed)
        ids = [int(features.ids[r]) for r in rows]
        ctx.store.r.hset(ctx.store.key(project_id), field_name, json.dumps(ids))
    else:
        ids = json.loads(raw)
    found = np.flatnonzero(np.isin(scored_ids, ids))  # vectorised: no per-task dict over a 100k pool
    position = {int(scored_ids[i]): int(i) for i in found}
    return np.asarray([position[t] for t in ids if t in position], np.int64)


def _features_note(state: ProjectState) -> str:
    if state.feature_source_version:
        return (f"the head works on the features of {state.feature_source_version}, the fine-tune that won the "
                "serving choice (its CV accuracy on them is optimistic: that encoder was trained on these labels)")
    return f"the head works on the pretrained encoder's features ({state.feature_source})"


def _cv_plan(store: Any, project_id: int, y: list[list[str]], feature_key: str) -> tuple[dict | None, bool]:
    """(the last CV's record, whether a new CV is due): due when there is none, the classes seen
    or the features changed, or the labels grew by CV_REFRESH_GROWTH since; between, the fast
    versions report the last one's estimate."""
    raw = store.r.hget(store.key(project_id), FAST_CV_FIELD)
    prev = json.loads(raw) if raw else None
    classes = sorted({label for row in y for label in row})
    if prev is None or prev.get("c") is None or prev.get("classes") != classes \
            or prev.get("feature_key", feature_key) != feature_key:
        return prev if prev and prev.get("c") is not None else None, True
    return prev, len(y) >= CV_REFRESH_GROWTH * int(prev.get("labeled", 0))


def request_cv(ctx: JobContext, project_id: int, feature_key: str, task_ids: list[int], y: list[list[str]]) -> None:
    """Queue the CV estimate (queue "scoring"; at most one queued per project): up to 5 fits, which
    on a loaded 2-core machine would otherwise hold up the next fast update."""
    job_id = f"cv-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    if ctx.store.claim(project_id, "cv-queued", job_id, FAST_JOB_TIMEOUT) is None:
        enqueue(ctx.queues.scoring, cross_validate_job, (int(project_id), feature_key, task_ids, y), job_id=job_id,
                timeout=FAST_JOB_TIMEOUT, meta={META_PROJECT: int(project_id)}, on_failure=on_cv_failure,
                description=f"proxy head CV on {len(y)} labels, project {project_id}")


def cross_validate_job(project_id: int, feature_key: str, task_ids: list[int], y: list[list[str]]) -> dict[str, Any]:
    """The proxy head's CV accuracy on these labels: recorded as the estimate later fast updates
    report, and as the proxy's estimate in the serving reason while the proxy serves."""
    ctx = context()
    job = get_current_job()
    if job is not None:
        ctx.store.release(project_id, "cv-queued", job.id)
    state = ctx.store.get_project(project_id)
    if state is None:
        return {"skipped": "unknown project"}
    config = parse_label_config(state.label_config, state.control_name or None)
    rows, found = ctx.features.load(project_id, feature_key).rows(task_ids)
    labels = [y[i] for i in np.flatnonzero(found)]
    features = ctx.features.load(project_id, feature_key).matrix[rows[found]]
    try:
        estimate = ProxyHead(config.schema, ctx.settings.seed).cross_validate(features, labels).to_dict()
    except (NotEnoughLabelsError, ValueError) as exc:
        return {"skipped": str(exc)[:300]}
    record = {**estimate, "labeled": len(labels), "classes": sorted({label for row in labels for label in row}),
              "feature_key": feature_key}
    ctx.store.r.hset(ctx.store.key(project_id), FAST_CV_FIELD, json.dumps(record))
    state = ctx.store.get_project(project_id)
    if state is not None and state.serving_model == "proxy":
        why = dict(state.serving_reason or {})
        ctx.store.set_fields(project_id, serving_reason={**why, "proxy": {**estimate, "labeled": len(labels)}})
    return record


def on_cv_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    context().store.release(int(job.meta[META_PROJECT]), "cv-queued", job.id)


def _features_for(ctx: JobContext, project_id: int, state: ProjectState, labeled_ids: list[int], report: Any,
                  pool_ids: list[int]) -> tuple[FeatureSet, dict[str, Any]]:
    """The project's features, with the missing labeled and pool tasks encoded here when they are
    few (FAST_ENCODE_LIMIT), else queued for a build; notes say what is missing."""
    store = ctx.features
    features = store.load(project_id, state.feature_key)
    missing_labeled = features.missing(labeled_ids)
    missing_pool = features.missing(pool_ids)
    notes: dict[str, Any] = {}
    if not missing_labeled and not missing_pool:
        return features, notes
    if len(missing_labeled) + len(missing_pool) <= ctx.settings.fast_encode_limit:
        text_of = {int(t): ex.text for t, ex in zip(report.task_ids, report.examples)}
        ids = missing_labeled + missing_pool
        texts = [text_of.get(t, "") for t in missing_labeled] + [t or "" for t in ctx.store.pool_texts(project_id, missing_pool)]
        store.write(project_id, state.feature_key, ids, encode_texts(ctx, state.feature_source, texts))
        notes["encoded_on_demand"] = len(ids)
        return store.load(project_id, state.feature_key), notes
    build = request_features(ctx, project_id, f"{len(missing_labeled) + len(missing_pool)} tasks without features")
    notes.update(missing_features=len(missing_labeled) + len(missing_pool), features_job=build,
                 features_note=f"{len(missing_pool)} pool tasks have no features yet (job {build} computes them); "
                               "they join the order when it is done")
    return features, notes


def encode_texts(ctx: JobContext, source: str, texts: list[str]) -> np.ndarray:
    """Features for texts; empty texts get a zero vector (recognised as "no text" when scoring)."""
    features = ctx.encoders.get(source).encode([t if t.strip() else "" for t in texts])
    empty = np.array([not t.strip() for t in texts], dtype=bool)
    if empty.any():
        features[empty] = 0
    return features


def on_fast_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """An unexpected error (a bug, a worker that died): recorded in the project's fast_path."""
    ctx = context()
    project_id = int(job.meta[META_PROJECT])
    ctx.store.release(project_id, "fast-queued", job.id)
    name = getattr(exc_type, "__name__", str(exc_type))
    ctx.store.set_fast_status(project_id, {"status": "failed", "job": job.id,
                                           "message": f"fast update failed: {name}: {exc_value}"[:1000]})


# ------------------------------------------------------------------------------------ features


def build_features(project_id: int, key: str, source: str, version: str) -> dict[str, Any]:
    """List the pool (when not cached) and fan out chunk jobs for tasks without features."""
    from backend.service.jobs.stages import sync_pool

    ctx = context()
    job = get_current_job()
    build_id = job.id if job is not None else "inline"
    state = ctx.store.get_project(project_id)
    assert state is not None
    config = parse_label_config(state.label_config, state.control_name or None)
    labeled = ctx.ls.labeled_tasks(project_id)
    labeled_text = {int(t["id"]): _text(t, config) for t in labeled}
    pool_ids, _ = sync_pool(ctx, project_id, config, set(labeled_text), state.iteration)
    features = ctx.features.load(project_id, key)
    todo = features.missing(sorted(labeled_text)) + features.missing(pool_ids)
    pool_text = dict(zip(pool_ids, ctx.store.pool_texts(project_id, pool_ids)))
    texts = [labeled_text.get(t) or pool_text.get(t) or "" for t in todo]
    size = ctx.settings.score_chunk_size
    meta = {META_PROJECT: int(project_id), "build": build_id}
    chunks = [enqueue(ctx.queues.scoring, encode_chunk, (int(project_id), key, source, todo[i:i + size], texts[i:i + size]),
                      timeout=FEATURE_JOB_TIMEOUT, meta=meta, on_failure=on_features_failure,
                      retries=ctx.settings.chunk_retries,
                      description=f"encode {len(todo[i:i + size])} tasks, project {project_id}")
              for i in range(0, len(todo), size)]
    enqueue(ctx.queues.scoring, features_ready, (int(project_id), key, source, version, build_id),
            timeout=FEATURE_JOB_TIMEOUT, meta=meta, on_failure=on_features_failure, depends_on=after_all(chunks),
            description=f"pool features ready, project {project_id}")
    ctx.store.set_fast_status(project_id, {"status": "building_features", "job": build_id,
                                           "message": f"encoding {len(todo)} tasks in {len(chunks)} chunk jobs "
                                                      f"with {source}", "encoder": source})
    return {"tasks": len(todo), "chunks": len(chunks)}


def _text(task: dict, config: LabelConfig) -> str:
    try:
        return task_text(task, config)
    except MissingTextFieldError:
        return ""


def encode_chunk(project_id: int, key: str, source: str, task_ids: list[int], texts: list[str]) -> dict[str, Any]:
    ctx = context()
    t = time.perf_counter()
    ctx.features.write(project_id, key, task_ids, encode_texts(ctx, source, texts))
    return {"tasks": len(task_ids), "seconds": time.perf_counter() - t}


def features_ready(project_id: int, key: str, source: str, version: str, build_id: str) -> dict[str, Any]:
    """The set is complete: the proxy now works on it (older sets are deleted); a fast update follows."""
    ctx = context()
    ctx.store.release(project_id, "features-build", build_id)
    state = ctx.store.get_project(project_id)
    if version and (state is None or not state.finetune_won or state.acq_version != version):
        return {"skipped": f"{version} no longer serves; its features are not used"}  # pruned by the next switch
    ctx.store.set_fields(project_id, feature_key=key, feature_source=source, feature_source_version=version)
    ctx.features.drop_others(project_id, {key, base_feature_target(ctx)[0]})  # the serving choice reads the base set
    return request_fast_update(ctx, project_id, f"features of {version} ready" if version else "pool features ready")


def on_features_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    if job.should_retry:
        return
    ctx = context()
    project_id = int(job.meta[META_PROJECT])
    build_id = job.meta.get("build", job.id)
    ctx.store.release(project_id, "features-build", build_id)
    name = getattr(exc_type, "__name__", str(exc_type))
    ctx.store.set_fast_status(project_id, {"status": "failed", "job": job.id,
                                           "message": f"pool feature build failed: {name}: {exc_value}"[:1000]})


# ------------------------------------------------------------------------------------ the rest of the top-K


def request_extend(ctx: JobContext, project_id: int, version: str, predictions: list[dict]) -> None:
    """Queue the creation of a fast version's predictions past FIRST_PUSH (queue "scoring")."""
    enqueue(ctx.queues.scoring, extend_fast_version, (int(project_id), version, predictions),
            timeout=FAST_JOB_TIMEOUT, meta={META_PROJECT: int(project_id)}, on_failure=on_extend_failure,
            description=f"{len(predictions)} more predictions of {version}, project {project_id}")


def extend_fast_version(project_id: int, version: str, predictions: list[dict]) -> dict[str, Any]:
    """Create them while `version` still serves (Uncertainty sampling then has FAST_TOP_K tasks
    to hand out); once a newer version serves they are moot and skipped."""
    ctx = context()
    state = ctx.store.get_project(project_id)
    if state is None or state.version != version:
        return {"created": 0, "skipped": f"{version} no longer serves"}
    try:
        # one at a time: LS serves requests one by one, so /next waits behind at most one of these
        return {"created": ctx.ls.create_predictions(predictions, workers=1)}
    except LabelStudioError as exc:  # the first FIRST_PUSH serve meanwhile; the next update pushes anew
        log.warning("project %s: the rest of %s not pushed: %s", project_id, version, exc)
        return {"created": 0, "error": str(exc)[:500]}


def on_extend_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    log.warning("project %s: %s failed: %s", job.meta.get(META_PROJECT), job.description, exc_value)


# ------------------------------------------------------------------------------------ pruning


def request_prune(ctx: JobContext, project_id: int) -> None:
    """Queue one deletion of superseded predictions in LS (queue "scoring": off the fast path)."""
    job_id = f"prune-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    if ctx.store.claim(project_id, "prune-queued", job_id, FEATURE_JOB_TIMEOUT) is None:
        enqueue(ctx.queues.scoring, prune_ls_job, (int(project_id), job_id), job_id=job_id, timeout=FEATURE_JOB_TIMEOUT,
                meta={META_PROJECT: int(project_id)}, on_failure=on_prune_failure,
                description=f"delete superseded predictions, project {project_id}")


def prune_ls_job(project_id: int, job_id: str) -> dict:
    from backend.service.jobs.stages import prune_ls_versions

    ctx = context()
    ctx.store.release(project_id, "prune-queued", job_id)
    outcome = prune_ls_versions(ctx, project_id, keep=set())
    # fast versions only: a fine-tune's folder may belong to an iteration still scoring the pool
    # (not yet published, so not in checkpoints_to_keep); publish_iteration prunes those
    root = checkpoint_dir(ctx.settings.model_dir, project_id, "x").parent
    others = {p.name for p in root.iterdir() if not p.name.startswith(FAST_PREFIX)} if root.is_dir() else set()
    prune_checkpoints(ctx.settings.model_dir, project_id,
                      keep=ctx.store.checkpoints_to_keep(project_id, ctx.settings.keep_versions) | others)
    return outcome


def on_prune_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    context().store.release(int(job.meta[META_PROJECT]), "prune-queued", job.id)


# ------------------------------------------------------------------------------------ which model serves


def measure_selection(ctx: JobContext, project_id: int, data: Any) -> dict[str, Any]:
    """The estimates that decide which model serves after a full iteration (`SERVING_RULE`):
    the previous fine-tune's accuracy on the labels that arrived after it was trained (its
    predictions are in the store: held out, free), against the proxy head's cross-validated
    accuracy on all labels. Never raises: a missing number is stated, not guessed."""
    state: ProjectState = data.state
    selection: dict[str, Any] = {"rule": SERVING_RULE}
    blocker = fast_path_blocker(ctx, state if not state.finetune_won else _without_win(state))
    if blocker is not None:
        return {**selection, "serve": "finetuned", "why_serve": blocker}
    labeled = {int(t): ex for t, ex in zip(data.report.task_ids, data.report.examples)}
    selection["finetuned"] = _finetuned_estimate(ctx, project_id, state.acq_version, labeled)
    selection["proxy"] = _proxy_estimate(ctx, project_id, state, data)
    ft, px = selection["finetuned"], selection["proxy"]
    ft_acc = ft.get("heldout_accuracy") if ft.get("heldout", 0) >= ctx.settings.finetune_min_heldout else None
    px_acc = px.get("cv_accuracy")
    margin = None if ft_acc is None or px_acc is None else round(switch_margin(ft_acc, px_acc, ft["heldout"]), 4)
    if margin is not None:
        selection["margin"] = margin
    if ft_acc is not None and (px_acc is None or finetune_beats_proxy(ft_acc, px_acc, ft["heldout"])):
        selection.update(serve="finetuned", finetune_won=True,
                         why_serve=f"fine-tuned held-out accuracy {ft_acc} > proxy CV accuracy {px_acc} + margin "
                                   f"{margin}" if px_acc is not None else
                                   f"fine-tuned held-out accuracy {ft_acc}; the proxy has no CV estimate")
    elif px_acc is not None:
        selection.update(serve="proxy", finetune_won=False,
                         why_serve=f"fine-tuned held-out accuracy {ft_acc} <= proxy CV accuracy {px_acc} + margin "
                                   f"{margin} ({ft['heldout']} held-out labels)"
                         if ft_acc is not None else f"proxy CV accuracy {px_acc}; the fine-tune has no held-out "
                         f"estimate yet ({ft.get('heldout', 0)} of {ctx.settings.finetune_min_heldout} labels)")
    else:
        selection.update(serve="finetuned", finetune_won=False,
                         why_serve="neither model has an estimate yet (too few labels per class, or no features): "
                                   "the fine-tuned model serves")
    return selection


def _without_win(state: ProjectState) -> ProjectState:
    return replace(state, finetune_won=False)  # a full iteration re-decides, whoever served before


def _finetuned_estimate(ctx: JobContext, project_id: int, prev: str, labeled: dict[int, Any]) -> dict[str, Any]:
    if prev == UNTRAINED:
        return {"heldout": 0, "heldout_accuracy": None, "note": "no earlier fine-tune to measure"}
    trained_on = ctx.store.trained_on(project_id, prev)
    if trained_on is None:
        return {"heldout": 0, "heldout_accuracy": None, "note": f"{prev}'s training labels are not recorded"}
    later = [t for t in labeled if t not in trained_on]
    entries = ctx.store.get_scores(project_id, prev, later)
    hits = [set(result_choices(entries[t].result)) == set(labeled[t].labels) for t in later if t in entries]
    return {"version": prev, "heldout": len(hits), "heldout_accuracy": round(sum(hits) / len(hits), 4) if hits else None,
            "note": f"accuracy of {prev} on the labels that arrived after it was trained"}


def _proxy_estimate(ctx: JobContext, project_id: int, state: ProjectState, data: Any) -> dict[str, Any]:
    """CV accuracy of the head on the pretrained encoder's features, even while the fast path runs on
    a fine-tune's (those were trained on these labels: their CV accuracy would flatter the proxy)."""
    if not state.feature_key:
        return {"cv_accuracy": None, "note": "no pool features yet"}
    features = ctx.features.load(project_id, base_feature_target(ctx)[0])
    ids = [int(t) for t in data.report.task_ids]
    rows, found = features.rows(ids)
    labels = [list(data.report.examples[i].labels) for i in np.flatnonzero(found)]
    try:
        head = ProxyHead(data.config.schema, ctx.settings.seed).fit(features.matrix[rows[found]], labels)
    except (NotEnoughLabelsError, ValueError) as exc:
        return {"cv_accuracy": None, "note": str(exc)[:300]}
    estimate = head.estimate.to_dict() if head.estimate else {"cv_accuracy": None}
    return {**estimate, "labeled": len(labels), "missing_features": int((~found).sum())}
