"""The whole backend against a real Label Studio 1.23.2, a real redis-server, gunicorn and an RQ
worker subprocess, all on 127.0.0.1 with free ports (the issue's Acceptance section).

For a classification and a NER project: create it from label_config_examples/, import tasks,
connect the backend through the API (with basic auth), annotate, press Start training through the
API, wait for the job, then check that every unlabeled task holds a prediction of the new version,
that the project's model_version is that version, that /next under Uncertainty sampling returns
the lowest-score task, and that a second iteration re-scores only the UPS subset.
"""
from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from dataclasses import dataclass

import pytest
import requests
from transformers import AutoModelForSequenceClassification

from backend.labeling import gold_tagging_results, parse_label_config
from backend.service.ls_client import LabelStudioError
from tests.helpers.backend import CLASSIFICATION_XML, NER_XML, SENTIMENT
from tests.helpers.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioTestClient
from tests.helpers.polling import poll_until
from tests.helpers.servers import BackendProcesses
from tests.helpers.toy_data import toy_classification, toy_tagging

pytestmark = pytest.mark.integration

AUTH = ("label-studio", "backend-" + secrets.token_hex(4))
POOL = 36  # tasks per project
FIRST_LABELS = 10
SECOND_LABELS = 4
MAX_REQUEST_BYTES = 2 * 1024 * 1024


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    processes: BackendProcesses

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=AUTH, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(f"{self.url}{path}", auth=AUTH, timeout=60, **kw)

    def log_tail(self) -> str:
        return self.processes.log_tail()


def wait_for(predicate, timeout: float, what: str, stack: Stack, interval: float = 0.2):
    return poll_until(predicate, timeout, what, stack.log_tail, interval)


def stack_env(label_studio, redis_server, tiny_bert, root, **overrides: str) -> dict[str, str]:
    """The e2e stack's environment (other suites override a setting or two, e.g. TRAIN_EVERY_N)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
        "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token,
        "REDIS_URL": redis_server.url, "KEY_PREFIX": f"e2e-{secrets.token_hex(3)}",
        "MODEL_DIR": str(root / "models"), "ACQUISITION_MODEL": str(tiny_bert), "DEVICE": "cpu",
        "EPOCHS": "3", "LEARNING_RATE": "0.001", "TRAIN_EVERY_N": "0", "FULL_RESCORE_ITERATIONS": "1",
        "SCORE_CHUNK_SIZE": "8", "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1],
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES), "WORKERS": "1", "THREADS": "4",
        # these suites check the full iterations' order; tests/integration/test_fast_path.py the fast one
        "FAST_PATH": "off",
        **overrides,
    }


@pytest.fixture(scope="module")
def stack(label_studio, redis_server, tiny_bert, tiny_electra, tmp_path_factory):
    """gunicorn (backend._wsgi:app) + one RQ worker, configured through the environment only (the
    operator allows the tiny models as PLASM teacher and successor, as /successor requires)."""
    root = tmp_path_factory.mktemp("backend-e2e")
    env = stack_env(label_studio, redis_server, tiny_bert, root,
                    TEACHER_MODEL=str(tiny_bert), SUCCESSOR_MODEL=str(tiny_electra))
    with BackendProcesses(env, root, startup_timeout=90) as processes:
        yield Stack(processes.url, env, processes)


@pytest.fixture(scope="module")
def ls(label_studio):
    return LabelStudioTestClient(label_studio.url, label_studio.token)


# ------------------------------------------------------------------------------- task builders


def classification_tasks(n: int) -> tuple[list[dict], list[list[dict]]]:
    examples = toy_classification(n, seed=3)
    tasks = [{"text": ex.text} for ex in examples]
    results = [[{"from_name": "sentiment", "to_name": "text", "type": "choices",
                 "value": {"choices": [SENTIMENT[ex.labels[0]]]}}] for ex in examples]
    return tasks, results


def ner_tasks(n: int) -> tuple[list[dict], list[list[dict]]]:
    config = parse_label_config(NER_XML)
    gold = [gold_tagging_results(ex.words, ex.tags, config) for ex in toy_tagging(n, seed=3)]
    return [{"text": text} for text, _ in gold], [regions for _, regions in gold]


CASES = {
    "classification": (CLASSIFICATION_XML, classification_tasks),
    "ner": (NER_XML, ner_tasks),
}


# ------------------------------------------------------------------------------- helpers


def wait_for_iteration(stack: Stack, project_id: int, iteration: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = stack.get(f"/projects/{project_id}").json()
        if state.get("last_error") and not state.get("running_job") and not state.get("queued_job"):
            pytest.fail(f"training failed: {state['last_error']}\n{stack.log_tail()}")
        if state["iteration"] >= iteration and not state["running_job"] and not state["queued_job"]:
            return state
        time.sleep(0.5)
    pytest.fail(f"iteration {iteration} not published after {timeout}s: {state}\n{stack.log_tail()}")


def predictions_by_task(ls: LabelStudioTestClient, project_id: int, version: str) -> dict[int, float]:
    """Score of each unlabeled task's prediction of `version` (tasks without one are left out)."""
    out = {}
    for task in ls.iter_tasks(project_id, only_labeled=False, fields="all"):
        scores = [p["score"] for p in task.get("predictions", []) if p.get("model_version") == version]
        if scores:
            assert len(scores) == 1, f"task {task['id']} holds {len(scores)} predictions of {version}"
            out[int(task["id"])] = float(scores[0])
    return out


def train(stack: Stack, ls: LabelStudioTestClient, project_id: int, ml_backend_id: int, iteration: int) -> dict:
    before = stack.get(f"/projects/{project_id}").json()
    ls.start_training(ml_backend_id)  # LS posts /webhook {"action": "START_TRAINING"}
    state = wait_for_iteration(stack, project_id, iteration)
    state["model_scored_delta"] = state["model_scored_total"] - before["model_scored_total"]
    return state


def check_ordering(
    ls: LabelStudioTestClient, project_id: int, version: str, unlabeled: set[int]
) -> tuple[dict[int, float], int]:
    """Scores of the new version, and the task Uncertainty sampling served (LS keeps serving it to
    the same user until it is annotated, as an annotator would)."""
    assert ls.get_project(project_id)["model_version"] == version
    scores = predictions_by_task(ls, project_id, version)
    assert set(scores) == unlabeled, "every unlabeled task holds exactly one prediction of the new version"
    nxt = ls.next_task(project_id)
    assert nxt is not None and scores[int(nxt["id"])] == min(scores.values()), \
        "Uncertainty sampling must serve the least confident task first"
    return scores, int(nxt["id"])


# ------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", list(CASES))
def test_two_iterations_of_active_learning(stack, ls, label_studio, kind):
    xml, build = CASES[kind]
    project = ls.create_project(f"e2e-{kind}-{secrets.token_hex(3)}", xml)
    pid = project["id"]
    data, results = build(POOL + 3)
    ids = ls.import_tasks(pid, data[:POOL])
    backend = ls.connect_ml_backend(pid, stack.url, "feasible-al", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    assert stack.get(f"/projects/{pid}").json()["version"] == "untrained"  # LS called /setup
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    for task_id, result in zip(ids[:FIRST_LABELS], results[:FIRST_LABELS]):
        ls.create_annotation(task_id, result)

    # ---- iteration 1: the whole pool is scored
    first = train(stack, ls, pid, backend.id, 1)
    v1 = first["version"]
    record = first["last_iteration"]
    unlabeled = set(ids[FIRST_LABELS:])
    assert record["pool_size"] == len(unlabeled) == POOL - FIRST_LABELS
    assert record["scored_by_model"] == record["subset_size"] == len(unlabeled) and record["full_rescore"]
    assert first["model_scored_delta"] == len(unlabeled)
    assert record["pushed"] == len(unlabeled)
    assert set(record["seconds"]) >= {"train", "inference", "push", "total"}
    scores_v1, served_v1 = check_ordering(ls, pid, v1, unlabeled)
    assert stack.post("/setup", json={"project": f"{pid}.0", "schema": xml}).json() == {"model_version": v1}

    # ---- LS -> /predict for new tasks nobody scored yet (Retrieve predictions)
    new_ids = ls.import_tasks(pid, data[POOL:])
    before = stack.get(f"/projects/{pid}").json()["model_scored_total"]
    r = requests.post(f"{label_studio.url}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                      json={"selectedItems": {"all": False, "included": new_ids + ids[FIRST_LABELS:FIRST_LABELS + 5]}},
                      headers={"Authorization": f"Token {label_studio.token}"}, timeout=120)
    assert r.status_code == 200, r.text
    assert stack.get(f"/projects/{pid}").json()["model_scored_total"] == before + len(new_ids)  # cached ones: no model
    assert set(new_ids) <= set(predictions_by_task(ls, pid, v1))
    unlabeled |= set(new_ids)

    # ---- iteration 2: only the UPS subset is re-scored, the rest keep their stale scores
    # the annotator labels the task Uncertainty sampling served, then a few more
    result_of = dict(zip(ids, results))
    more = [served_v1] + [t for t in ids[FIRST_LABELS:] if t != served_v1][: SECOND_LABELS - 1]
    for task_id in more:
        ls.create_annotation(task_id, result_of[task_id])
    unlabeled -= set(more)
    second = train(stack, ls, pid, backend.id, 2)
    v2 = second["version"]
    record = second["last_iteration"]
    assert v2 != v1 and record["iteration"] == 2 and not record["full_rescore"]
    assert record["pool_size"] == len(unlabeled) and record["pool_refreshed"]  # LS holds new tasks
    subset = record["subset_size"]
    assert 0 < subset < len(unlabeled)
    assert record["scored_by_model"] == subset == second["model_scored_delta"]  # model calls counted
    assert record["kept_stale"] == len(unlabeled) - subset
    scores_v2, _ = check_ordering(ls, pid, v2, unlabeled)
    old = {**scores_v1, **predictions_by_task(ls, pid, v1)}
    unchanged = sum(1 for t in unlabeled if scores_v2[t] == old[t])
    assert unchanged >= len(unlabeled) - subset  # stale scores carried over, not recomputed

    # ---- status endpoints
    versions = stack.get(f"/versions?project={pid}").json()
    assert versions["versions"][-2:] == [v1, v2] and versions["current"] == v2
    metrics = stack.get("/metrics").text
    assert f'feasible_al_iteration{{project="{pid}"}} 2.0' in metrics
    assert f'feasible_al_last_iteration_scored_tasks{{project="{pid}"}} {float(subset)}' in metrics
    ls.delete_project(pid)


def test_successor_build_from_a_real_project(stack, ls, tiny_bert, tiny_electra, tmp_path):
    """PLASM end to end: gold labels and the pool come from Label Studio, the archive loads."""
    xml, build = CASES["classification"]
    pid = ls.create_project(f"e2e-plasm-{secrets.token_hex(3)}", xml)["id"]
    data, results = build(40)
    ids = ls.import_tasks(pid, data)
    ls.connect_ml_backend(pid, stack.url, "feasible-al", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    for task_id, result in zip(ids[:24], results[:24]):
        ls.create_annotation(task_id, result)
    options = {"project": pid, "teacher": str(tiny_bert), "successor": str(tiny_electra),
               "epochs": 2, "learning_rate": 1e-3, "tracin_checkpoints": 2}
    r = stack.post("/successor", json=options)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    busy = stack.post("/successor", json=options)
    assert busy.status_code == 409 and busy.json()["job_id"] == job_id
    deadline = time.monotonic() + 300
    while (status := stack.get(f"/jobs/{job_id}").json())["status"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"successor job still {status}\n{stack.log_tail()}"
        time.sleep(1)
    assert status["status"] == "finished" and status["stage"] == "done", f"{status}\n{stack.log_tail()}"
    assert status["sizes"]["gold"] == 24 and status["sizes"]["pool"] == 16
    assert status["metrics"]["chosen"] in ("plasm", "gold_only")
    download = stack.get(f"/successor/{job_id}/download")
    assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / job_id)
    assert set(model.config.id2label.values()) == set(parse_label_config(xml).schema.labels)
    ls.delete_project(pid)


def test_bad_inputs_get_clear_json_errors(stack, ls):
    r = requests.post(f"{stack.url}/predict", json={"tasks": []}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = stack.post("/predict", data=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    image = '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    r = stack.post("/setup", json={"project": "1.1", "schema": image})
    assert r.status_code == 422 and r.json()["error"] == "unsupported_label_config"
    assert "Choices->Image" in r.json()["message"]
    r = stack.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "x"}}], "project": "987654.1"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_project"
    r = stack.post("/predict", data=b"{" + b" " * (MAX_REQUEST_BYTES + 10) + b"}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"
    r = stack.post("/webhook", json={"project": {"id": 1}})
    assert r.status_code == 400 and "'action'" in r.json()["message"]
    r = stack.get("/jobs/not-a-job")
    assert r.status_code == 404 and r.json()["error"] == "unknown_job"
    # Connecting the backend to a project with a config it cannot learn is refused by LS (its
    # /setup check gets our 422), so the user sees it at once.
    project = ls.create_project(f"e2e-bad-{secrets.token_hex(3)}", image)
    try:
        with pytest.raises(LabelStudioError) as err:
            ls.connect_ml_backend(project["id"], stack.url, "feasible-al",
                                  basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
        assert err.value.status_code == 400 and "422" in str(err.value)
    finally:
        ls.delete_project(project["id"])
