"""The tagging fast path with a real Redis and a real in-process RQ worker (tiny encoder):
annotation webhooks -> per-word pool features in chunk jobs -> a token-head fast version in Label
Studio whose pushed predictions carry the head's spans; bad input ends in a defined status."""
from __future__ import annotations

import numpy as np
import pytest

from backend.engine.metrics import strict_span_f1
from backend.engine.proxy import FeatureEncoder
from backend.engine.token_head import TokenHead, is_valid_iob2
from backend.engine.types import TaskType
from backend.engine.word_features import WordEncoder
from backend.labeling import gold_tagging_results, parse_label_config, text_to_example
from backend.labeling.results import iob2_spans
from backend.labeling.text import split_words
from backend.service.checkpoints import checkpoint_dir
from backend.service.features import finetuned_key, word_key
from backend.service.jobs.gate import fast_path_blocker
from backend.service.jobs.iteration import request_training
from backend.service.jobs.serving import drop_unused_features, follow_serving_model, use_base_features
from backend.service.runtime import set_context
from tests.helpers.backend import NER_XML
from tests.helpers.toy_data import toy_tagging
from tests.unit.service.test_fast_path import PID, TOP_K, connect, fast_status, make_backend, work

CONFIG = parse_label_config(NER_XML)


@pytest.fixture
def backend(redis_url, tmp_path, tiny_bert):
    b = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0)
    set_context(b)
    yield b
    set_context(None)


def sentences(n: int, seed: int = 0) -> list[tuple[str, list[dict], list[str]]]:
    """(text, gold span results, IOB2 tags) of toy sentences with PER and LOC names."""
    out = []
    for ex in toy_tagging(n, seed):
        text, regions = gold_tagging_results(ex.words, ex.tags, CONFIG)
        out.append((text, regions, ex.tags))
    return out


def annotate(client, ls, task_id: int, regions: list[dict]) -> dict:
    annotation = ls.annotate(task_id, regions)
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": PID},
                                      "task": {"id": task_id}, "annotation": annotation})
    assert r.status_code in (200, 201), r.json
    return r.json


def spans_of(result: list[dict]) -> set[tuple[int, int, str]]:
    return {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result}


def test_annotations_give_a_tagging_fast_version_with_spans(backend):
    data = sentences(80)
    ls, client = connect(backend, [t for t, _, _ in data], xml=NER_XML)
    labeled = 30
    answers = [annotate(client, ls, i + 1, regions) for i, (_, regions, _) in enumerate(data[:labeled])]
    assert answers[0]["fast"] == "enqueue"
    work(backend)

    state = client.get(f"/projects/{PID}").json
    status = state["fast_path"]
    assert status["status"] == "published", status
    version = status["version"]
    assert ls.model_version == version and state["features"]["key"] == word_key(backend.settings.feature_encoder)
    assert status["labeled"] == labeled and status["pool_size"] == status["scored"] == 80 - labeled
    assert status["pushed"] == TOP_K and set(status["classes"]) == {"PER", "LOC"}
    assert "entities" in status["message"] and set(status["seconds"]) >= {"fetch_labels", "fit", "score"}

    # the pushed predictions carry spans at code-point offsets that cover whole words of the text
    pushed = [p for p in ls.predictions if p["model_version"] == version]
    assert len(pushed) == TOP_K
    gold = {i + 1: (text, tags) for i, (text, _, tags) in enumerate(data)}
    found, expected = set(), set()
    for prediction in pushed:
        text, tags = gold[prediction["task"]]
        for r in prediction["result"]:
            value = r["value"]
            assert text[value["start"]:value["end"]] == value["text"] and value["labels"][0] in ("PER", "LOC")
            assert r["from_name"] == CONFIG.control_name and r["to_name"] == CONFIG.object_name
        found |= {(prediction["task"], *s) for s in spans_of(prediction["result"])}
        _, regions = gold_tagging_results(text.split(" "), tags, CONFIG)
        expected |= {(prediction["task"], *s) for s in spans_of(regions)}
    assert len(found & expected) >= 0.5 * len(expected), "the head finds most names on this toy set"

    # /predict answers every pool task with spans (stored for the shown ones, decoded on demand for
    # the rest, and for a task created after the features); LS serves the lowest score first
    pool = [{"id": i + 1, "data": {"text": t}} for i, (t, _, _) in enumerate(data) if i >= labeled]
    answer = client.post("/predict", json={"project": f"{PID}.1", "tasks": pool}).json
    assert answer["model_version"] == version and len(answer["results"]) == len(pool)
    scores = {t["id"]: r["score"] for t, r in zip(pool, answer["results"])}
    assert scores[ls.next_task()] == pytest.approx(min(scores.values()))
    for task, result in zip(pool, answer["results"]):
        example = text_to_example(task["data"]["text"], CONFIG)
        tags = ["O"] * len(example.words)
        for r in result["result"]:  # the spans map back onto a valid IOB2 sequence over the words
            first = next(k for k, (s, _) in enumerate(example.offsets) if s == r["value"]["start"])
            last = next(k for k, (_, e) in enumerate(example.offsets) if e == r["value"]["end"])
            tags[first:last + 1] = ["B-" + r["value"]["labels"][0]] + ["I-" + r["value"]["labels"][0]] * (last - first)
        assert is_valid_iob2(tags) and len(iob2_spans(tags)) == len(result["result"])
    # a task created after the features, with the text of a shown sentence the head tagged: encoded
    # and decoded on demand, to the same spans
    shown = next(p for p in pushed if p["result"])
    text = gold[shown["task"]][0]
    new = client.post("/predict", json={"project": f"{PID}.1", "tasks": [{"id": 999, "data": {"text": text}}]}).json
    assert new["model_version"] == version
    assert spans_of(new["results"][0]["result"]) == spans_of(shown["result"]), "a new task is tagged on demand"

    # the next annotations: a newer version
    annotate(client, ls, labeled + 1, data[labeled][1])
    work(backend)
    second = fast_status(client)
    assert second["status"] == "published" and second["version"] != version and second["labeled"] == labeled + 1


def test_sentences_without_entities_and_empty_texts(backend):
    data = sentences(30, seed=1)
    texts = [t for t, _, _ in data] + ["", "   "]
    ls, client = connect(backend, texts, xml=NER_XML)
    annotate(client, ls, 1, [])  # a sentence with no entity: a valid all-O label
    work(backend)
    status = fast_status(client)
    assert status["status"] == "published", status
    assert "no entity is labeled yet" in status["message"]
    pushed = [p for p in ls.predictions if p["model_version"] == status["version"]]
    assert pushed and all(p["result"] == [] for p in pushed), "all-O head: no spans"
    assert {p["task"] for p in pushed}.isdisjoint({31, 32}), "empty texts are never pushed"

    # an unknown label: the task is skipped with a message, the others still count
    bad = [{**data[1][1][0], "value": {**data[1][1][0]["value"], "labels": ["WEAPON"]}}] if data[1][1] else []
    annotate(client, ls, 2, bad or [{"from_name": "label", "to_name": "text", "type": "labels",
                                     "value": {"start": 0, "end": 1, "text": data[1][0][0], "labels": ["WEAPON"]}}])
    annotate(client, ls, 3, data[2][1])
    work(backend)
    status = fast_status(client)
    assert status["status"] == "published" and status["labeled"] == 2, status
    assert status["conversion"]["skipped"].get("unknown_label") == 1


def test_tagging_features_cover_tasks_created_after_them(backend):
    data = sentences(40, seed=2)
    ls, client = connect(backend, [t for t, _, _ in data[:30]], xml=NER_XML)
    for i in range(5):
        annotate(client, ls, i + 1, data[i][1])
    work(backend)
    first = fast_status(client)
    assert first["status"] == "published" and first["scored"] == 25
    new = {100 + i: {"id": 100 + i, "data": {"text": t}, "annotations": []} for i, (t, _, _) in enumerate(data[30:33])}
    ls.tasks.update(new)  # three new tasks: fewer than FAST_ENCODE_LIMIT, encoded by the update itself
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": PID},
                                  "tasks": [{"id": t["id"], "data": t["data"]} for t in new.values()]})
    annotate(client, ls, 6, data[5][1])
    work(backend)
    status = fast_status(client)
    assert status["status"] == "published", status
    assert status["scored"] == status["pool_size"] == 27 and status.get("encoded_on_demand") == 3
    features = backend.features.load_words(PID, word_key(backend.settings.feature_encoder))
    assert len(features.ids) == 33 and int(np.sum(features.words.lengths == 0)) == 0
    rows, found = features.rows(list(new))
    assert found.all() and features.words.lengths[rows].tolist() == [len(t.split(" ")) for t, _, _ in data[30:33]]


def fifteen_labels_and_a_full_iteration(backend, n: int, seed: int):
    """n toy sentences, 15 labeled (the last through the webhook: a fast version), then iteration 1:
    (data, LS stand-in, client)."""
    data = sentences(n, seed=seed)
    ls, client = connect(backend, [t for t, _, _ in data], xml=NER_XML)
    for i in range(14):
        ls.annotate(i + 1, data[i][1])
    annotate(client, ls, 15, data[14][1])
    work(backend)
    assert fast_status(client)["status"] == "published"
    request_training(backend, PID, "test")
    work(backend)
    return data, ls, client


def test_full_iterations_choose_between_fine_tune_and_token_head_by_span_f1(backend):
    """Two full iterations on a tagging project: the first has no earlier fine-tune to measure (the
    token head's CV span F1 alone: it serves); the second measures iteration 1's fine-tune on the
    sentences labeled after it. Either way the choice and its numbers are in ``/projects/<id>``."""
    data, ls, client = fifteen_labels_and_a_full_iteration(backend, 60, seed=4)
    state = client.get(f"/projects/{PID}").json
    serving = state["serving"]
    assert serving["model"] == "proxy", serving
    why = serving["why"]
    assert why["proxy"]["cv_accuracy"] is not None and why["proxy"]["folds"] == 5 and why["proxy"]["labeled"] == 15
    assert "span F1" in why["why_serve"] and "span F1" in why["rule"]
    assert state["version"].startswith("fast-") and ls.model_version == state["version"]

    for i in range(15, 27):  # labels after iteration 1's fine-tune: its held-out sentences
        ls.annotate(i + 1, data[i][1])
    request_training(backend, PID, "test")
    work(backend)
    why = client.get(f"/projects/{PID}").json["serving"]["why"]
    assert why["finetuned"]["heldout"] == 12 and why["finetuned"]["heldout_accuracy"] is not None, why
    assert why["finetuned"]["version"] and "span F1" in why["why_serve"]
    # paired: the token head fitted on the 15 sentences that fine-tune was trained on, scored on the
    # same 12 later ones, and any lead switches (a winning tagger's word features go to the head)
    assert why["proxy"]["labeled"] == 15 and "on the same 12 later sentences" in why["proxy"]["note"], why
    assert "the token head's span F1" in why["why_serve"] and why["margin"] == 0.0
    features = backend.features.load_words(PID, word_key(backend.settings.feature_encoder))
    rows, found = features.rows(list(range(1, 28)))
    assert found.all()
    head = TokenHead(CONFIG.schema, backend.settings.seed).fit(features.words.take(rows[:15]),
                                                              [tags for _, _, tags in data[:15]])
    predicted = head.predict(features.words.take(rows[15:])).all_tags()
    expected = strict_span_f1([tags for _, _, tags in data[15:27]], predicted)
    assert why["proxy"]["cv_accuracy"] == pytest.approx(expected, abs=1e-4)
    lead = why["finetuned"]["heldout_accuracy"] > why["proxy"]["cv_accuracy"]
    assert why["serve"] == ("finetuned" if lead else "proxy"), why


def test_large_pools_rescore_a_ups_subsample_from_the_last_version(backend, monkeypatch):
    """Above UPS_MIN_WORDS words (lowered here to this toy pool's size) a fast update re-scores
    UPS's draw over the serving fast version's scores: the top share by that version's uncertainty
    and the sentences it never scored; every pool task still has a score, and the shown ones spans."""
    import backend.engine.token_head as token_head

    monkeypatch.setattr(token_head, "UPS_MIN_WORDS", 1)
    data = sentences(200, seed=5)
    ls, client = connect(backend, [t for t, _, _ in data], xml=NER_XML)
    for i in range(20):
        ls.annotate(i + 1, data[i][1])
    annotate(client, ls, 21, data[20][1])
    work(backend)
    first = fast_status(client)
    assert first["status"] == "published" and "rescored" not in first, "no earlier version: every sentence"

    annotate(client, ls, 22, data[21][1])
    work(backend)
    second = fast_status(client)
    assert second["status"] == "published" and second["version"] != first["version"], second
    assert 0 < second["rescored"] < 0.5 * second["scored"] and "UPS re-scored" in second["message"]
    assert second["scored"] == second["pool_size"] == 200 - 22
    pushed = [p for p in ls.predictions if p["model_version"] == second["version"]]
    assert len(pushed) == TOP_K and any(p["result"] for p in pushed)
    pool = [{"id": i + 1, "data": {"text": t}} for i, (t, _, _) in enumerate(data) if i >= 22]
    answer = client.post("/predict", json={"project": f"{PID}.1", "tasks": pool}).json
    assert answer["model_version"] == second["version"]
    assert all(0 < r["score"] <= 1 for r in answer["results"]), "every pool task keeps a score"


def test_a_winning_tagging_fine_tune_hands_the_token_head_its_own_word_features(backend):
    """Once a tagging fine-tune wins the serving choice, its encoder's per-word pool features are
    built from its checkpoint and fast updates re-fit the token head on them (on WNUT-16 that head
    beats the fine-tune it came from: docs/benchmarks/label-efficiency-tagging/aligned_screen.json);
    when the token head measures better again it goes back to the pretrained encoder's."""
    data, ls, client = fifteen_labels_and_a_full_iteration(backend, 50, seed=6)
    version = backend.store.get_project(PID).acq_version
    aligned_key = finetuned_key(version, TaskType.TAGGING)
    assert aligned_key.startswith("words-") and not backend.features.load(PID, finetuned_key(version)).ids.size, \
        "a tagger's scoring chunks keep no sentence vectors"

    # the fine-tune won the choice (planted: who wins on toy data is chance)
    backend.store.set_fields(PID, finetune_won=True, serving_model="finetuned", feature_source_version="")
    assert "resumes on its features" in fast_path_blocker(backend, backend.store.get_project(PID))
    assert follow_serving_model(backend, PID, version, "finetuned", full_rescore=True)
    work(backend)  # the build encodes the pool and the labeled sentences with the checkpoint, then a fast update
    state = client.get(f"/projects/{PID}").json
    assert state["features"]["key"] == aligned_key and state["features"]["aligned_with"] == version
    status = state["fast_path"]
    assert status["status"] == "published" and status["labeled"] == 15, status
    assert ls.model_version == status["version"] and version in state["serving"]["why"]["features"]
    assert any(p["result"] for p in ls.predictions if p["model_version"] == status["version"])
    aligned = backend.features.load_words(PID, aligned_key)
    assert len(aligned.ids) == 50
    text = data[20][0]
    rows, _ = aligned.rows([21])
    reference = WordEncoder(FeatureEncoder(checkpoint_dir(backend.settings.model_dir, PID, version), device="cpu"))
    expected = reference.encode([[w for w, _, _ in split_words(text)]])
    np.testing.assert_allclose(aligned.words.take(rows).matrix.astype(np.float32),
                               expected.matrix.astype(np.float32), atol=5e-3)
    base = word_key(backend.settings.feature_encoder)
    assert len(backend.features.load_words(PID, base).ids) == 50, "the serving choice still reads the pretrained set"

    use_base_features(backend, PID)  # the token head measured better at a later iteration
    state = backend.store.get_project(PID)
    assert state.feature_key == base and not state.feature_source_version
    backend.store.set_fields(PID, acq_version="acq-2-later")  # the next full rescore drops the loser's set
    drop_unused_features(backend, backend.store.get_project(PID))
    assert not backend.features.load_words(PID, aligned_key).ids.size
    assert len(backend.features.load_words(PID, base).ids) == 50
