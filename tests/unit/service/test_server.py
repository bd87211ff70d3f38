"""The Flask app against a real Redis: Label Studio's protocol, JSON errors, auth, metrics."""
from __future__ import annotations

import base64
import json
import time

import pytest

from backend.model import FeasibleALModel
from backend.service.app import create_app
from backend.service.runtime import Backend, set_context
from backend.service.store import UNTRAINED, ScoreEntry
from tests.helpers.backend import (
    CLASSIFICATION_XML,
    NER_XML,
    make_settings,
    publish_checkpoint,
    sentiment_tasks,
)
from tests.helpers.servers import RedisServer, free_port

IMAGE_XML = ('<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
             '<Label value="Cat"/></RectangleLabels></View>')


@pytest.fixture
def backend(redis_url, tmp_path, tiny_bert):
    settings = make_settings(
        redis_url, tmp_path, tiny_bert, label_studio_url=f"http://127.0.0.1:{free_port()}",
        label_studio_api_key="test-token", max_request_bytes=64 * 1024,
    )
    b = Backend.from_settings(settings)
    set_context(b)
    yield b
    set_context(None)


@pytest.fixture
def client(backend):
    return create_app(FeasibleALModel, backend=backend).test_client()


def setup_project(client, project: str = "7.1700000000", xml: str = CLASSIFICATION_XML):
    return client.post("/setup", json={"project": project, "schema": xml, "hostname": "http://evil",
                                       "access_token": "ignored"})


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json == {"status": "UP", "model_class": "FeasibleALModel", "redis": "ok"}


def test_setup_reports_untrained_then_the_published_version(client, backend):
    r = setup_project(client)
    assert r.status_code == 200 and r.json == {"model_version": UNTRAINED}
    publish_checkpoint(backend.settings, backend.store, 7, "acq-1-x")
    assert setup_project(client).json == {"model_version": "acq-1-x"}


@pytest.mark.parametrize("xml, status, code, fragment", [
    (IMAGE_XML, 422, "unsupported_label_config", "RectangleLabels->Image"),
    ("<View><Text name='t' value='$t'>", 422, "invalid_label_config", "not well-formed XML"),
    ("", 400, "bad_request", "'schema'"),
])
def test_setup_rejects_bad_label_configs(client, xml, status, code, fragment):
    r = setup_project(client, xml=xml)
    assert r.status_code == status, r.json
    assert r.json["error"] == code and fragment in r.json["message"]


def test_predict_before_training_gives_one_empty_result_per_task(client):
    setup_project(client)
    tasks = sentiment_tasks(5)
    r = client.post("/predict", json={"tasks": tasks, "project": "7.1700000000", "label_config": CLASSIFICATION_XML})
    assert r.status_code == 200
    assert r.json["results"] == [{"result": [], "score": 0.0, "model_version": UNTRAINED}] * 5


def test_predict_answers_cached_tasks_from_the_store_and_scores_only_the_rest(client, backend):
    setup_project(client)
    publish_checkpoint(backend.settings, backend.store, 7, "acq-1-x")
    tasks = sentiment_tasks(6, start_id=100)
    cached = {100: ScoreEntry([{"marker": "cached"}], 0.123, 0.877), 103: ScoreEntry([], 0.456, 0.5)}
    backend.store.put_scores(7, "acq-1-x", cached)
    before = backend.store.get_project(7).model_scored_total

    r = client.post("/predict", json={"tasks": tasks, "project": "7.1700000000"})
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert len(results) == 6 and all(x["model_version"] == "acq-1-x" for x in results)
    assert results[0] == {"result": [{"marker": "cached"}], "score": 0.123, "model_version": "acq-1-x"}
    assert results[3]["score"] == 0.456
    for x in (results[1], results[2], results[4], results[5]):  # ran the model: a real choice
        (choice,) = x["result"]
        assert choice["from_name"] == "sentiment" and choice["to_name"] == "text"
        assert choice["value"]["choices"][0] in ("Positive", "Negative", "Neutral")
        assert 0 < x["score"] <= 1
    assert backend.store.get_project(7).model_scored_total == before + 4

    again = client.post("/predict", json={"tasks": list(reversed(tasks)), "project": "7.1700000000"})
    assert again.json["results"] == list(reversed(results))  # now all cached, same answers, in order
    assert backend.store.get_project(7).model_scored_total == before + 4


def test_predict_for_a_task_without_text_still_answers(client, backend):
    setup_project(client)
    publish_checkpoint(backend.settings, backend.store, 7, "acq-1-x")
    tasks = [{"id": 1, "data": {"other": "x"}}, {"id": 2, "data": {"text": "a great film"}}]
    results = client.post("/predict", json={"tasks": tasks, "project": 7}).json["results"]
    assert len(results) == 2 and results[0]["result"] == [] and results[1]["result"]


def test_predict_with_a_missing_checkpoint_is_a_clear_503(client, backend):
    setup_project(client)
    backend.store.publish_version(7, "acq-9-gone", 9, {"iteration": 9})
    r = client.post("/predict", json={"tasks": sentiment_tasks(1), "project": 7})
    assert r.status_code == 503 and r.json["error"] == "model_unavailable" and "MODEL_DIR" in r.json["message"]


@pytest.mark.parametrize("body, content_type, code, fragment", [
    (b"{not json", "application/json", "malformed_json", "not valid JSON"),
    (b"", "application/json", "empty_body", "empty"),
    (b"[1, 2]", "application/json", "bad_request", "JSON object"),
    (b'{"tasks": {}}', "application/json", "bad_request", "'tasks' must be a list"),
    (b'{"tasks": [], "project": "abc"}', "application/json", "bad_request", "project id"),
    (b"\xff\xfe", "application/json", "malformed_json", "UTF-8"),
])
def test_malformed_predict_bodies(client, body, content_type, code, fragment):
    r = client.post("/predict", data=body, content_type=content_type)
    assert r.status_code == 400 and r.is_json
    assert r.json["error"] == code and fragment in r.json["message"], r.json


def test_unknown_project(client):
    r = client.post("/predict", json={"tasks": sentiment_tasks(1), "project": "99.1"})
    assert r.status_code == 404 and r.json["error"] == "unknown_project" and "99" in r.json["message"]
    assert client.get("/projects/99").status_code == 404
    assert client.get("/versions?project=99").status_code == 404
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 99}})
    assert r.status_code == 404 and r.json["error"] == "unknown_project"


def test_oversized_body(client):
    big = {"tasks": [{"id": 1, "data": {"text": "x" * 100_000}}], "project": 7}
    r = client.post("/predict", json=big)
    assert r.status_code == 413 and r.json["error"] == "request_too_large"
    assert "MAX_REQUEST_BYTES" in r.json["message"]


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json["error"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.json["error"] == "method_not_allowed"


def test_webhook_counts_annotations_and_queues_one_training(client, backend):
    setup_project(client)
    project = {"id": 7, "label_config": CLASSIFICATION_XML}

    def event(annotation_id: int) -> dict:
        return {"action": "ANNOTATION_CREATED", "project": project, "task": {"id": 1},
                "annotation": {"id": annotation_id, "task": 1, "result": [], "updated_at": "2026-11-23T10:00:00Z"}}

    started = time.perf_counter()
    first = client.post("/webhook", json=event(10))
    second = client.post("/webhook", json=event(11))
    assert first.status_code == second.status_code == 200
    assert second.json["annotations_since_training"] == 2
    # the same event delivered again (a second project webhook with our URL) counts once
    again = client.post("/webhook", json=event(11))
    assert again.status_code == 200 and again.json["annotations_since_training"] == 2
    third = client.post("/webhook", json=event(12))  # TRAIN_EVERY_N = 3
    assert third.status_code == 201 and third.json["training"] == "enqueue"
    job_id = third.json["job"]
    more = [client.post("/webhook", json=event(20 + i)) for i in range(5)]
    start = client.post("/webhook", json={"action": "START_TRAINING", "project": project})
    assert (time.perf_counter() - started) / 10 < 0.2
    assert {r.json.get("job") for r in more if r.json.get("job")} <= {job_id}
    assert start.json["training"] == "queued" and start.json["job"] == job_id
    assert backend.queues.training.count == 1  # never a pile-up
    status = client.get(f"/jobs/{job_id}").json
    assert status["status"] == "queued" and status["project"] == 7 and status["stage"] == "queued"


def test_webhook_skipped_annotations_do_not_count(client):
    setup_project(client)
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 1},
             "annotation": {"id": 10, "was_cancelled": True}}
    for _ in range(5):
        assert client.post("/webhook", json=event).json.get("training") is None


def test_webhook_bad_and_unknown_actions(client):
    setup_project(client)
    r = client.post("/webhook", json={"project": {"id": 7}})
    assert r.status_code == 400 and "'action'" in r.json["message"]
    r = client.post("/webhook", json={"action": "LABEL_LINK_CREATED", "project": {"id": 7}})
    assert r.status_code == 200 and r.json["status"] == "ignored"


def test_webhook_task_events_maintain_the_pool_cache(client, backend):
    setup_project(client)
    backend.store.pool_replace(7, {1: "a", 2: "b"}, "text", 1)
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 7},
                                  "tasks": [{"id": 3, "data": {"text": "c"}}, {"id": 4, "data": {}}]})
    assert backend.store.pool_texts(7, [3, 4]) == ["c", ""]
    client.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 7}, "tasks": [{"id": 1}]})
    client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": {"id": 7},
                                  "annotation": [{"id": 5, "task": 2}], "task": [{"id": 2}]})
    assert backend.store.pool_ids(7) == [3, 4]
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"id": 5}]})
    assert backend.store.get_project(7).pool_stale
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED",
                                      "project": {"id": 7, "label_config": NER_XML}})
    assert r.json["label_config_changed"] is True
    assert backend.store.get_project(7).task_type == "tagging"


def test_training_without_label_studio_settings_is_refused_clearly(redis_url, tmp_path):
    backend = Backend.from_settings(make_settings(redis_url, tmp_path))
    client = create_app(FeasibleALModel, backend=backend).test_client()
    setup_project(client)
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
    assert r.status_code == 503 and r.json["error"] == "label_studio_not_configured"
    assert "LABEL_STUDIO_URL" in r.json["message"]


def test_basic_auth(redis_url, tmp_path):
    settings = make_settings(redis_url, tmp_path, basic_auth_user="ls", basic_auth_pass="s3cret")
    client = create_app(FeasibleALModel, backend=Backend.from_settings(settings)).test_client()
    r = client.get("/health")
    assert r.status_code == 401 and r.json["error"] == "unauthorized" and "WWW-Authenticate" in r.headers
    bad = base64.b64encode(b"ls:wrong").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"ls:s3cret").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_versions_projects_and_metrics(client, backend):
    setup_project(client)
    publish_checkpoint(backend.settings, backend.store, 7, "acq-1-x")
    assert client.get("/versions").json == {"versions": ["acq-1-x"]}
    assert client.get("/versions?project=7").json == {"versions": ["acq-1-x"], "current": "acq-1-x"}
    status = client.get("/projects/7").json
    assert status["version"] == "acq-1-x" and status["iteration"] == 1 and status["last_iteration"]["iteration"] == 1
    client.post("/predict", json={"tasks": sentiment_tasks(2), "project": 7})
    client.post("/predict", data=b"{", content_type="application/json")
    body = client.get("/metrics").get_data(as_text=True)
    assert 'feasible_al_http_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in body
    assert 'feasible_al_http_requests_total{endpoint="/predict",method="POST",status="400"} 1.0' in body
    assert 'feasible_al_http_request_seconds_bucket{endpoint="/predict",le="+Inf"} 2.0' in body
    assert 'feasible_al_iteration{project="7"} 1.0' in body
    assert 'feasible_al_last_iteration_seconds{phase="train",project="7"} 0.1' in body
    assert "feasible_al_queue_length" in body and "feasible_al_model_scored_tasks_total" in body


def test_unknown_job(client):
    r = client.get("/jobs/nope")
    assert r.status_code == 404 and r.json["error"] == "unknown_job"


def test_redis_down_gives_503_json_not_a_hang(tmp_path):
    with RedisServer() as server:
        settings = make_settings(server.url, tmp_path, redis_timeout=0.5)
        client = create_app(FeasibleALModel, backend=Backend.from_settings(settings)).test_client()
        assert setup_project(client).status_code == 200
        server.stop()
        started = time.perf_counter()
        r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 7}})
        assert time.perf_counter() - started < 1.0
        assert r.status_code == 503 and r.json["error"] == "redis_unavailable"
        assert "Label Studio keeps every annotation" in r.json["message"]
        h = client.get("/health")
        assert h.status_code == 503 and h.json["status"] == "DOWN"
        assert json.loads(client.get("/metrics").get_data()).get("error") == "redis_unavailable"
