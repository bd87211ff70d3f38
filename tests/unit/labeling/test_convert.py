"""Label Studio tasks -> examples -> Label Studio results, as a user of the backend would check them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from backend.engine.types import ClassificationExample, TaggingExample
from backend.labeling import (
    LabelConfigError,
    MissingTextFieldError,
    classification_results,
    index_to_utf16,
    iob2_spans,
    latest_annotation,
    parse_label_config,
    prediction_entry,
    split_words,
    tagging_results,
    task_text,
    tasks_to_examples,
    unlabeled_examples,
    utf16_to_index,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "label_config_examples"
NER = parse_label_config((EXAMPLES / "ner.xml").read_text())
SENTIMENT = parse_label_config((EXAMPLES / "text_classification.xml").read_text())
TOPICS = parse_label_config((EXAMPLES / "multi_label_classification.xml").read_text())


# --- builders for Label Studio JSON ------------------------------------------------------------


def span(start: int, end: int, label: str, text: str | None = None, from_name: str = "label") -> dict:
    value: dict = {"start": start, "end": end, "labels": [label]}
    if text is not None:
        value["text"] = text
    return {"id": f"r{start}-{end}", "from_name": from_name, "to_name": "text", "type": "labels", "value": value}


def mark(text: str, word: str, label: str, nth: int = 0) -> dict:
    """A span the way Label Studio records it: code-point offsets of `word` in `text`."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return span(start, start + len(word), label, word)


def choice(*labels: str, from_name: str = "sentiment") -> dict:
    return {"id": "c", "from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": list(labels)}}


def ann(result: list, ann_id: int = 1, updated: str | None = "2024-05-01T10:00:00.000000Z",
        created: str | None = "2024-05-01T09:00:00.000000Z", cancelled: bool = False) -> dict:
    return {"id": ann_id, "result": result, "was_cancelled": cancelled, "created_at": created, "updated_at": updated}


def task(task_id: int, text: str | None, *annotations: dict, field: str = "text") -> dict:
    data = {} if text is None else {field: text}
    return {"id": task_id, "data": data, "annotations": list(annotations), "predictions": []}


def one_hot(tags: list[str], names: tuple[str, ...], p: float = 0.9) -> np.ndarray:
    probs = np.full((len(tags), len(names)), (1 - p) / (len(names) - 1))
    for i, tag in enumerate(tags):
        probs[i, names.index(tag)] = p
    return probs


# --- words -----------------------------------------------------------------------------------


def test_split_words_separates_punctuation_and_keeps_offsets():
    text = "Hello, world! It's 3.5 km."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Hello", ",", "world", "!", "It", "'", "s", "3", ".", "5", "km", "."]
    assert all(text[s:e] == w for w, s, e in words)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I ❤️ Paris 🐱!", ["I", "❤️", "Paris", "🐱", "!"]),
        ("👨🏻‍🚒 firemen", ["👨🏻‍🚒", "firemen"]),  # one ZWJ emoji sequence is one token
        ("Crème brûlée à Zürich", ["Crème", "brûlée", "à", "Zürich"]),
        ("Cre\u0300me", ["Cre\u0300me"]),  # decomposed accent stays inside the word
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # Devanagari vowel signs are marks, not separators
        ("东京很大。", ["东", "京", "很", "大", "。"]),  # CJK: one character per token
        ("서울에 갔다", ["서울에", "갔다"]),
        ("a\u200bb", ["a", "b"]),  # zero-width space is not a token
    ],
)
def test_split_words_unicode(text, expected):
    words = split_words(text)
    assert [w for w, _, _ in words] == expected
    assert all(text[s:e] == w for w, s, e in words)


def test_split_words_of_blank_text_is_empty():
    assert split_words(" \n\t ") == []


# --- offsets: what Label Studio really sends ---------------------------------------------------

LS_EMOJI_TEXT = "🐱 Warning: This is a test text"  # from Label Studio's own e2e test (emoji.cy.ts)


def test_label_studio_emoji_offsets_are_code_points():
    # Label Studio serializes selecting "test" here as start=21, end=25 (code points, not UTF-16).
    assert LS_EMOJI_TEXT[21:25] == "test"
    report = tasks_to_examples([task(1, LS_EMOJI_TEXT, ann([span(21, 25, "MISC", "test")]))], NER)
    ex = report.examples[0]
    assert [t for w, t in zip(ex.words, ex.tags) if t != "O"] == ["B-MISC"]
    assert ex.words[ex.tags.index("B-MISC")] == "test"
    assert report.warnings == []


def test_utf16_helpers():
    assert index_to_utf16(LS_EMOJI_TEXT, 21) == 22
    assert utf16_to_index(LS_EMOJI_TEXT, 22) == 21
    text = "a😀b😀c"
    for i in range(len(text) + 1):
        assert utf16_to_index(text, index_to_utf16(text, i)) == i
    assert index_to_utf16(text, len(text)) == len(text.encode("utf-16-le")) // 2


def test_legacy_utf16_offsets_are_detected_by_span_text_and_converted():
    # Label Studio releases of 2021 sent JavaScript string offsets: "test" at 22..26.
    report = tasks_to_examples([task(1, LS_EMOJI_TEXT, ann([span(22, 26, "MISC", "test")]))], NER)
    ex = report.examples[0]
    assert ex.words[ex.tags.index("B-MISC")] == "test"
    assert any("UTF-16" in w for w in report.warnings)


def test_offsets_are_trusted_when_span_text_is_not_a_verbatim_copy():
    # Label Studio writes newlines inside value.text escaped; offsets stay authoritative.
    text = "🐱 Warning:\n🐱 This is a test text"
    report = tasks_to_examples([task(1, text, ann([span(2, 27, "MISC", "Warning:\\n🐱 This is a test")]))], NER)
    ex = report.examples[0]
    tagged = [w for w, t in zip(ex.words, ex.tags) if t != "O"]
    assert tagged == ["Warning", ":", "🐱", "This", "is", "a", "test"]
    assert ex.tags[ex.words.index("Warning")] == "B-MISC"


ROUND_TRIP_TEXTS = {
    "emoji": ("Loving 😍 my trip to 🇫🇷 Paris with Anna 👩‍👩‍👧 and Google Maps 🗺️!",
              [("Paris", "LOC"), ("Anna", "PER"), ("Google Maps", "ORG")]),
    "accented": ("José Álvarez a visité Zürich et Besanc\u0327on avec Renée.",
                 [("José Álvarez", "PER"), ("Zürich", "LOC"), ("Besanc\u0327on", "LOC"), ("Renée", "PER")]),
    "cjk": ("李小龙在香港拍摄了电影。株式会社ソニーは東京にある。",
            [("李小龙", "PER"), ("香港", "LOC"), ("株式会社ソニー", "ORG"), ("東京", "LOC")]),
    "mixed": ("🎉🎉 Ünïcödé Corp. hired 王伟 in São Paulo 🇧🇷 today",
              [("Ünïcödé Corp", "ORG"), ("王伟", "PER"), ("São Paulo", "LOC")]),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_TEXTS))
def test_round_trip_annotation_to_example_to_prediction(name):
    text, entities = ROUND_TRIP_TEXTS[name]
    gold = [mark(text, word, label) for word, label in entities]
    report = tasks_to_examples([task(7, text, ann(gold))], NER)
    assert report.task_ids == [7] and report.warnings == [] and report.skipped == {}
    ex = report.examples[0]
    assert ex.text == text and len(ex.words) == len(ex.tags) == len(ex.offsets)

    results = tagging_results(ex, one_hot(ex.tags, NER.schema.output_names), NER)
    got = [(r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"]) for r in results]
    want = [(g["value"]["start"], g["value"]["end"], g["value"]["text"], g["value"]["labels"]) for g in gold]
    assert got == want
    for r in results:
        v = r["value"]
        assert text[v["start"]:v["end"]] == v["text"]  # Python (code point) slice, as Label Studio counts
        assert (r["from_name"], r["to_name"], r["type"]) == ("label", "text", "labels")
        assert r["score"] == pytest.approx(0.9)
    json.dumps(results, ensure_ascii=False)  # plain JSON types only


def test_predicted_span_after_emoji_points_at_the_right_characters_in_utf16_too():
    text = "😀😀 Berlin"
    ex = unlabeled_examples([task(1, text)], NER).examples[0]
    probs = one_hot(["O", "O", "B-LOC"], NER.schema.output_names)
    (r,) = tagging_results(ex, probs, NER)
    assert (r["value"]["start"], r["value"]["end"], r["value"]["text"]) == (3, 9, "Berlin")
    # a JavaScript client would find the same characters 2 units later per emoji
    js = text.encode("utf-16-le")
    s16, e16 = index_to_utf16(text, 3), index_to_utf16(text, 9)
    assert js[2 * s16:2 * e16].decode("utf-16-le") == "Berlin"


# --- tasks -> labeled examples: classification ----------------------------------------------


def test_classification_examples_and_parallel_task_ids():
    tasks = [
        task(1, "great film", ann([choice("Positive")])),
        task(2, "no labels yet"),
        task(3, "dull", ann([choice("Negative")])),
    ]
    report = tasks_to_examples(tasks, SENTIMENT)
    assert report.task_ids == [1, 3]
    assert report.examples == [
        ClassificationExample("great film", ("Positive",)), ClassificationExample("dull", ("Negative",))
    ]
    assert report.skipped == {"no_annotation": 1}
    assert len(report) == 2 and report.n_skipped == 1


def test_latest_annotation_wins_by_updated_at():
    t = task(1, "meh", ann([choice("Positive")], 1, updated="2024-05-02T00:00:00Z"),
             ann([choice("Negative")], 2, updated="2024-05-01T00:00:00+00:00"))
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Positive",)


def test_latest_annotation_ties_broken_by_created_at_then_id():
    same = "2024-05-01T00:00:00Z"
    t = task(1, "meh", ann([choice("Negative")], 9, updated=same, created="2024-04-01T00:00:00Z"),
             ann([choice("Positive")], 3, updated=same, created="2024-04-02T00:00:00Z"))
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Positive",)
    t = task(1, "meh", ann([choice("Positive")], 5, updated=same, created=same),
             ann([choice("Neutral")], 6, updated=same, created=same))
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Neutral",)
    t = task(1, "meh", ann([choice("Neutral")], 6, updated=None, created=None),
             ann([choice("Positive")], 5, updated="2020-01-01T00:00:00Z"))
    assert latest_annotation(t)[0]["id"] == 5


def test_a_ground_truth_annotation_is_the_label_and_the_report_names_its_task():
    """Label Studio's ground-truth star marks the project's reference label: it wins over a later
    annotation, and the report lists the task so the quality estimate can hold it out."""
    reference = {**ann([choice("Negative")], 1, updated="2024-05-01T00:00:00Z"), "ground_truth": True}
    later = ann([choice("Positive")], 2, updated="2024-05-03T00:00:00Z")
    cancelled_truth = {**ann([choice("Neutral")], 3, cancelled=True), "ground_truth": True}
    report = tasks_to_examples([task(1, "meh", reference, later), task(2, "fine", later, cancelled_truth),
                                task(3, "ok", later)], SENTIMENT)
    assert [e.labels for e in report.examples] == [("Negative",), ("Positive",), ("Positive",)]
    assert report.ground_truth_ids == {1}, "a cancelled ground-truth annotation is no reference"


def test_cancelled_annotations_are_ignored():
    t = task(1, "fine", ann([choice("Positive")], 1, updated="2024-01-01T00:00:00Z"),
             ann([], 2, updated="2024-06-01T00:00:00Z", cancelled=True))
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Positive",)
    only_cancelled = task(2, "skip me", ann([choice("Positive")], 3, cancelled=True))
    report = tasks_to_examples([only_cancelled], SENTIMENT)
    assert report.examples == [] and report.skipped == {"cancelled": 1}


def test_text_problems_are_counted_never_raised():
    tasks = [
        task(1, None, ann([choice("Positive")])),  # field missing
        {"id": 2, "data": {"text": 42}, "annotations": [ann([choice("Positive")])]},
        task(3, "", ann([choice("Positive")])),
        task(4, "  \n\t", ann([choice("Positive")])),
        task(5, "review", ann([choice("Positive")]), field="review"),  # wrong field name
        {"id": 6, "annotations": [ann([choice("Positive")])]},  # no data at all
        "not a task",
    ]
    report = tasks_to_examples(tasks, SENTIMENT)  # type: ignore[arg-type]
    assert report.examples == []
    assert report.skipped == {"missing_text_field": 3, "non_string_text": 1, "empty_text": 2, "invalid_task": 1}


def test_unknown_label_skips_the_task_with_a_warning():
    report = tasks_to_examples(
        [task(8, "ok", ann([choice("Mixed")])), task(9, "ok", ann([choice("Neutral")]))], SENTIMENT
    )
    assert report.task_ids == [9]
    assert report.skipped == {"unknown_label": 1}
    assert "task 8" in report.warnings[0] and "Mixed" in report.warnings[0]


def test_several_choices_under_single_choice_config_skip_the_task():
    report = tasks_to_examples([task(1, "hmm", ann([choice("Positive", "Negative")]))], SENTIMENT)
    assert report.examples == [] and report.skipped == {"multiple_choices": 1}
    assert "single-choice" in report.warnings[0]


def test_multi_label_keeps_all_choices_in_schema_order():
    t = task(1, "match report and election", ann([choice("sport", "politics", from_name="topics")]))
    assert tasks_to_examples([t], TOPICS).examples[0].labels == ("politics", "sport")


def test_only_results_of_the_configured_control_count():
    t = task(1, "text", ann([choice("Positive", from_name="other_control"), choice("Negative")]))
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Negative",)
    t = task(2, "text", ann([choice("Positive", from_name="other_control")]))
    assert tasks_to_examples([t], SENTIMENT).skipped == {"no_label": 1}


def test_alias_and_value_both_map_to_the_alias():
    cfg = parse_label_config(
        '<View><Text name="text" value="$text"/><Choices name="s" toName="text">'
        '<Choice value="Positive" alias="pos"/><Choice value="Negative" alias="neg"/></Choices></View>'
    )
    tasks = [task(1, "a", ann([choice("pos", from_name="s")])), task(2, "b", ann([choice("Negative", from_name="s")]))]
    assert [e.labels for e in tasks_to_examples(tasks, cfg).examples] == [("pos",), ("neg",)]


def test_result_stored_as_json_string_is_read():
    t = task(1, "good", {"id": 1, "result": json.dumps([choice("Positive")]), "was_cancelled": False})
    assert tasks_to_examples([t], SENTIMENT).examples[0].labels == ("Positive",)


# --- tasks -> labeled examples: tagging -------------------------------------------------------


def tags_of(ex: TaggingExample) -> dict[str, str]:
    return {w: t for w, t in zip(ex.words, ex.tags) if t != "O"}


def test_tagging_example_has_iob2_tags_words_and_offsets():
    text = "Barack Obama visited New York City."
    t = task(1, text, ann([mark(text, "Barack Obama", "PER"), mark(text, "New York City", "LOC")]))
    ex = tasks_to_examples([t], NER).examples[0]
    assert ex.words == ["Barack", "Obama", "visited", "New", "York", "City", "."]
    assert ex.tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert ex.offsets[3] == (21, 24) and ex.text == text


def test_annotation_without_spans_is_an_all_o_example():
    ex = tasks_to_examples([task(1, "nothing to see here", ann([]))], NER).examples[0]
    assert ex.tags == ["O"] * 4


@pytest.mark.parametrize("bad_result", ["{not json", '{"from_name": "label"}', {"from_name": "label"}, 5])
def test_unreadable_tagging_result_is_skipped_not_read_as_no_entities(bad_result):
    good = task(2, "Obama visited Paris", ann([mark("Obama visited Paris", "Paris", "LOC")]))
    broken = task(1, "Barack Obama visited Paris", ann(bad_result, ann_id=9))
    report = tasks_to_examples([broken, good], NER)
    assert report.task_ids == [2]  # the broken task gave no all-O example
    assert report.skipped == {"malformed_result": 1}
    assert len(report.warnings) == 1 and "task 1" in report.warnings[0] and "annotation 9" in report.warnings[0]
    assert report.as_dict() == {"examples": 1, "skipped": {"malformed_result": 1},
                                "warnings": report.warnings, "warnings_total": 1}


def test_result_as_a_json_string_is_still_read():
    text = "Obama visited Paris"
    report = tasks_to_examples([task(1, text, ann(json.dumps([mark(text, "Paris", "LOC")])))], NER)
    assert report.examples[0].tags == ["O", "O", "B-LOC"] and report.skipped == {}


def test_report_dict_caps_warnings():
    text = "New York City Hall opened"
    spans = [span(0, 13, "LOC", "New York City")] + [span(4, 18, "ORG", "York City Hall")] * 1
    tasks = [task(i, text, ann(spans)) for i in range(30)]
    report = tasks_to_examples(tasks, NER)
    summary = report.as_dict(max_warnings=5)
    assert summary["warnings_total"] == 30 and len(summary["warnings"]) == 5


def test_span_cutting_a_word_tags_the_whole_word():
    text = "visit NewYorkCity now"
    ex = tasks_to_examples([task(1, text, ann([span(9, 13, "LOC", "York")]))], NER).examples[0]
    assert ex.tags == ["O", "B-LOC", "O"]


def test_overlapping_spans_keep_the_earlier_then_longer_one():
    text = "New York City Hall opened"
    spans = [
        span(4, 18, "ORG", "York City Hall"),  # starts later: dropped
        span(0, 8, "LOC", "New York"),  # same start, shorter: dropped
        span(0, 13, "LOC", "New York City"),  # earliest and longest: kept
    ]
    report = tasks_to_examples([task(1, text, ann(spans))], NER)
    ex = report.examples[0]
    assert ex.tags == ["B-LOC", "I-LOC", "I-LOC", "O", "O"]
    assert len(report.warnings) == 2 and all("overlaps" in w for w in report.warnings)


def test_duplicate_identical_spans_are_not_reported_as_overlaps():
    text = "Paris is nice"
    report = tasks_to_examples([task(1, text, ann([span(0, 5, "LOC", "Paris"), span(0, 5, "LOC", "Paris")]))], NER)
    assert report.examples[0].tags == ["B-LOC", "O", "O"] and report.warnings == []


@pytest.mark.parametrize("start, end", [(-1, 3), (5, 500), (6, 6), (8, 2)])
def test_out_of_range_or_empty_spans_are_skipped_with_a_warning(start, end):
    text = "Alice met Bob"
    report = tasks_to_examples([task(1, text, ann([span(start, end, "PER"), mark(text, "Bob", "PER")]))], NER)
    ex = report.examples[0]
    assert tags_of(ex) == {"Bob": "B-PER"}
    assert len(report.warnings) == 1 and f"{start}..{end}" in report.warnings[0]


def test_non_integer_offsets_are_skipped_with_a_warning():
    report = tasks_to_examples([task(1, "Alice met Bob", ann([span("a", None, "PER")]))], NER)  # type: ignore[arg-type]
    assert report.examples[0].tags == ["O", "O", "O"]
    assert "non-integer" in report.warnings[0]


def test_span_over_whitespace_only_is_skipped():
    report = tasks_to_examples([task(1, "Alice   Bob", ann([span(6, 7, "PER", " ")]))], NER)
    assert report.examples[0].tags == ["O", "O"] and "covers no word" in report.warnings[0]


def test_unknown_span_label_skips_the_task():
    text = "Alice met Bob"
    report = tasks_to_examples([task(1, text, ann([mark(text, "Alice", "PER"), mark(text, "Bob", "ANIMAL")]))], NER)
    assert report.examples == [] and report.skipped == {"unknown_label": 1}
    assert "ANIMAL" in report.warnings[0]


def test_span_with_several_labels_keeps_the_first():
    r = span(0, 5, "PER", "Alice")
    r["value"]["labels"] = ["PER", "ORG"]
    report = tasks_to_examples([task(1, "Alice met Bob", ann([r]))], NER)
    assert report.examples[0].tags[0] == "B-PER" and "several labels" in report.warnings[0]


def test_spans_of_other_controls_are_ignored():
    text = "Alice met Bob"
    other = mark(text, "Bob", "PER")
    other["from_name"] = "other"
    ex = tasks_to_examples([task(1, text, ann([mark(text, "Alice", "PER"), other]))], NER).examples[0]
    assert tags_of(ex) == {"Alice": "B-PER"}


def test_huge_text_converts_without_crashing():
    words = ["word"] * 200_000
    text = " ".join(words)
    t0 = time.perf_counter()
    spans = [span(0, 4, "MISC", "word"), span(len(text) - 4, len(text), "LOC", "word")]
    report = tasks_to_examples([task(1, text, ann(spans))], NER)
    ex = report.examples[0]
    assert len(ex.words) == 200_000 and ex.tags[0] == "B-MISC" and ex.tags[-1] == "B-LOC"
    # a model that truncated to 512 words still gets results for what it saw
    probs = one_hot(ex.tags[:512], NER.schema.output_names)
    assert [r["value"]["text"] for r in tagging_results(ex, probs, NER)] == ["word"]
    assert time.perf_counter() - t0 < 30


# --- unlabeled examples and task_text ---------------------------------------------------------


def test_unlabeled_examples_skip_bad_tasks_and_keep_ids():
    tasks = [task(1, "Alice met Bob"), task(2, ""), task(3, None), task(4, "Hi 🐱", ann([mark("Hi 🐱", "Hi", "PER")]))]
    report = unlabeled_examples(tasks, NER)
    assert report.task_ids == [1, 4]
    assert report.skipped == {"empty_text": 1, "missing_text_field": 1}
    ex = report.examples[1]
    assert ex.words == ["Hi", "🐱"] and ex.tags == [] and ex.offsets == [(0, 2), (3, 4)] and ex.text == "Hi 🐱"

    cls = unlabeled_examples([task(1, "fine", ann([choice("Positive")]))], SENTIMENT)
    assert cls.examples == [ClassificationExample("fine", ())]


def test_task_text_names_the_field_and_task():
    assert task_text(task(1, "hello"), SENTIMENT) == "hello"
    with pytest.raises(MissingTextFieldError) as err:
        task_text(task(17, "x", field="body"), SENTIMENT)
    assert "'text'" in str(err.value) and "17" in str(err.value)
    assert err.value.field_name == "text" and err.value.task_id == 17
    assert isinstance(err.value, LabelConfigError)


# --- model outputs -> Label Studio results ----------------------------------------------------


def test_single_label_result_is_the_argmax():
    (r,) = classification_results(np.array([0.2, 0.7, 0.1]), SENTIMENT)
    assert r == {"from_name": "sentiment", "to_name": "text", "type": "choices",
                 "value": {"choices": ["Negative"]}, "score": pytest.approx(0.7)}
    assert type(r["score"]) is float


def test_multi_label_result_takes_all_above_threshold_or_the_argmax():
    (r,) = classification_results(np.array([0.9, 0.1, 0.6, 0.3, 0.55]), TOPICS, threshold=0.5)
    assert r["value"]["choices"] == ["business", "politics", "tech"]
    (r,) = classification_results(np.array([0.1, 0.2, 0.3, 0.4, 0.35]), TOPICS)
    assert r["value"]["choices"] == ["sport"] and r["score"] == pytest.approx(0.4)


def test_classification_results_reject_bad_input():
    with pytest.raises(ValueError, match="3 class probabilities"):
        classification_results(np.array([0.5, 0.5]), SENTIMENT)
    with pytest.raises(ValueError, match="not finite"):
        classification_results(np.array([np.nan, 0.5, 0.5]), SENTIMENT)
    with pytest.raises(ValueError, match="tagging"):
        classification_results(np.array([0.5] * 9), NER)


def test_iob2_decoding_is_lenient():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-ORG", "B-LOC", "B-LOC", "I-LOC", "O", "I-MISC"]
    assert iob2_spans(tags) == [
        (0, 2, "PER"), (3, 4, "LOC"), (4, 5, "ORG"), (5, 6, "LOC"), (6, 8, "LOC"), (9, 10, "MISC")
    ]
    assert iob2_spans(["B-geo-loc", "I-geo-loc"]) == [(0, 2, "geo-loc")]
    assert iob2_spans([]) == []


def test_tagging_results_decode_valid_iob2_spans_with_mean_confidence():
    """Probabilities decode to the most probable valid IOB2 sequence (constrained Viterbi): an
    inside run no B- opens starts with B- (its first word's B-PER at 0.0125), and a span scores the
    mean probability of its words' decoded tags."""
    text = "Alice Smith flew to Rome"
    ex = unlabeled_examples([task(1, text)], NER).examples[0]
    names = NER.schema.output_names
    probs = one_hot(["I-PER", "I-PER", "O", "O", "B-LOC"], names)
    probs[1] = one_hot(["I-PER"], names, p=0.5)[0]
    results = tagging_results(ex, probs, NER)
    assert [(r["value"]["text"], r["value"]["labels"]) for r in results] == [
        ("Alice Smith", ["PER"]), ("Rome", ["LOC"])
    ]
    assert results[0]["score"] == pytest.approx((0.1 / 8 + 0.5) / 2) and results[1]["score"] == pytest.approx(0.9)
    probs = one_hot(["O", "I-PER", "O"], names, p=0.5)  # a lone I-PER: its B-PER (1/16) loses to O
    probs[1, names.index("O")] = 0.1
    assert tagging_results(unlabeled_examples([task(2, "Alice met Bob")], NER).examples[0], probs, NER) == []


def test_tagging_results_reject_bad_input():
    ex = unlabeled_examples([task(1, "Alice met Bob")], NER).examples[0]
    names = NER.schema.output_names
    with pytest.raises(ValueError, match="9"):
        tagging_results(ex, np.zeros((3, 4)), NER)
    with pytest.raises(ValueError, match="4 probability rows for 3 words"):
        tagging_results(ex, one_hot(["O"] * 4, names), NER)
    with pytest.raises(ValueError, match="offsets"):
        tagging_results(TaggingExample(["Alice"]), one_hot(["O"], names), NER)
    with pytest.raises(ValueError, match="classification"):
        tagging_results(ex, one_hot(["O"] * 3, names), SENTIMENT)
    assert tagging_results(ex, np.zeros((0, len(names))), NER) == []


def test_prediction_entry_is_what_predict_returns():
    result = classification_results(np.array([0.2, 0.7, 0.1]), SENTIMENT)
    entry = prediction_entry(result, np.float32(0.7), "acq-3")
    assert entry == {"result": result, "score": pytest.approx(0.7), "model_version": "acq-3"}
    assert type(entry["score"]) is float
    json.dumps(entry)
    with pytest.raises(ValueError, match="finite"):
        prediction_entry([], float("nan"), "v")


def test_gold_tagging_results_round_trip_through_tasks_to_examples():
    from backend.labeling import gold_tagging_results

    words, tags = ["Barack", "Obama", "visited", "New", "York", "."], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    text, regions = gold_tagging_results(words, tags, NER)
    assert text == "Barack Obama visited New York ."
    assert [(r["value"]["text"], r["value"]["labels"]) for r in regions] == [
        ("Barack Obama", ["PER"]), ("New York", ["LOC"])
    ]
    assert all(r["from_name"] == NER.control_name and r["to_name"] == NER.object_name for r in regions)
    assert tasks_to_examples([task(1, text, ann(regions))], NER).examples[0].tags == tags
