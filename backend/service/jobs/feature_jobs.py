"""The pool's features for the proxy head, computed once per feature set by chunk jobs:

    build_features  (queue "scoring")   list the pool, fan out `encode_chunk` jobs for the tasks
    encode_chunk x N                    without features (mean-pooled float16 vectors; per word for
                                        tagging projects: `WordEncoder`, sub-tokens pooled per word)
    features_ready                      (`fast_update.features_ready`) the set is complete: a fast update follows

A few missing tasks (FAST_ENCODE_LIMIT) are encoded inside the fast update instead (`features_for`).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from rq import get_current_job
from rq.job import Job

from backend.engine.types import FloatArray
from backend.engine.word_features import WordEncoder, WordFeatures
from backend.labeling import ConversionReport, parse_label_config
from backend.labeling.text import sanitize_text, split_words
from backend.service.features import FeatureSet, WordFeatureSet, is_word_key
from backend.service.jobs.common import META_PROJECT, after_all, enqueue
from backend.service.jobs.gate import FeatureTarget, current_feature_target
from backend.service.jobs.ls_sync import sync_pool, text_or_empty
from backend.service.records import ProjectState
from backend.service.runtime import JobContext, context

FEATURE_JOB_TIMEOUT = 3600
# The completion job lives with the fast update it requests; named, not imported, so this module
# stays below it (the fast update queues feature builds).
FEATURES_READY_JOB = "backend.service.jobs.fast_update.features_ready"


def request_features(ctx: JobContext, project_id: int, reason: str, target: FeatureTarget | None = None) -> str:
    """Queue a build of the missing features of `target` (default: the set the fast path uses),
    one build per project at a time; returns its job id (or the running build's)."""
    job_id = f"features-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    holder = ctx.store.claim(project_id, "features-build", job_id, FEATURE_JOB_TIMEOUT)
    if holder is not None:
        return holder
    target = target or current_feature_target(ctx, ctx.store.get_project(project_id))
    try:
        enqueue(ctx.queues.scoring, build_features, (int(project_id), target.key, target.source, target.version),
                job_id=job_id, timeout=FEATURE_JOB_TIMEOUT, meta={META_PROJECT: int(project_id), "build": job_id},
                on_failure=on_features_failure, description=f"pool features, project {project_id} ({reason})")
    except redis.exceptions.RedisError:
        ctx.store.release(project_id, "features-build", job_id)
        raise
    return job_id


def build_features(project_id: int, key: str, source: str, version: str) -> dict[str, Any]:
    """List the pool (when not cached) and fan out chunk jobs for tasks without features."""
    ctx = context()
    job = get_current_job()
    build_id = job.id if job is not None else "inline"
    state = ctx.store.get_project(project_id)
    assert state is not None
    config = parse_label_config(state.label_config, state.control_name or None)
    labeled_text = {int(t["id"]): text_or_empty(t, config) for t in ctx.ls.labeled_tasks(project_id)}
    pool_ids, _ = sync_pool(ctx, project_id, config, set(labeled_text), state.iteration)
    features = load_features(ctx, project_id, key)
    todo = features.missing(sorted(labeled_text)) + features.missing(pool_ids)
    pool_text = dict(zip(pool_ids, ctx.store.pool_texts(project_id, pool_ids), strict=True))
    texts = [labeled_text.get(t) or pool_text.get(t) or "" for t in todo]
    size = ctx.settings.score_chunk_size
    meta = {META_PROJECT: int(project_id), "build": build_id}
    chunks = [enqueue(ctx.queues.scoring, encode_chunk, (int(project_id), key, source, todo[i:i + size],
                                                         texts[i:i + size]),
                      timeout=FEATURE_JOB_TIMEOUT, meta=meta, on_failure=on_features_failure,
                      retries=ctx.settings.chunk_retries,
                      description=f"encode {len(todo[i:i + size])} tasks, project {project_id}")
              for i in range(0, len(todo), size)]
    enqueue(ctx.queues.scoring, FEATURES_READY_JOB, (int(project_id), key, source, version, build_id),
            timeout=FEATURE_JOB_TIMEOUT, meta=meta, on_failure=on_features_failure, depends_on=after_all(chunks),
            description=f"pool features ready, project {project_id}")
    ctx.store.set_fast_status(project_id, {"status": "building_features", "job": build_id,
                                           "message": f"encoding {len(todo)} tasks in {len(chunks)} chunk jobs "
                                                      f"with {source}", "encoder": source})
    return {"tasks": len(todo), "chunks": len(chunks)}


def encode_texts(ctx: JobContext, source: str, texts: list[str]) -> FloatArray:
    """Features for texts; empty texts get a zero vector (recognised as "no text" when scoring)."""
    features = ctx.encoders.get(source).encode([t if t.strip() else "" for t in texts])
    empty = np.array([not t.strip() for t in texts], dtype=bool)
    if empty.any():
        features[empty] = 0
    return features


def encode_words(ctx: JobContext, source: str, texts: list[str]) -> WordFeatures:
    """Per-word features of texts, split into words as the labels are (`split_words`); a text
    without words is a sentence of none."""
    sentences = [[w for w, _, _ in split_words(sanitize_text(t))] if t.strip() else [] for t in texts]
    return WordEncoder(ctx.encoders.get(source)).encode(sentences)


def write_features(ctx: JobContext, project_id: int, key: str, source: str, task_ids: list[int],
                   texts: list[str]) -> None:
    """Encode `texts` as the set `key` holds them (a vector per text, or per word) and add them."""
    if is_word_key(key):
        ctx.features.write_words(project_id, key, task_ids, encode_words(ctx, source, texts))
    else:
        ctx.features.write(project_id, key, task_ids, encode_texts(ctx, source, texts))


def encode_chunk(project_id: int, key: str, source: str, task_ids: list[int], texts: list[str]) -> dict[str, Any]:
    ctx = context()
    t = time.perf_counter()
    write_features(ctx, project_id, key, source, task_ids, texts)
    return {"tasks": len(task_ids), "seconds": time.perf_counter() - t}


def on_features_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException,
                        tb: Any) -> None:
    if job.should_retry:
        return
    ctx = context()
    project_id = int(job.meta[META_PROJECT])
    ctx.store.release(project_id, "features-build", job.meta.get("build", job.id))
    name = getattr(exc_type, "__name__", str(exc_type))
    ctx.store.set_fast_status(project_id, {"status": "failed", "job": job.id,
                                           "message": f"pool feature build failed: {name}: {exc_value}"[:1000]})


@dataclass
class FeatureNotes:
    """What a fast update found missing from its feature set, and what it did about it."""

    encoded_on_demand: int = 0
    missing_features: int = 0
    features_job: str = ""
    features_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.encoded_on_demand:
            out["encoded_on_demand"] = self.encoded_on_demand
        if self.missing_features:
            out.update(missing_features=self.missing_features, features_note=self.features_note)
        if self.features_job:
            out["features_job"] = self.features_job
        return out


def load_features(ctx: JobContext, project_id: int, key: str) -> FeatureSet | WordFeatureSet:
    return ctx.features.load_words(project_id, key) if is_word_key(key) else ctx.features.load(project_id, key)


def features_for(ctx: JobContext, project_id: int, state: ProjectState, report: ConversionReport,
                 pool_ids: list[int]) -> tuple[FeatureSet | WordFeatureSet, FeatureNotes]:
    """The project's features, with the missing labeled and pool tasks encoded here when they are
    few (FAST_ENCODE_LIMIT), else queued for a build; the notes say what is missing."""
    labeled_ids = [int(i) for i in report.task_ids]
    features = load_features(ctx, project_id, state.feature_key)
    missing_labeled, missing_pool = features.missing(labeled_ids), features.missing(pool_ids)
    missing = len(missing_labeled) + len(missing_pool)
    if not missing:
        return features, FeatureNotes()
    if missing <= ctx.settings.fast_encode_limit:
        text_of = {int(t): ex.text or "" for t, ex in zip(report.task_ids, report.examples, strict=True)}
        texts = [text_of.get(t, "") for t in missing_labeled]
        texts += [t or "" for t in ctx.store.pool_texts(project_id, missing_pool)]
        write_features(ctx, project_id, state.feature_key, state.feature_source, missing_labeled + missing_pool, texts)
        return load_features(ctx, project_id, state.feature_key), FeatureNotes(encoded_on_demand=missing)
    build = request_features(ctx, project_id, f"{missing} tasks without features")
    return features, FeatureNotes(missing_features=missing, features_job=build,
                                  features_note=f"{len(missing_pool)} pool tasks have no features yet (job {build} "
                                                "computes them); they join the order when it is done")
