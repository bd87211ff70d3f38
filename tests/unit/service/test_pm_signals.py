"""The project manager's signals through the service (real Redis, in-process RQ worker, tiny
encoder): audit slots among the pushed tasks and the quality estimate their labels give, the
stopping signal moved by each update, suspect labels listed and written to Label Studio."""
from __future__ import annotations

import numpy as np

from backend.service.jobs.signals import SUSPECT_VERSION
from backend.service.runtime import set_context
from tests.unit.service.test_fast_path import PID, annotate, connect, examples, make_backend, work

FLIP = {"Positive": "Negative", "Negative": "Positive"}


def test_audits_give_an_estimate_with_an_interval_and_the_signals_reach_the_page(redis_url, tmp_path, tiny_bert):
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0, audit_share=0.5, fast_top_k=8)
    set_context(backend)
    try:
        data = examples(120, seed=5)
        ls, client = connect(backend, [t for t, _ in data])
        label_of = {i + 1: label for i, (_, label) in enumerate(data)}
        for task_id in range(1, 7):
            annotate(client, ls, task_id, label_of[task_id])
        work(backend)
        status = client.get(f"/projects/{PID}").json["fast_path"]
        assert status["status"] == "published" and status["audits"] >= 1, status
        audits = backend.store.audit_ids(PID)
        assert len(audits) == status["audits"]
        pushed = {p["task"]: p["score"] for p in ls.predictions if p["model_version"] == status["version"]}
        assert audits <= set(pushed), "audit tasks are among the pushed ones"
        assert not audits & set(range(1, 7)), "audits are drawn from the unlabeled pool"

        # annotators label what /next serves, audits included; the signal compares models 10+ labels apart
        labeled = 6
        for _ in range(6):
            for _ in range(8):
                task_id = ls.next_task()
                annotate(client, ls, task_id, label_of[task_id])
                labeled += 1
            work(backend)
        view = client.get(f"/projects/{PID}").json
        labeled_audits = backend.store.audit_ids(PID) & {t for t, task in ls.tasks.items() if task["annotations"]}
        assert labeled_audits, "annotators labeled audit tasks in their turn"
        last = client.get(f"/projects/{PID}").json["fast_path"]
        pushed_now = {p["task"] for p in ls.predictions if p["model_version"] == last["version"]}
        assert len(backend.store.audit_ids(PID) & pushed_now) == last["audits"], \
            "a task the latest order shows is no audit, whatever an earlier version showed it as"
        quality = view["quality"]
        assert quality is not None and quality["audits"] == len(labeled_audits)
        if quality["value"] is not None:
            assert 0.0 <= quality["low"] <= quality["value"] <= quality["high"] <= 1.0
        stopping = view["stopping"]
        assert stopping and len(stopping["history"]) >= 3 and stopping["history"][-1]["labeled"] == labeled
        assert stopping["value"] is None or -1.0 <= stopping["value"] <= 1.0
        page = client.get(f"/ui/projects/{PID}").text
        assert "When to stop" in page and ("STOP:" in page or "Keep labeling:" in page)
        points = backend.store.history(PID)
        assert points[-1].stop is not None
    finally:
        set_context(None)


def test_a_flipped_label_is_a_suspect_in_the_page_and_in_label_studio(redis_url, tmp_path, tiny_bert):
    """Two texts (one per class), each repeated: one copy carries the other class. Identical
    features vouch against it in every fold, so it is flagged; the consistent copies are not."""
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0)
    set_context(backend)
    try:
        some = examples(20, seed=6)
        distinct = [next(e for e in some if e[1] == label) for label in ("Positive", "Negative")]
        data = [distinct[i % 2] for i in range(60)]
        ls, client = connect(backend, [t for t, _ in data])
        flipped = 8
        for i, (_, label) in enumerate(data[:40]):
            ls.annotate(i + 1, FLIP[label] if i + 1 == flipped else label)
        annotate(client, ls, 41, data[40][1])
        work(backend)  # features, the fast update, then its CV job: suspects
        record = client.get(f"/projects/{PID}").json["suspects"]
        assert record is not None and record["labeled"] == 41, record
        flagged = {s["task"]: s for s in record["suspects"]}
        truth = data[flipped - 1][1]
        assert flagged.get(flipped, {}).get("given") == FLIP[truth] and flagged[flipped]["predicted"] == truth, record
        assert set(flagged) == {flipped}, "no consistently labeled copy is flagged"
        held = [p for p in ls.predictions if p["model_version"] == SUSPECT_VERSION]
        assert [p["task"] for p in held] == [flipped]
        assert held[0]["result"][0]["value"]["choices"] == [truth], "the prediction holds the label the model suggests"
        page = client.get(f"/ui/projects/{PID}").text
        assert 'id="suspects"' in page and f"task={flipped}" in page and SUSPECT_VERSION in page
        assert np.isfinite(flagged[flipped]["confidence"])
    finally:
        set_context(None)


def test_ground_truth_tasks_are_held_out_for_the_estimate(redis_url, tmp_path, tiny_bert):
    """With no audits, the tasks the project starred as ground truth in Label Studio give the
    estimate: held out of the head it measures, counted apart, named on the page."""
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0, audit_share=0.0)
    set_context(backend)
    try:
        data = examples(80, seed=7)
        ls, client = connect(backend, [t for t, _ in data])
        for i, (_, label) in enumerate(data[:40]):
            annotation = ls.annotate(i + 1, label)
            annotation["ground_truth"] = i < 12
        annotate(client, ls, 41, data[40][1])
        work(backend)  # features, the fast update (reads the labels, ground truth marked), its CV job
        assert backend.store.ground_truth_ids(PID) == set(range(1, 13))
        quality = client.get(f"/projects/{PID}").json["quality"]
        assert quality is not None and quality["labeled"] == 41, quality
        assert quality["ground_truth"] == 12 and quality["audits"] == 0 and quality["n"] == 12, quality
        assert quality["value"] is not None and 0.0 <= quality["low"] <= quality["value"] <= quality["high"] <= 1.0
        assert "12 ground-truth tasks" in client.get(f"/ui/projects/{PID}").text
    finally:
        set_context(None)
