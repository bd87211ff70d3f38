"""The fast path against a real Label Studio 1.23.2: one annotation, made through LS's API and
delivered by the webhook LS creates when the backend is connected, switches the project's
model_version to a new fast version within seconds, and Uncertainty sampling's /next then serves
the lowest-score task of it. Prints the latencies (annotation -> LS model_version changed)."""
from __future__ import annotations

import secrets
import statistics
import time

import pytest

from backend.service.jobs.signals import SUSPECT_VERSION
from tests.helpers.backend import CLASSIFICATION_XML, NER_XML
from tests.helpers.ls_admin import UNCERTAINTY_SAMPLING
from tests.helpers.servers import BackendProcesses
from tests.integration.test_backend_e2e import (  # noqa: F401  (module fixture `ls`)
    Stack,
    classification_tasks,
    ls,
    ner_tasks,
    stack_env,
)
from tests.integration.test_backend_e2e import (
    wait_for as wait_for_every,
)

pytestmark = pytest.mark.integration

POOL = 200
TOP_K = 16
MEASURED = 5
SWITCH_TIMEOUT = 10.0  # "within a few seconds", with slack for a loaded 2-core machine


@pytest.fixture(scope="module")
def stack(label_studio, redis_server, tiny_bert, tmp_path_factory):
    """The e2e stack with the fast path on and no basic auth (LS's automatic webhook carries none)."""
    root = tmp_path_factory.mktemp("fast-path")
    env = stack_env(label_studio, redis_server, tiny_bert, root, FAST_PATH="on", FAST_TOP_K=str(TOP_K),
                    TRAIN_EVERY_N="0", BASIC_AUTH_USER="", BASIC_AUTH_PASS="", TORCH_THREADS="1")
    with BackendProcesses(env, root, startup_timeout=90) as processes:
        yield Stack(processes.url, env, processes)


def fast_status(stack: Stack, pid: int) -> dict:
    return stack.get(f"/projects/{pid}").json().get("fast_path") or {}



def wait_for(predicate, timeout: float, what: str, stack: Stack):
    return wait_for_every(predicate, timeout, what, stack, interval=0.05)


def version_scores(ls, pid: int, version: str) -> dict[int, float]:
    out = {}
    for task in ls.iter_tasks(pid, only_labeled=False, fields="all"):
        for p in task.get("predictions", []):
            if p.get("model_version") == version:
                out[int(task["id"])] = float(p["score"])
    return out


def test_one_annotation_switches_label_studio_to_a_fast_version(stack, ls):
    pid = ls.create_project(f"fast-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    data, results = classification_tasks(POOL)
    ids = ls.import_tasks(pid, data)
    ls.connect_ml_backend(pid, stack.url, "feasible-al")
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    label_of = dict(zip(ids, results))
    first = [ids[0]] + [t for t in ids[1:] if label_of[t] != label_of[ids[0]]][:1]  # two classes
    for task_id in first:
        ls.create_annotation(task_id, label_of[task_id])
    # the first update waits for the pool features (chunk jobs), then publishes
    wait_for(lambda: fast_status(stack, pid).get("status") == "published", 180, "the first fast version", stack)

    latencies = []
    for _ in range(MEASURED):
        before = ls.get_project(pid)["model_version"]
        served = ls.next_task(pid)
        t0 = time.perf_counter()
        ls.create_annotation(int(served["id"]), label_of[int(served["id"])])  # the annotator labels what /next served
        version = wait_for(lambda before=before: (v := ls.get_project(pid)["model_version"]) != before and v,
                           SWITCH_TIMEOUT, "LS's model_version switching to a new fast version", stack)
        latencies.append(time.perf_counter() - t0)
        assert version.startswith("fast-")
        # wait for the update that includes this annotation (a burst may publish twice)
        status = wait_for(lambda version=version: (s := fast_status(stack, pid)).get("version") == version and s,
                          5, "status", stack)
        scores = version_scores(ls, pid, version)
        assert status["pushed_before_switch"] <= len(scores) <= status["pushed"] == TOP_K  # the rest follow the switch
        nxt = ls.next_task(pid)
        assert nxt is not None and scores[int(nxt["id"])] == min(scores.values()), \
            "Uncertainty sampling serves the fast version's lowest-score task"
    state = stack.get(f"/projects/{pid}").json()
    assert state["serving"]["model"] == "proxy" and state["version"] == ls.get_project(pid)["model_version"]
    print(f"\nannotation -> LS model_version switched: p50 {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s over {len(latencies)} ({[round(x, 2) for x in latencies]}); "
          f"last update's stages: {state['fast_path']['seconds']}")
    # superseded fast versions are deleted off the path: LS ends holding the current and previous one
    # (beside them LS may hold the suspect-labels version, which the pruning leaves alone)
    held = wait_for(lambda: (held := ls.model_versions(pid)) and len([v for v in held if v.startswith("fast-")]) <= 2
                    and held, 60, "pruning of superseded fast versions", stack)
    fast = {v: n for v, n in held.items() if v.startswith("fast-")}
    assert ls.get_project(pid)["model_version"] in fast and sum(fast.values()) <= 2 * TOP_K, held
    assert set(held) - set(fast) <= {SUSPECT_VERSION}, held
    ls.delete_project(pid)


def test_a_tagging_annotation_gives_a_fast_version_with_spans_in_label_studio(stack, ls):
    """NER: the token head's fast version in LS within seconds of an annotation; the predictions LS
    holds carry ``labels`` spans LS accepted (its offsets and text match the task's text), and
    /next serves the lowest score."""
    pid = ls.create_project(f"fast-ner-{secrets.token_hex(3)}", NER_XML)["id"]
    data, results = ner_tasks(POOL)
    ids = ls.import_tasks(pid, data)
    ls.connect_ml_backend(pid, stack.url, "feasible-al")
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    regions, text = dict(zip(ids, results)), {t: d["text"] for t, d in zip(ids, data)}
    for task_id in ids[:10]:
        ls.create_annotation(task_id, regions[task_id])
    wait_for(lambda: (s := fast_status(stack, pid)).get("status") == "published" and s.get("labeled", 0) >= 10, 180,
             "the first tagging fast version", stack)
    before = ls.get_project(pid)["model_version"]
    served = int(ls.next_task(pid)["id"])
    t0 = time.perf_counter()
    ls.create_annotation(served, regions[served])
    version = wait_for(lambda: (v := ls.get_project(pid)["model_version"]) != before and v, SWITCH_TIMEOUT,
                       "LS's model_version switching after a tagging annotation", stack)
    print(f"\nNER annotation -> LS model_version switched in {time.perf_counter() - t0:.2f} s")
    status = wait_for(lambda: (s := fast_status(stack, pid)).get("version") == version and s, 5, "status", stack)
    assert status["status"] == "published" and set(status["classes"]) <= {"PER", "LOC"}
    held = [(int(task["id"]), p) for task in ls.iter_tasks(pid, only_labeled=False, fields="all")
            for p in task.get("predictions", []) if p.get("model_version") == version]
    assert held and status["pushed_before_switch"] > 0
    spans = [(task_id, r) for task_id, p in held for r in p["result"]]
    assert spans, "the pushed predictions pre-annotate spans"
    for task_id, r in spans:
        value = r["value"]
        assert r["type"] == "labels" and value["labels"][0] in ("PER", "LOC")
        assert text[task_id][value["start"]:value["end"]] == value["text"]
    # /next serves the lowest score of the version LS holds now (the rest of the top K, pushed after
    # the switch, and a later update's predictions may have arrived since `held` was read)
    def served_and_scores():  # read while LS's version stays put (a later update may switch it meanwhile)
        current = ls.get_project(pid)["model_version"]
        served = int(ls.next_task(pid)["id"])
        scores = {int(task["id"]): float(p["score"]) for task in ls.iter_tasks(pid, only_labeled=False, fields="all")
                  for p in task.get("predictions", [])
                  if p.get("model_version") == current and not task.get("annotations")}
        return (served, scores) if ls.get_project(pid)["model_version"] == current else None

    served, scores = wait_for(served_and_scores, 30, "a steady model_version in LS", stack)
    assert scores[served] == min(scores.values())
    ls.delete_project(pid)
