"""Each label config in label_config_examples/ with its sample tasks, in a real Label Studio and
the whole backend (gunicorn + RQ worker, the e2e stack): create the project from the config,
import ``<config>.tasks.json`` as a user would, connect the backend, annotate the first few tasks,
press Start training, then let Label Studio ask the backend's ``/predict`` for every task
(Data Manager "Retrieve predictions"). Every task must then hold exactly one prediction of the new
version whose results fit the config (control/object names, known labels, spans on the text).
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import requests

from backend.engine.types import TaskType
from backend.labeling import LabelConfig, parse_label_config
from tests.integration.test_backend_e2e import AUTH, ls, stack, train  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "label_config_examples"
CONFIGS = sorted(EXAMPLES.glob("*.xml"))

# Gold annotations for the first tasks of each sample file: choices, or (entity text, label) spans.
GOLD: dict[str, list] = {
    "text_classification": [["Positive"], ["Negative"], ["Neutral"], ["Positive"], ["Negative"]],
    "multi_label_classification": [
        ["business", "tech"], ["sport"], ["politics", "business"], ["business", "entertainment"],
        ["politics", "tech"],
    ],
    "ner": [
        [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")],
        [("Apple", "ORG"), ("Munich", "LOC")],
        [("European Union", "ORG"), ("Google", "ORG")],
        [("Serena Williams", "PER"), ("Wimbledon", "MISC")],
        [("Toyota", "ORG"), ("Japan", "LOC"), ("United States", "LOC")],
    ],
    "ner_wnut16": [
        [("Inception", "movie")],
        [("Coldplay", "musicartist"), ("Wembley Stadium", "facility")],
        [("iPhone", "product"), ("Apple", "company")],
        [("Lakers", "sportsteam"), ("LeBron James", "person")],
        [("Chicago", "geo-loc")],
    ],
}


def annotation(config: LabelConfig, text: str, gold: list) -> list[dict]:
    """Label Studio results for one task, as the labeling UI would write them."""
    names = {"from_name": config.control_name, "to_name": config.object_name}
    if config.task_type is TaskType.CLASSIFICATION:
        return [{**names, "type": "choices", "value": {"choices": gold}}]
    results = []
    for entity, label in gold:
        start = text.index(entity)  # code points, like Label Studio
        results.append({**names, "type": "labels",
                        "value": {"start": start, "end": start + len(entity), "text": entity, "labels": [label]}})
    return results


def check_result(config: LabelConfig, text: str, result: list[dict]) -> None:
    """A predicted result Label Studio can show on the task under this config."""
    for region in result:
        assert (region["from_name"], region["to_name"]) == (config.control_name, config.object_name)
        value = region["value"]
        if config.task_type is TaskType.CLASSIFICATION:
            assert region["type"] == "choices" and set(value["choices"]) <= set(config.labels)
        else:
            assert region["type"] == "labels" and set(value["labels"]) <= set(config.labels)
            assert text[value["start"]:value["end"]] == value["text"] and value["text"].strip()
    if config.task_type is TaskType.CLASSIFICATION:
        (region,) = result  # a trained classifier always answers
        assert len(region["value"]["choices"]) == 1 or config.schema.multi_label


def retrieve_predictions(label_studio, project_id: int, task_ids: list[int]) -> None:
    """The Data Manager action "Retrieve predictions": Label Studio POSTs the tasks to ``/predict``."""
    r = requests.post(f"{label_studio.url}/api/dm/actions",
                      params={"id": "retrieve_tasks_predictions", "project": project_id},
                      json={"selectedItems": {"all": False, "included": task_ids}},
                      headers={"Authorization": f"Token {label_studio.token}"}, timeout=120)
    assert r.status_code == 200, r.text


def predictions(ls, project_id: int, version: str) -> dict[int, list[list[dict]]]:
    """Results of each task's predictions of `version`."""
    out: dict[int, list[list[dict]]] = {}
    for task in ls.iter_tasks(project_id, only_labeled=None, fields="all"):  # annotated ones too
        out[int(task["id"])] = [p["result"] for p in task.get("predictions", []) if p.get("model_version") == version]
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_sample_project_gets_one_prediction_per_task(stack, ls, label_studio, path):  # noqa: F811
    xml = path.read_text()
    config = parse_label_config(xml)
    tasks = json.loads(path.with_name(f"{path.stem}.tasks.json").read_text(encoding="utf-8"))
    gold = GOLD[path.stem]
    pid = ls.create_project(f"examples-{path.stem}-{secrets.token_hex(3)}", xml)["id"]
    try:
        ids = ls.import_tasks(pid, tasks)  # the file as it is, like the Import dialog
        assert len(ids) == len(tasks)
        text_of = {i: t["data"][config.value_key] for i, t in zip(ids, tasks)}
        backend = ls.connect_ml_backend(pid, stack.url, "feasible-al", basic_auth_user=AUTH[0],
                                        basic_auth_pass=AUTH[1])
        assert stack.get(f"/projects/{pid}").json()["version"] == "untrained"  # LS called /setup
        for task_id, labels in zip(ids, gold):
            ls.create_annotation(task_id, annotation(config, text_of[task_id], labels))

        state = train(stack, ls, pid, backend.id, 1)
        version = state["version"]
        assert state["last_iteration"]["pool_size"] == len(ids) - len(gold)

        before = stack.get(f"/projects/{pid}").json()["model_scored_total"]
        retrieve_predictions(label_studio, pid, ids)
        # the pool was scored by the iteration; only the annotated tasks needed the model now
        assert stack.get(f"/projects/{pid}").json()["model_scored_total"] == before + len(gold)
        held = predictions(ls, pid, version)
        assert set(held) == set(ids)
        for task_id, results in held.items():
            assert len(results) == 1, f"task {task_id} holds {len(results)} predictions of {version}"
            check_result(config, text_of[task_id], results[0])
    finally:
        ls.delete_project(pid)
