"""Active learning rounds through Label Studio, as a team would run them.

Each round the annotator asks Label Studio for the next task (``GET /api/projects/<id>/next``:
under *Uncertainty sampling* the unlabeled task with the lowest prediction score of the project's
model version) and saves its gold label, task after task; then *Start training* (Label Studio
posts ``START_TRAINING`` to the backend's ``/webhook``), and the round ends when the backend has
published the new version: every unlabeled task holds its prediction and the project's
``model_version`` is the new one. The serving model is then measured on the held-out gold through
``/predict``, the call Label Studio itself makes.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Never

from tqdm import tqdm

from backend.demo.data import DemoData
from backend.demo.quality import predicted_quality
from backend.engine.types import Example
from backend.harness.common import BackendHttp
from backend.harness.ls_admin import LabelStudioAdmin


@dataclass(frozen=True)
class RoundRecord:
    """One round: what was labelled, what it cost, how good the published model is."""

    round: int
    labeled: int  # annotated tasks in the project after this round
    new_labels: int
    version: str
    quality: float  # the serving acquisition model on the held-out gold
    update_seconds: float  # Start training -> the new version published in Label Studio
    annotate_seconds: float
    stage_seconds: dict[str, float]  # the backend's own split: fetch, train, inference, push, ...
    first_served_lowest: bool | None  # /next served the least confident task first (None: no model yet)
    serving: str | None  # the model serving after the round: "proxy" (fast path's head) or "finetuned"
    serving_why: str | None  # the measured estimates that chose it, as the backend states them
    fast_features: str | None  # whose encoder the fast path re-fitted on while this round was annotated:
    # "pretrained", a fine-tuned version (aligned features, once a fine-tune won), None: no features yet

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Rounds:
    """Annotate from the gold labels, train, wait, measure; `run(n)` does `n` rounds."""

    def __init__(self, ls: LabelStudioAdmin, backend: BackendHttp, data: DemoData, project_id: int,
                 ml_backend_id: int, gold_by_task: dict[int, list[dict[str, Any]]], held_out: list[Example],
                 per_round: int) -> None:
        self.ls, self.backend, self.data = ls, backend, data
        self.project_id, self.ml_backend_id = project_id, ml_backend_id
        self.gold_by_task, self.held_out, self.per_round = gold_by_task, held_out, per_round
        self.labeled = 0
        self.version: str | None = None

    def serving_scores(self) -> dict[int, float]:
        """Each unlabeled task's prediction score of the serving version."""
        scores: dict[int, float] = {}
        for task in self.ls.iter_tasks(self.project_id, only_labeled=False, fields="all"):
            for p in task.get("predictions", []):
                if p.get("model_version") == self.version:
                    scores[int(task["id"])] = float(p["score"])
        return scores

    def annotate(self, n: int, bar: tqdm[Never]) -> bool | None:
        """Label `n` tasks in the order Label Studio serves them; whether the first one served
        holds the lowest score (ties count: None before the first model)."""
        scores = self.serving_scores() if self.version else {}
        first_ok: bool | None = None
        for i in range(n):
            task = self.ls.next_task(self.project_id)
            if task is None:
                break
            task_id = int(task["id"])
            if i == 0 and scores:
                first_ok = scores.get(task_id) == min(scores.values())
            self.ls.create_annotation(task_id, self.gold_by_task[task_id])
            self.labeled += 1
            bar.update(1)
        return first_ok

    def quality(self) -> float:
        """The serving model on the held-out gold, through ``/predict`` (tasks without ids: the
        backend runs the model and stores nothing)."""
        key = self.data.config.value_key
        body = {"tasks": [{"data": {key: t.text}} for t in self.data.held_out], "project": f"{self.project_id}.0",
                "label_config": self.data.label_config}
        response = self.backend.http.post(f"{self.backend.url}/predict", json=body, timeout=600)
        response.raise_for_status()
        results = [entry.get("result") or [] for entry in response.json()["results"]]
        return predicted_quality(self.data, results, self.held_out)

    def one(self, number: int, bar: tqdm[Never]) -> RoundRecord:
        t0 = time.perf_counter()
        first_ok = self.annotate(self.per_round, bar)
        annotate_s = time.perf_counter() - t0
        annotated = self.backend.state(self.project_id)
        before = annotated["iteration"]
        bar.set_postfix_str("training...")
        t1 = time.perf_counter()
        self.ls.start_training(self.ml_backend_id)  # LS posts /webhook START_TRAINING
        state = self.backend.wait_iteration(self.project_id, before + 1)
        update_s = time.perf_counter() - t1
        self.version = state["version"]
        record = state.get("last_iteration") or {}
        serving = state.get("serving") or {}
        return RoundRecord(number, self.labeled, self.per_round, str(self.version), self.quality(), round(update_s, 2),
                           round(annotate_s, 2), {k: round(float(v), 2) for k, v in record.get("seconds", {}).items()},
                           first_ok, serving.get("model"), (serving.get("why") or {}).get("why_serve"),
                           _fast_features(annotated))

    def run(self, rounds: int) -> list[RoundRecord]:
        records: list[RoundRecord] = []
        with tqdm(total=rounds * self.per_round, desc="labels", unit="label", dynamic_ncols=True) as bar:
            for number in range(1, rounds + 1):
                bar.set_description(f"round {number}/{rounds}")
                rec = self.one(number, bar)
                records.append(rec)
                bar.set_postfix_str(f"quality {rec.quality:.3f}")
                bar.write(f"round {rec.round}: {rec.labeled} labels, model {rec.version}, held-out quality "
                          f"{rec.quality:.3f}, update {rec.update_seconds:.1f} s "
                          f"(train {rec.stage_seconds.get('train', 0):.1f} s), annotating {rec.annotate_seconds:.1f} s"
                          + ("" if rec.first_served_lowest is None else
                             f", /next served the least confident task: {rec.first_served_lowest}")
                          + (f", serving {rec.serving}" if rec.serving else "")
                          + (f" (fast path on {rec.fast_features} features)" if rec.fast_features else "")
                          + (f"\n  why it serves: {rec.serving_why}" if rec.serving_why else ""))
        return records


def _fast_features(state: dict[str, Any]) -> str | None:
    features = state.get("features") or {}
    if not features.get("key"):
        return None
    return features.get("aligned_with") or "pretrained"
