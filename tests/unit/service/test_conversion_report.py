"""Conversion problems (unknown labels, malformed results, ...) reach the worker log and the
stored records: ``last_iteration`` of ``GET /projects/<id>`` for a training, ``GET /jobs/<id>``
for a successor build. Real Redis, real in-process RQ worker, tiny model; Label Studio is the
tests' in-memory stand-in (`tests.helpers.fake_label_studio`), given to the backend by constructor."""
from __future__ import annotations

import logging

import pytest
from rq import SimpleWorker

from backend.model import FeasibleALModel
from backend.service.app import create_app
from backend.service.jobs.common import describe_job
from backend.service.jobs.iteration import request_training
from backend.service.runtime import Backend, set_context
from tests.helpers.backend import CLASSIFICATION_XML, make_settings, sentiment_examples, sentiment_tasks
from tests.helpers.fake_label_studio import InMemoryLabelStudio
from tests.helpers.servers import free_port

PID = 21
EXPECTED_SKIPPED = {"malformed_result": 1, "unknown_label": 1}


def _annotated(task_id: int, result) -> dict:
    return {"id": task_id, "data": {"text": f"text of task {task_id}"}, "predictions": [],
            "annotations": [{"id": task_id, "was_cancelled": False, "result": result}]}


def _choice(label: str) -> list[dict]:
    return [{"id": "c", "from_name": "sentiment", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}]


def project_in_label_studio() -> InMemoryLabelStudio:
    """20 usable annotated tasks, two unusable ones, 8 unlabeled."""
    gold = [_annotated(i + 1, _choice(ex.labels[0])) for i, ex in enumerate(sentiment_examples(20))]
    gold.append(_annotated(101, _choice("Bogus")))  # a label the config does not have
    gold.append(_annotated(102, "{not json"))  # an unreadable result
    return InMemoryLabelStudio([*gold, *sentiment_tasks(8, start_id=1000, seed=5)], CLASSIFICATION_XML,
                               project_id=PID)


@pytest.fixture
def backend(redis_url, tmp_path, tiny_bert, tiny_electra):
    settings = make_settings(redis_url, tmp_path, tiny_bert, label_studio_url=f"http://127.0.0.1:{free_port()}",
                             label_studio_api_key="test-token", teacher_model=str(tiny_bert),
                             successor_model=str(tiny_electra), torch_threads=1, score_chunk_size=4)
    b = Backend.from_settings(settings, label_studio=project_in_label_studio())
    set_context(b)
    yield b
    set_context(None)


def work(backend: Backend) -> None:
    SimpleWorker(backend.queues.all(), connection=backend.queues.connection).work(burst=True)


def _check(conversion: dict) -> None:
    assert conversion["skipped"] == EXPECTED_SKIPPED
    assert conversion["warnings_total"] == 2 and len(conversion["warnings"]) == 2
    assert any("Bogus" in w for w in conversion["warnings"])
    assert any("task 102" in w for w in conversion["warnings"])


def test_training_records_and_logs_what_conversion_skipped(backend, caplog):
    backend.store.register_label_config(PID, CLASSIFICATION_XML)
    with caplog.at_level(logging.WARNING, logger="backend.service.jobs"):
        req = request_training(backend, PID, "test")
        work(backend)
    state = backend.store.get_project(PID)
    assert state.iteration == 1 and state.last_error is None, state.last_error
    record = backend.store.last_iteration(PID)
    assert record["labeled"] == 20
    _check(record["conversion"])
    assert record["conversion"]["examples"] == 20
    ls = backend.label_studio
    held = ls.model_versions(PID)  # (a fast update may follow the training and push its own version)
    assert held[record["version"]] == record["pushed"] == 8, held  # the training's push: one per pool task
    assert ls.model_version == state.version and state.version in held

    project = create_app(FeasibleALModel, backend=backend).test_client().get(f"/projects/{PID}").json
    _check(project["last_iteration"]["conversion"])
    described = describe_job(backend, req.job_id)
    assert described["pipeline_status"] == "finished" and described["stage"] == "done"
    _check(described["iteration"]["conversion"])

    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "malformed_result=1" in logged and "unknown_label=1" in logged and "Bogus" in logged


def test_successor_job_status_carries_the_conversion_report(backend, caplog):
    client = create_app(FeasibleALModel, backend=backend).test_client()
    assert client.post("/setup", json={"project": PID, "schema": CLASSIFICATION_XML}).status_code == 200
    with caplog.at_level(logging.WARNING, logger="backend.service.jobs"):
        r = client.post("/successor", json={"project": PID, "epochs": 1, "learning_rate": 1e-3,
                                             "tracin_checkpoints": 2})
        assert r.status_code == 202, r.json
        job_id = r.json["job_id"]
        work(backend)
    status = client.get(f"/jobs/{job_id}").json
    assert status["status"] == "finished", status
    assert status["sizes"] == {"gold": 20, "pool": 8, "gold_skipped": EXPECTED_SKIPPED}
    _check(status["conversion"]["gold"])
    assert status["conversion"]["pool"]["skipped"] == {} and status["conversion"]["pool"]["examples"] == 8
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "successor gold" in logged and "unknown_label=1" in logged
