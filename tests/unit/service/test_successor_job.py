"""The PLASM successor job over HTTP: a real Redis, a real in-process RQ worker, tiny models.

Label Studio is the tests' in-memory stand-in (`tests.helpers.fake_label_studio`), given to the
backend by constructor and answering the job's calls (`labeled_tasks`, `unlabeled_tasks`) with task
JSON in Label Studio's format; the real client against a real Label Studio is covered by the
integration tests.
"""
from __future__ import annotations

import io
import tarfile

import pytest
import torch
from rq import SimpleWorker
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.model import FeasibleALModel
from backend.service.app import create_app
from backend.service.jobs.common import describe_job
from backend.service.runtime import Backend, set_context
from tests.helpers.backend import (
    CLASSIFICATION_XML,
    make_settings,
    publish_checkpoint,
    sentiment_examples,
    sentiment_tasks,
)
from tests.helpers.fake_label_studio import InMemoryLabelStudio
from tests.helpers.servers import free_port

PID = 11
FAST = {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16, "tracin_checkpoints": 2}


def project_in_label_studio(n_gold: int = 30, n_pool: int = 16) -> InMemoryLabelStudio:
    """The project in Label Studio: annotated tasks (ids 1..n_gold) and the unlabeled pool (from 1000)."""
    gold = [
        {"id": i + 1, "data": {"text": ex.text}, "predictions": [],
         "annotations": [{"id": i + 1, "was_cancelled": False, "result": [
             {"id": "c", "from_name": "sentiment", "to_name": "text", "type": "choices",
              "value": {"choices": [ex.labels[0]]}}]}]}
        for i, ex in enumerate(sentiment_examples(n_gold))
    ]
    return InMemoryLabelStudio([*gold, *sentiment_tasks(n_pool, start_id=1000, seed=5)], CLASSIFICATION_XML,
                               project_id=PID)


@pytest.fixture
def backend(redis_url, tmp_path, tiny_bert, tiny_electra):
    settings = make_settings(
        redis_url, tmp_path, tiny_bert, label_studio_url=f"http://127.0.0.1:{free_port()}",
        label_studio_api_key="test-token", teacher_model=str(tiny_bert), successor_model=str(tiny_electra),
        torch_threads=1,
    )
    b = Backend.from_settings(settings, label_studio=project_in_label_studio())
    set_context(b)
    yield b
    set_context(None)


@pytest.fixture
def client(backend):
    client = create_app(FeasibleALModel, backend=backend).test_client()
    r = client.post("/setup", json={"project": f"{PID}.1700000000", "schema": CLASSIFICATION_XML})
    assert r.status_code == 200
    return client


def work(backend) -> None:
    SimpleWorker([backend.queues.successor], connection=backend.queues.connection).work(burst=True)


def test_successor_job_end_to_end(client, backend, tiny_electra):
    r = client.post("/successor", json={"project": PID, "filter": "both", **FAST})
    assert r.status_code == 202, r.json
    job_id = r.json["job_id"]

    second = client.post("/successor", json={"project": PID})
    assert second.status_code == 409
    assert second.json["error"] == "successor_running" and second.json["job_id"] == job_id

    assert client.get(f"/successor/{job_id}/download").status_code == 404  # not finished yet
    work(backend)

    status = client.get(f"/jobs/{job_id}").json
    assert status["status"] == "finished" and status["stage"] == "done" and status["progress"] == 1.0
    assert status["error"] is None and status["download"] == f"/successor/{job_id}/download"
    metrics = status["metrics"]
    assert set(metrics["dev_metrics"]) >= {"teacher", "successor_plasm", "successor_gold_only"}
    assert 0 <= metrics["dev_metrics"]["teacher"]["main"] <= 1
    # the rule (engine/plasm/pipeline.py): the gold-only successor ships only when its dev score is higher
    plasm, gold_only = (metrics["dev_metrics"][f"successor_{name}"]["main"] for name in ("plasm", "gold_only"))
    assert metrics["chosen"] == ("gold_only" if gold_only > plasm else "plasm"), metrics["dev_metrics"]
    assert metrics["chosen_reason"] == (f"gold-only successor dev {gold_only:.4f} > PLASM successor dev {plasm:.4f}"
                                        if gold_only > plasm else
                                        f"PLASM successor dev {plasm:.4f} >= gold-only successor dev {gold_only:.4f}")
    assert metrics["models"]["successor"] == str(tiny_electra)
    assert metrics["sizes"] and status["sizes"]["gold"] == 30 and status["sizes"]["pool"] == 16
    assert metrics["acquisition_teacher"] == {"used": False, "why": "no fine-tuned acquisition model yet"}, \
        "the teacher is the acquisition model's checkpoint here (TEACHER_MODEL = ACQUISITION_MODEL)"

    download = client.get(f"/successor/{job_id}/download")
    assert download.status_code == 200 and download.mimetype == "application/gzip"
    extract = backend.settings.model_dir.parent / "extracted"
    with tarfile.open(fileobj=io.BytesIO(download.data), mode="r:gz") as tar:
        tar.extractall(extract, filter="data")
    directory = extract / job_id
    assert (directory / "metrics.json").is_file() and (directory / "README.md").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert set(model.config.id2label.values()) == {"Positive", "Negative", "Neutral"}
    with torch.no_grad():
        logits = model(**tokenizer(["a great movie", "awful"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 3)

    again = client.post("/successor", json={"project": PID, **FAST})  # the lock was released
    assert again.status_code == 202 and again.json["job_id"] != job_id


def test_the_acquisition_model_joins_the_teachers(client, backend):
    """The project's fine-tuned acquisition model (trained on the gold labels) averages its pool
    probabilities in with the teachers'; it is left out of their dev score; one option turns it off."""
    publish_checkpoint(backend.settings, backend.store, PID, "acq-1-test")
    body = {"project": PID, "filter": "uncertainty", "teachers": 2, **FAST}
    job_id = client.post("/successor", json=body).json["job_id"]
    work(backend)
    metrics = client.get(f"/jobs/{job_id}").json["metrics"]
    assert metrics["acquisition_teacher"] == {"used": True, "version": "acq-1-test"}
    assert metrics["filter"]["teachers"] == 2 and metrics["filter"]["extra_teachers"] == 1
    assert metrics["filter"]["dev_examples"] == 2 * metrics["sizes"]["dev"], "dev scored by the fold teachers only"

    job_id = client.post("/successor", json={"project": PID, "filter": "uncertainty", "acquisition_teacher": False,
                                             **FAST}).json["job_id"]
    work(backend)
    metrics = client.get(f"/jobs/{job_id}").json["metrics"]
    assert metrics["acquisition_teacher"]["used"] is False and metrics["filter"]["extra_teachers"] == 0

    # another teacher model: by default the acquisition model does not dilute its labels; forced, it joins
    other = str(backend.settings.successor_model)  # an allowed model that is not ACQUISITION_MODEL
    outcome = {}
    for forced in (None, True):
        body = {"project": PID, "teacher": other, "filter": "uncertainty", **FAST}
        if forced is not None:
            body["acquisition_teacher"] = forced
        job_id = client.post("/successor", json=body).json["job_id"]
        work(backend)
        outcome[forced] = client.get(f"/jobs/{job_id}").json["metrics"]["acquisition_teacher"]
    assert outcome[None]["used"] is False and "is not the acquisition model" in outcome[None]["why"]
    assert outcome[True] == {"used": True, "version": "acq-1-test"}


def test_the_successor_starts_from_the_acquisition_model_when_it_is_that_model(client, backend):
    """A successor of the acquisition model's own architecture fine-tunes from the acquisition
    model's weights (a copy), not from the pretrained checkpoint; one option turns it off, and
    another successor model starts from its pretrained checkpoint."""
    publish_checkpoint(backend.settings, backend.store, PID, "acq-1-test")
    same = str(backend.settings.acquisition_model)
    outcome = {}
    cases = {"same": {"successor": same}, "off": {"successor": same, "successor_from_acquisition": False}, "other": {}}
    for name, extra in cases.items():
        body = {"project": PID, "filter": "uncertainty", **FAST, **extra}
        job_id = client.post("/successor", json=body).json["job_id"]
        work(backend)
        job = client.get(f"/jobs/{job_id}").json
        assert job["status"] == "finished", job
        outcome[name] = job["metrics"]["successor_start"]
    assert outcome["same"] == {"from": "acquisition", "version": "acq-1-test"}
    assert outcome["off"] == {"from": "pretrained", "why": "successor_from_acquisition=false"}
    assert outcome["other"]["from"] == "pretrained" and "is not the acquisition model" in outcome["other"]["why"]


@pytest.mark.parametrize("body, fragment", [
    ({"filter": "nope"}, "'filter'"),
    ({"epochs": 0}, "'epochs'"),
    ({"learning_rate": "fast"}, "'learning_rate'"),
    ({"max_pool": -3}, "'max_pool'"),
    ({"teacher": ""}, "'teacher'"),
    ({"dev_share": 1.5}, "'dev_share'"),
    ({"epoch": 3}, "unknown option"),
    ({"teachers": 0}, "'teachers'"),
    ({"successor_all_gold": "yes"}, "'successor_all_gold'"),
    ({"acquisition_teacher": 1}, "'acquisition_teacher'"),
    ({"successor_from_acquisition": "yes"}, "'successor_from_acquisition'"),
    ({"successor_all_gold": True}, "compare_gold_only"),  # nothing held out to compare on
])
def test_bad_options_are_refused(client, body, fragment):
    r = client.post("/successor", json={"project": PID, **body})
    assert r.status_code == 400 and r.json["error"] == "bad_options" and fragment in r.json["message"], r.json


def test_unknown_project_and_unknown_downloads_are_404(client):
    assert client.post("/successor", json={"project": 999}).status_code == 404
    for job_id in ("successor-11-000000000000", "..%2Fx", "x", "train-11-abcdefabcdef"):
        r = client.get(f"/successor/{job_id}/download")
        assert r.status_code == 404, job_id
    assert client.get("/successor/../x/download").status_code == 404


def test_a_failed_build_records_the_error_leaves_no_export_and_releases_the_lock(client, backend):
    backend.label_studio.fail = True  # Label Studio down
    job_id = client.post("/successor", json={"project": PID, **FAST}).json["job_id"]
    work(backend)
    described = describe_job(backend, job_id)
    assert described["status"] == "failed" and described["stage"] == "fetch"
    assert "unreachable" in described["error"] and "stage 'fetch'" in described["error"]
    assert not (backend.settings.model_dir / str(PID) / "successors" / job_id).exists()
    assert client.get(f"/successor/{job_id}/download").status_code == 404
    backend.label_studio.fail = False
    assert client.post("/successor", json={"project": PID, **FAST}).status_code == 202


def test_auth_guards_the_successor_endpoints(redis_url, tmp_path, tiny_bert):
    settings = make_settings(redis_url, tmp_path, tiny_bert, basic_auth_user="u", basic_auth_pass="p")
    client = create_app(FeasibleALModel, settings=settings).test_client()
    assert client.post("/successor", json={"project": PID}).status_code == 401
    assert client.get("/successor/successor-11-000000000000/download").status_code == 401


def test_cancelling_a_running_build_leaves_no_export(client, backend):
    job_id = client.post("/successor", json={"project": PID, **FAST}).json["job_id"]
    backend.store.request_successor_cancel(job_id)  # as if asked mid-run
    work(backend)
    described = describe_job(backend, job_id)
    assert described["status"] == "failed" and described["stage"] == "cancelled"
    assert "cancelled" in described["error"]
    assert not (backend.settings.model_dir / str(PID) / "successors").exists() or not any(
        (backend.settings.model_dir / str(PID) / "successors").iterdir())
    assert client.post("/successor", json={"project": PID, **FAST}).status_code == 202


def test_cancel_endpoint_cancels_a_queued_build(client, backend):
    job_id = client.post("/successor", json={"project": PID, **FAST}).json["job_id"]
    r = client.post(f"/successor/{job_id}/cancel")
    assert r.status_code == 202
    assert describe_job(backend, job_id)["status"] == "canceled"
    assert client.post("/successor", json={"project": PID, **FAST}).status_code == 202
