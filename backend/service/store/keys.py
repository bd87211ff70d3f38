"""Where the store keeps what: every Redis key and every project-hash field, in one place.

Redis survives a backend restart and Label Studio stays the source of truth for annotations, so
losing any of this costs a re-score, never a label. The layout below is checked by
``tests/unit/service/test_store_keys.py``: every key the store writes must match a pattern here and
every field written on the project hash must be listed, so this table cannot drift from the code.

Key layout (``P`` = the settings' key prefix, ``<id>`` = the Label Studio project id)::

    P:projects                            set    project ids seen
    P:project:<id>                        hash   the project's state (`ProjectState`); fields below
    P:project:<id>:pool                   hash   task id -> text: the cached unlabeled pool
    P:project:<id>:pool:tmp               hash   the next pool while `pool_replace` fills it (renamed over it)
    P:project:<id>:pred:<version>         hash   task id -> {"result", "score", "u"} JSON: the LS-ready
                                                 result, confidence and uncertainty held by that version
    P:project:<id>:iter:<version>         hash   `IterationInfo` of an iteration in progress (counters the
                                                 scoring jobs add to, stage timings) + "pool" (JSON id list)
    P:project:<id>:iterations             list   `IterationRecord` JSON of finished iterations, oldest first
    P:project:<id>:versions               list   published versions (fine-tuned and fast), oldest first
    P:project:<id>:served                 list   versions that served (LS holds predictions of these)
    P:project:<id>:history                list   `HistoryPoint` JSON per published version, oldest first (capped)
    P:project:<id>:audit                  hash   task id -> {"labeled", "version"}: audit tasks the fast path showed
    P:project:<id>:trained-on:<version>   set    labeled task ids that version was trained on (expires)
    P:project:<id>:fast-queued            string claim: the fast update job waiting to run (at most one)
    P:project:<id>:features-build         string claim: the pool-feature build job running (at most one)
    P:project:<id>:cv-queued              string claim: the proxy head's CV job waiting (at most one)
    P:project:<id>:prune-queued           string claim: the feature-set prune job waiting (at most one)
    P:project:<id>:ls-switch              string lock token held while LS's model_version changes
    P:project:<id>:event:<identity>       string an annotation event already counted (expires, EVENT_TTL)
    P:status:<job>                        hash   `PipelineStatus` of a training pipeline or successor job
    P:successor-lock:<id>                 string the successor job id holding the project's build lock
    P:successor-cancel:<job>              string set when a cancel of that successor build was asked
    P:janitor-lock                        string token of the process running the dead-job janitor (expires)
    P:janitor-sightings                   hash   RQ started-registry member -> when the janitor first saw it expired
    P:metrics:<name>                      hash   Prometheus counters (`backend.service.telemetry`)

Fields of the project hash ``P:project:<id>`` (``ProjectState`` reads the typed ones)::

    label_config                  the label config XML, as registered
    control_name                  the control tag predictions are made for
    value_key                     the task data field holding the text
    task_type                     `TaskType` value of the control
    created_at                    when the project was first registered
    updated_at                    when its label config was last registered
    version                       the serving version ('untrained' before the first)
    published_at                  when that version started serving
    iteration                     the number of the last finished full iteration
    acq_version                   the last fine-tuned version (UPS draws and carries from it)
    pending                       annotation events since the last training request
    queued_job                    the training pipeline waiting to run (changed by Lua scripts only)
    running_job                   the training pipeline running (changed by Lua scripts only)
    stage_job                     the job the running pipeline waits on (lets a webhook spot a dead one)
    dirty                         '1' when events arrived during a run: the pipeline runs once more
    last_job                      the last pipeline queued or started
    last_error                    the last failure's message
    last_error_job                the job that failed
    last_error_at                 when it failed
    pool_stale                    '1' when the cached pool must be listed again (the text field changed)
    pool_value_key                the task field the cached pool's texts come from
    pool_refreshed_iteration      the iteration that last listed the pool
    model_scored_total            tasks the model ran on, all paths
    serving_model                 'proxy' or 'finetuned': which model answers /predict
    finetune_won                  '1' when the fine-tune's measured estimate beat the proxy's
    serving_reason                JSON: the numbers the serving choice was made on
    feature_key                   the complete pool-feature set the proxy head works on
    feature_source                the encoder that made it (a model name or checkpoint folder)
    feature_source_version        the fine-tuned version whose encoder made it ('' = pretrained)
    fast_seq                      the last sequence number a fast update took (publishing only moves forward)
    fast_published_seq            the sequence number of the last fast version published
    fast_status                   JSON: the last fast update's outcome (``GET /projects/<id>`` fast_path)
    fast_last_event               when the last annotation reached the fast path (updates wait after it)
    fast_cv                       JSON: the last proxy-head CV (estimate, labels and classes it saw, feature key)
    typical:<feature_key>:<count> JSON task id list: the cold start's most typical tasks on that feature set
    ground_truth_tasks            JSON task id list: labeled tasks whose annotation is marked ground truth in LS
    stop_set                      JSON task id list: the stopping signal's fixed sample of the pool
    stop_state                    JSON: the stopping signal's state (`StabilizingPredictions.to_dict`)
    quality_estimate              JSON: the last honest quality estimate (`QualityEstimate.to_dict`)
    suspects                      JSON: the labels worth a second look (task, given, suggested, confidence)

The training flags (``queued_job``, ``running_job``, ``stage_job``, ``dirty``, ``pending``) change only
through the Lua scripts in `backend.service.store.scripts`; every claim and lock is released through
`backend.service.store.locks.compare_and_delete`.
"""
from __future__ import annotations

import redis
from redis.commands.core import Script

from backend.service.store.connection import TextReplies, text_view

TYPICAL_FIELD = "typical"  # + ":<feature_key>:<count>"
FAST_CV_FIELD = "fast_cv"
FAST_LAST_EVENT_FIELD = "fast_last_event"
FAST_SEQ_FIELD = "fast_seq"


class StoreBase:
    """What every part of `ProjectStore` shares: the client, the key prefix, the key builders and
    the registered Lua scripts. The parts are mixins over this base, so each concern reads alone
    while callers keep one object."""

    r: redis.Redis  # writes, pipelines, scripts (and `Metrics`, which shares the client)
    prefix: str

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self._text: TextReplies = text_view(client)  # reads: the same client, typed as decoding
        self.prefix = prefix
        self._scripts: dict[str, Script] = {}

    def _script(self, source: str) -> Script:
        """The script bound to this client (registered once; EVALSHA after the first call)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.r.register_script(source)
        return script

    # ------------------------------------------------------------------ key builders
    def key(self, project_id: int, *parts: str) -> str:
        """``P:project:<id>`` (the project hash) or, with `parts`, one of the project's other keys."""
        return ":".join((self.prefix, "project", str(int(project_id)), *parts))

    def _projects_key(self) -> str:
        return f"{self.prefix}:projects"

    def _iter_key(self, project_id: int, version: str) -> str:
        return self.key(project_id, "iter", version)

    def _pred_key(self, project_id: int, version: str) -> str:
        return self.key(project_id, "pred", version)

    def _status_key(self, job_id: str) -> str:
        return f"{self.prefix}:status:{job_id}"

    def _successor_lock_key(self, project_id: int) -> str:
        return f"{self.prefix}:successor-lock:{int(project_id)}"

    def _cancel_key(self, job_id: str) -> str:
        return f"{self.prefix}:successor-cancel:{job_id}"

    def janitor_lock_key(self) -> str:
        """``P:janitor-lock``: the one lock the dead-job janitor runs under, across processes."""
        return f"{self.prefix}:janitor-lock"

    def janitor_sightings_key(self) -> str:
        """``P:janitor-sightings``: hash, started-registry member -> Redis time (s) the janitor
        first saw its heartbeat expired; it declares the job dead only on a later sighting."""
        return f"{self.prefix}:janitor-sightings"
