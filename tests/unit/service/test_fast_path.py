"""The fast path with a real Redis and a real in-process RQ worker (tiny encoder): annotation
webhooks -> pool features in chunk jobs -> a proxy-head fast version in Label Studio; each kind of
bad input ends in a defined status with a message in ``GET /projects/<id>``, never a failed job.

Label Studio is the tests' in-memory stand-in (`tests.helpers.fake_label_studio`) holding tasks,
annotations and predictions the way the client returns them, given to the backend by constructor
(the real one is in tests/integration/test_fast_path.py).
"""
from __future__ import annotations

import numpy as np
import pytest
from rq import SimpleWorker
from rq.registry import FailedJobRegistry

from backend.engine.acquisition.cold_start import typical_order
from backend.engine.proxy import FeatureEncoder
from backend.engine.selection import ServingDecision
from backend.model import FeasibleALModel
from backend.service.app import create_app
from backend.service.checkpoints import checkpoint_dir
from backend.service.features import base_key, finetuned_key
from backend.service.jobs.gate import fast_path_blocker
from backend.service.jobs.iteration import request_training
from backend.service.jobs.serving import (
    drop_unused_features,
    follow_serving_model,
    measure_serving,
    use_base_features,
)
from backend.service.jobs.signals import SUSPECT_VERSION
from backend.service.records import FastStatus
from backend.service.runtime import Backend, set_context
from tests.helpers.backend import CLASSIFICATION_XML, SENTIMENT, make_settings
from tests.helpers.fake_label_studio import InMemoryLabelStudio
from tests.helpers.servers import free_port
from tests.helpers.toy_data import toy_classification

PID = 31
TOP_K = 5


def _choice(label: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def make_backend(redis_url, tmp_path, tiny_bert, **overrides) -> Backend:
    settings = make_settings(redis_url, tmp_path, tiny_bert, label_studio_url=f"http://127.0.0.1:{free_port()}",
                             label_studio_api_key="test-token", torch_threads=1, score_chunk_size=16,
                             train_every_n=0, fast_encode_limit=8,
                             **{"audit_share": 0.0, "fast_top_k": TOP_K, **overrides})  # audits: test_pm_signals
    return Backend.from_settings(settings, label_studio=InMemoryLabelStudio(project_id=PID))


@pytest.fixture
def backend(redis_url, tmp_path, tiny_bert):
    """Cold start off: these tests follow the least-confidence order (the cold start has its own)."""
    b = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0)
    set_context(b)
    yield b
    set_context(None)


def examples(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return [(ex.text, SENTIMENT[ex.labels[0]]) for ex in toy_classification(n, seed)]


def connect(backend: Backend, texts: list[str], xml: str = CLASSIFICATION_XML):
    ls = backend.label_studio  # the project's Label Studio, given to the backend by make_backend
    assert isinstance(ls, InMemoryLabelStudio)
    ls.label_config = xml
    ls.add_texts(texts)
    client = create_app(FeasibleALModel, backend=backend).test_client()
    assert client.post("/setup", json={"project": PID, "schema": xml}).status_code == 200
    return ls, client


def annotate(client, ls: InMemoryLabelStudio, task_id: int, label: str):
    annotation = ls.annotate(task_id, label)
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": PID},
                                      "task": {"id": task_id}, "annotation": annotation})
    assert r.status_code in (200, 201), r.json
    return r.json


def work(backend: Backend) -> None:
    SimpleWorker(backend.queues.all(), connection=backend.queues.connection).work(burst=True)
    failed = {j for q in backend.queues.all() for j in FailedJobRegistry(queue=q).get_job_ids()}
    assert not failed, f"failed jobs: {failed}"
    refused = backend.label_studio.refused_versions
    assert not refused, f"Label Studio refused model versions it holds no prediction of: {refused}"


def fast_status(client) -> dict:
    return client.get(f"/projects/{PID}").json["fast_path"]


def test_annotations_give_a_fast_version_in_label_studio(backend):
    data = examples(60)
    ls, client = connect(backend, [t for t, _ in data])
    answers = [annotate(client, ls, i + 1, label) for i, (_, label) in enumerate(data[:6])]
    assert answers[0]["fast"] == "enqueue"
    assert {a["fast"] for a in answers[1:]} == {"queued"}, "a burst folds into the one queued update"
    assert backend.queues.fast.count == 1
    work(backend)  # features built in chunks, then the fast update

    state = client.get(f"/projects/{PID}").json
    status = state["fast_path"]
    assert status["status"] == "published", status
    version = status["version"]
    assert state["version"] == version and version.startswith("fast-") and ls.model_version == version
    assert state["serving"]["model"] == "proxy" and state["features"]["key"].startswith("base-")
    assert status["labeled"] == 6 and status["pool_size"] == status["scored"] == 54
    assert status["pushed"] == TOP_K and set(status["seconds"]) >= {"fetch_labels", "fit", "score", "total"}
    pushed = [p for p in ls.predictions if p["model_version"] == version]
    assert len(pushed) == TOP_K
    # /predict answers every pool task from the fast version; the pushed ones are the least confident
    pool = [{"id": i + 1, "data": {"text": t}} for i, (t, _) in enumerate(data) if i >= 6]
    results = client.post("/predict", json={"project": f"{PID}.1", "tasks": pool}).json
    assert results["model_version"] == version and len(results["results"]) == len(pool)
    scores = {t["id"]: r["score"] for t, r in zip(pool, results["results"])}
    assert sorted(scores.values())[:TOP_K] == pytest.approx(sorted(p["score"] for p in pushed))
    assert scores[ls.next_task()] == pytest.approx(min(scores.values())), "LS serves the lowest score first"

    # a new task nobody encoded: /predict encodes it on demand
    new_task = {"id": 999, "data": {"text": "good fun"}}
    new = client.post("/predict", json={"project": f"{PID}.1", "tasks": [new_task]}).json
    assert new["results"][0]["result"][0]["value"]["choices"][0] in SENTIMENT.values()

    # the next annotation: a newer fast version; the superseded one's predictions are deleted
    annotate(client, ls, 7, data[6][1])
    annotate(client, ls, 8, data[7][1])
    work(backend)
    second = fast_status(client)
    assert second["status"] == "published" and second["version"] != version and second["labeled"] == 8
    annotate(client, ls, 9, data[8][1])
    work(backend)
    held = {v: n for v, n in ls.model_versions(PID).items() if v != SUSPECT_VERSION}
    assert set(held) == {second["version"], fast_status(client)["version"]}, held  # current + previous


def test_the_first_labels_go_to_the_most_typical_texts(redis_url, tmp_path, tiny_bert):
    """Below FAST_COLD_START labels a fast version pushes only the most typical unlabeled texts
    (k-means over the pool's features, computed once per feature set), so /next serves them; from
    FAST_COLD_START labels on it pushes the least confident."""
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=12)
    set_context(backend)
    try:
        data = examples(60)
        ls, client = connect(backend, [t for t, _ in data])
        for i, (_, label) in enumerate(data[:5]):
            annotate(client, ls, i + 1, label)
        work(backend)
        status = fast_status(client)
        assert status["status"] == "published" and status["order"] == "typical", status
        assert "cold start (5 of 12 labels)" in status["message"]
        state = backend.store.get_project(PID)
        features = backend.features.load(PID, state.feature_key)
        typical = [int(features.ids[r]) for r in typical_order(features.matrix, 12, backend.settings.seed)]
        pushed = [p["task"] for p in ls.predictions if p["model_version"] == status["version"]]
        expected = [t for t in typical if t > 5][:TOP_K]  # tasks 1-5 are labeled
        assert sorted(pushed) == sorted(expected) and ls.next_task() in expected

        for i in range(5, 12):  # the labels reach FAST_COLD_START: least confidence from now on
            ls.annotate(i + 1, data[i][1])
        annotate(client, ls, 13, data[12][1])
        work(backend)
        status = fast_status(client)
        assert status["status"] == "published" and status["order"] == "uncertainty" and status["labeled"] == 13
        assert "cold start" not in status["message"]
    finally:
        set_context(None)


def test_duplicate_deliveries_do_not_queue_a_second_update(backend):
    data = examples(20)
    ls, client = connect(backend, [t for t, _ in data])
    annotation = ls.annotate(1, data[0][1])
    body = {"action": "ANNOTATION_CREATED", "project": {"id": PID}, "task": {"id": 1}, "annotation": annotation}
    assert client.post("/webhook", json=body).json["fast"] == "enqueue"
    backend.queues.fast.empty()
    backend.store.release(PID, "fast-queued", backend.store.r.get(backend.store.key(PID, "fast-queued")))
    assert "fast" not in client.post("/webhook", json=body).json, "the same event from a second webhook"


def test_one_class_unknown_labels_and_empty_texts(backend):
    data = examples(40)
    texts = [t for t, _ in data]
    texts[30] = ""  # an empty pool text: never pushed, counted
    ls, client = connect(backend, texts)
    for i in range(4):
        annotate(client, ls, i + 1, "Positive")
    work(backend)
    status = fast_status(client)
    assert status["status"] == "skipped" and "one class only (Positive)" in status["message"]
    assert client.get(f"/projects/{PID}").json["version"] == "untrained" and ls.model_version == ""

    annotate(client, ls, 5, "Bogus")  # a label the config does not have: left out, counted
    annotate(client, ls, 6, "Negative")
    annotate(client, ls, 7, "Negative")
    work(backend)
    status = fast_status(client)
    assert status["status"] == "published", status
    assert status["conversion"]["skipped"] == {"unknown_label": 1} and status["labeled"] == 6
    assert status["empty_texts"] == 1
    assert 31 not in {p["task"] for p in ls.predictions}


def test_zero_pool_and_new_tasks_without_features(backend):
    data = examples(12)
    ls, client = connect(backend, [t for t, _ in data])
    annotate(client, ls, 1, "Positive")
    annotate(client, ls, 2, "Negative")
    work(backend)
    assert fast_status(client)["status"] == "published"

    # a few new tasks: encoded by the fast update itself (FAST_ENCODE_LIMIT=8)
    for i, text in enumerate(["a new good one", "a new bad one"]):
        ls.tasks[100 + i] = {"id": 100 + i, "data": {"text": text}, "annotations": []}
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": PID},
                                  "tasks": [{"id": 100 + i, "data": ls.tasks[100 + i]["data"]} for i in range(2)]})
    annotate(client, ls, 3, "Positive")
    work(backend)
    status = fast_status(client)
    assert status["status"] == "published" and status["encoded_on_demand"] == 2 and status["pool_size"] == 11

    # many new tasks: chunk jobs compute them; the update orders the rest meanwhile and says so
    many = {200 + i: {"id": 200 + i, "data": {"text": f"fresh text number {i}"}, "annotations": []} for i in range(20)}
    ls.tasks.update(many)
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": PID},
                                  "tasks": [{"id": t["id"], "data": t["data"]} for t in many.values()]})
    annotate(client, ls, 4, "Negative")
    backend_fast = SimpleWorker([backend.queues.fast], connection=backend.queues.connection)
    backend_fast.work(burst=True)  # the fast queue alone: the build waits on "scoring"
    status = fast_status(client)
    assert status["status"] == "published" and status["missing_features"] == 20 and "features_note" in status
    work(backend)  # the build runs, then asks for a fast update that covers them
    status = fast_status(client)
    assert status["status"] == "published" and "missing_features" not in status and status["pool_size"] == 30

    # everything labeled: nothing to order, said so
    for task_id, task in list(ls.tasks.items()):
        if not task["annotations"]:
            ls.annotate(task_id, "Positive")
    annotate(client, ls, 5, "Negative")
    work(backend)
    status = fast_status(client)
    assert status["status"] == "skipped" and "pool is empty" in status["message"]


def test_the_fine_tuned_model_serves_only_when_its_held_out_accuracy_is_higher_by_the_margin(backend):
    """The selection rule on planted numbers: the previous fine-tune's stored predictions on the
    labels that arrived after it was trained, against the proxy's CV accuracy plus the switch margin."""
    from backend.labeling import tasks_to_examples
    from backend.service.store import ScoreEntry

    data = examples(40)
    ls, client = connect(backend, [t for t, _ in data])
    for i, (_, label) in enumerate(data[:30]):
        ls.annotate(i + 1, label)
    annotate(client, ls, 31, data[30][1])
    work(backend)  # features + a fast update
    config = backend.store.register_label_config(PID, CLASSIFICATION_XML)
    report = tasks_to_examples(ls.labeled_tasks(PID), config)
    # a previous fine-tune "acq-1" trained on the first 10 labels; it predicted the later ones
    backend.store.remember_labeled(PID, "acq-1", list(range(1, 11)))
    gold = {int(t): ex.labels[0] for t, ex in zip(report.task_ids, report.examples)}

    def plant(correct: bool | int) -> ServingDecision:
        """The fine-tune right on every later label (True), none (False) or the first `correct`."""
        other = {"Positive": "Negative", "Negative": "Positive"}
        later = [t for t in gold if t > 10]
        right_on = set(later[: len(later) if correct is True else int(correct)])
        backend.store.put_scores(PID, "acq-1", {t: ScoreEntry(_choice(gold[t] if t in right_on else other[gold[t]]),
                                                              0.9, 0.1) for t in later})
        state = backend.store.get_project(PID)
        state.acq_version = "acq-1"
        return measure_serving(backend, PID, state, report, config)

    right = plant(True)
    assert right.finetuned.labels == 21 and right.finetuned.accuracy == 1.0
    assert right.serve == "finetuned" and right.finetune_won
    wrong = plant(False)
    assert wrong.finetuned.accuracy == 0.0 and wrong.serve == "proxy"
    assert wrong.proxy.accuracy is not None and "proxy CV accuracy" in wrong.why
    assert np.isfinite(wrong.proxy.accuracy)
    # just above the proxy's CV accuracy is not enough: it must win by the margin
    cv = wrong.proxy.accuracy
    above = next(k for k in range(22) if k / 21 > cv)
    close = plant(above)
    assert close.finetuned.accuracy is not None and close.finetuned.accuracy > cv
    assert close.margin is not None and close.margin > 0
    assert close.serve == ("finetuned" if close.finetuned.accuracy > cv + close.margin else "proxy")
    assert close.serve == "proxy" or above == 21, "one text above the proxy switched the serving model"
    assert "margin" in close.why


def thirteen_labels_and_a_full_iteration(backend: Backend):
    """40 tasks, 13 labeled (the last through the webhook: features and a fast update), then
    iteration 1, which scores the whole pool: (data, LS stand-in, client)."""
    data = examples(40)
    ls, client = connect(backend, [t for t, _ in data])
    for i, (_, label) in enumerate(data[:12]):
        ls.annotate(i + 1, label)
    annotate(client, ls, 13, data[12][1])
    work(backend)
    request_training(backend, PID, "test")
    work(backend)
    return data, ls, client


def test_a_winning_fine_tune_hands_the_fast_path_its_own_features(backend):
    """A full-rescore iteration keeps the fine-tuned encoder's pool features from its scoring pass;
    once that fine-tune wins the serving choice the fast path re-fits on them, and goes back to the
    pretrained encoder's (kept on disk) when the proxy wins again."""
    data, ls, client = thirteen_labels_and_a_full_iteration(backend)

    version = backend.store.get_project(PID).acq_version
    pool_ids = backend.store.pool_ids(PID)
    aligned = backend.features.load(PID, finetuned_key(version))
    assert len(pool_ids) == 27 and not aligned.missing(pool_ids), "the scoring chunks kept the pool's features"
    rows, _ = aligned.rows(pool_ids[:5])
    reference = FeatureEncoder(checkpoint_dir(backend.settings.model_dir, PID, version), device="cpu").encode(
        backend.store.pool_texts(PID, pool_ids[:5]))
    np.testing.assert_allclose(aligned.matrix[rows].astype(np.float32), reference.astype(np.float32), atol=5e-3)

    # the fine-tune won the choice (planted: who wins on toy data is chance, see the test above)
    backend.store.set_fields(PID, finetune_won=True, serving_model="finetuned")
    assert "resumes on its features" in fast_path_blocker(backend, backend.store.get_project(PID))
    follow_serving_model(backend, PID, version, "finetuned", full_rescore=True)
    work(backend)  # the build encodes only the 13 labeled tasks, then a fast update
    state = client.get(f"/projects/{PID}").json
    assert state["features"]["key"] == finetuned_key(version) and state["features"]["aligned_with"] == version
    assert state["fast_path"]["status"] == "published", state["fast_path"]
    assert state["fast_path"]["labeled"] == 13 and version in state["serving"]["why"]["features"]
    assert ls.model_version == state["fast_path"]["version"]
    assert len(backend.features.load(PID, base_key(backend.settings.feature_encoder)).ids) == 40, \
        "the serving choice still reads the pretrained encoder's features"

    use_base_features(backend, PID)  # the proxy measured better at a later iteration
    state = backend.store.get_project(PID)
    assert state.feature_key.startswith("base-") and not state.feature_source_version
    for key in (state.feature_key, finetuned_key(version)):  # planted: this backend has no cold start
        backend.store.r.hset(backend.store.key(PID), f"typical:{key}:30", "[1, 2, 3]")
    backend.store.set_fields(PID, acq_version="acq-2-later")  # the next full rescore drops the loser's set
    drop_unused_features(backend, backend.store.get_project(PID))
    assert not backend.features.load(PID, finetuned_key(version)).ids.size
    assert backend.features.load(PID, state.feature_key).ids.size == 40
    typical = {name.split(":")[1] for name in backend.store.r.hkeys(backend.store.key(PID))
               if name.startswith("typical:")}
    assert typical == {state.feature_key}, "the dropped set's typical texts went with it"


def test_the_proxy_serves_again_when_it_measures_better_than_a_fine_tune_that_had_won(backend):
    """A fine-tune won an iteration (the fast path moved to its features); at the next one the
    proxy head measures better: its fast version orders LS and the fast path is back on the
    pretrained encoder's features. (Seen in the demo before the fix: the earlier win blocked the
    proxy's update, so that fine-tune went on serving with the fast path off.)"""
    from backend.service.store import ScoreEntry

    data, ls, client = thirteen_labels_and_a_full_iteration(backend)
    first = backend.store.get_project(PID).acq_version
    backend.store.set_fields(PID, finetune_won=True, serving_model="finetuned")  # planted: it won
    follow_serving_model(backend, PID, first, "finetuned", full_rescore=True)
    work(backend)
    assert backend.store.get_project(PID).feature_source_version == first

    later = range(14, 29)  # 15 new labels, every one of which the fine-tune got wrong
    other = {"Positive": "Negative", "Negative": "Positive"}
    for t in later:
        ls.annotate(t, data[t - 1][1])
    backend.store.put_scores(PID, first, {t: ScoreEntry(_choice(other[data[t - 1][1]]), 0.9, 0.1) for t in later})
    request_training(backend, PID, "test")
    work(backend)  # iteration 2: the proxy head measures better

    state = client.get(f"/projects/{PID}").json
    assert state["iteration"] == 2 and state["last_iteration"]["selection"]["serve"] == "proxy", state["serving"]
    assert state["serving"]["model"] == "proxy" and not state["serving"]["finetune_won"]
    assert state["features"]["aligned_with"] is None and state["features"]["key"].startswith("base-")
    assert state["fast_path"]["status"] == "published", state["fast_path"]
    assert ls.model_version == state["version"] == state["fast_path"]["version"]
    assert state["fast_path"]["labeled"] == 28


def test_an_update_overtaken_by_a_newer_one_leaves_the_newer_status(backend):
    """Two updates race (an iteration's and an annotation's): the older one, finding a newer version
    published, changes nothing, and the project's fast_path keeps saying what serves."""
    from backend.service.jobs.fast_update import run_fast_update

    data = examples(20)
    ls, client = connect(backend, [t for t, _ in data])
    annotate(client, ls, 1, "Positive")
    annotate(client, ls, 2, "Negative")
    work(backend)
    published = fast_status(client)
    assert published["status"] == "published" and published["seq"] >= 1

    earlier_seq = published["seq"] - 1 if published["seq"] > 1 else 0
    late = run_fast_update(backend, PID, "an iteration's update", seq=earlier_seq)
    assert late.status is FastStatus.SUPERSEDED
    assert fast_status(client) == published and ls.model_version == published["version"]
