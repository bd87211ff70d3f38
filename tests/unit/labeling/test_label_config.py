"""Label configs a user would paste into Label Studio, and the errors they get for ones we can't learn."""
from __future__ import annotations

from pathlib import Path

import pytest

from backend.engine.types import TaskType
from backend.labeling import (
    LabelConfig,
    LabelConfigError,
    UnsupportedLabelConfigError,
    parse_label_config,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "label_config_examples"
DATA = Path(__file__).parent / "data"

EXPECTED = {
    "text_classification.xml": (
        "sentiment", "Choices", TaskType.CLASSIFICATION, ("Positive", "Negative", "Neutral"), False,
    ),
    "multi_label_classification.xml": (
        "topics", "Choices", TaskType.CLASSIFICATION, ("business", "entertainment", "politics", "sport", "tech"), True,
    ),
    "ner.xml": ("label", "Labels", TaskType.TAGGING, ("PER", "ORG", "LOC", "MISC"), False),
    "ner_wnut16.xml": (
        "label", "Labels", TaskType.TAGGING,
        (
            "company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam",
            "tvshow",
        ),
        False,
    ),
}


def test_every_shipped_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.xml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_examples_parse(name):
    control, tag, task_type, labels, multi = EXPECTED[name]
    cfg = parse_label_config((EXAMPLES / name).read_text(encoding="utf-8"))
    assert cfg.control_name == control
    assert cfg.control_tag == tag
    assert cfg.object_name == "text"
    assert cfg.value_key == "text"
    assert cfg.task_type is task_type
    assert cfg.labels == labels
    assert cfg.schema.multi_label is multi


def test_ner_output_names_are_iob2():
    cfg = parse_label_config((EXAMPLES / "ner.xml").read_text())
    assert cfg.schema.output_names == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def test_wnut16_has_ten_types_and_21_tags():
    cfg = parse_label_config((EXAMPLES / "ner_wnut16.xml").read_text())
    assert len(cfg.labels) == 10
    assert cfg.schema.num_outputs == 21
    assert "B-geo-loc" in cfg.schema.output_names


def test_tags_nested_in_views_and_text_after_control():
    cfg = parse_label_config(
        """<View><View style="x"><Header value="Pick"/>
             <View><Choices name="c" toName="doc"><View><Choice value="a"/><Choice value="b"/></View></Choices></View>
           </View>
           <View><Text name="doc" value="$body"/></View></View>"""
    )
    assert (cfg.control_name, cfg.object_name, cfg.value_key, cfg.labels) == ("c", "doc", "body", ("a", "b"))


def test_alias_is_the_result_name_and_value_still_maps():
    cfg = parse_label_config(
        """<View><Text name="t" value="$text"/>
           <Labels name="l" toName="t"><Label value="Person" alias="PER"/><Label value="Place"/></Labels></View>"""
    )
    assert cfg.labels == ("PER", "Place")
    assert cfg.canonical_label("PER") == "PER"
    assert cfg.canonical_label("Person") == "PER"
    assert cfg.canonical_label("Place") == "Place"
    assert cfg.canonical_label("Thing") is None


def test_parsing_is_deterministic_and_config_hashable():
    xml = (EXAMPLES / "ner.xml").read_text()
    assert parse_label_config(xml) == parse_label_config(xml)
    assert isinstance(hash(parse_label_config(xml)), int)
    assert isinstance(parse_label_config(xml), LabelConfig)


MULTI = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="boxes" toName="img"><Label value="Car"/></RectangleLabels>
  <Text name="text" value="$text"/>
  <Labels name="ner" toName="text"><Label value="PER"/></Labels>
  <Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>
</View>"""


def test_first_supported_control_is_picked_by_default():
    cfg = parse_label_config(MULTI)
    assert cfg.control_name == "ner" and cfg.task_type is TaskType.TAGGING


def test_control_picked_by_name():
    cfg = parse_label_config(MULTI, control_name="sentiment")
    assert cfg.control_name == "sentiment" and cfg.task_type is TaskType.CLASSIFICATION


def test_unknown_control_name_lists_available_ones():
    with pytest.raises(LabelConfigError) as err:
        parse_label_config(MULTI, control_name="topic")
    msg = str(err.value)
    assert "'topic'" in msg
    for name in ("'boxes'", "'ner'", "'sentiment'"):
        assert name in msg
    assert not isinstance(err.value, UnsupportedLabelConfigError)


def test_naming_an_unsupported_control_says_why():
    with pytest.raises(UnsupportedLabelConfigError, match="RectangleLabels->Image"):
        parse_label_config(MULTI, control_name="boxes")


def test_image_bbox_config_is_unsupported_with_a_useful_message():
    with pytest.raises(UnsupportedLabelConfigError) as err:
        parse_label_config((DATA / "image_bbox.xml").read_text())
    msg = str(err.value)
    assert "found RectangleLabels->Image" in msg
    assert "Choices->Text" in msg and "Labels->Text" in msg


def test_unsupported_is_a_label_config_error_and_a_value_error():
    assert issubclass(UnsupportedLabelConfigError, LabelConfigError)
    assert issubclass(LabelConfigError, ValueError)


def test_choices_on_a_non_text_object_is_unsupported():
    with pytest.raises(UnsupportedLabelConfigError, match="Choices->Image"):
        parse_label_config(
            '<View><Image name="x" value="$img"/><Choices name="c" toName="x"><Choice value="a"/></Choices></View>'
        )


def test_to_name_pointing_nowhere_is_reported():
    with pytest.raises(UnsupportedLabelConfigError, match="no object named 'nowhere'"):
        parse_label_config(
            '<View><Text name="t" value="$text"/>'
            '<Choices name="c" toName="nowhere"><Choice value="a"/></Choices></View>'
        )


def test_config_without_controls_is_unsupported():
    with pytest.raises(UnsupportedLabelConfigError, match="no control tags"):
        parse_label_config('<View><Text name="t" value="$text"/></View>')


@pytest.mark.parametrize(
    "xml",
    [
        '<View><Text name="t" value="$text"><Choices name="c" toName="t"></View>',
        "<View>",
        "not xml at all",
        '<View><Text name="t" value="$text"/></View><View/>',
    ],
)
def test_malformed_xml_is_a_clear_label_config_error(xml):
    with pytest.raises(LabelConfigError, match="not well-formed XML") as err:
        parse_label_config(xml)
    assert not isinstance(err.value, UnsupportedLabelConfigError)


@pytest.mark.parametrize("xml", ["", "   \n", None])
def test_empty_config_is_rejected(xml):
    with pytest.raises(LabelConfigError):
        parse_label_config(xml)  # type: ignore[arg-type]


def test_entity_expansion_is_refused_not_expanded():
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="&b;"/></Choices></View>'
    )
    with pytest.raises(LabelConfigError):
        parse_label_config(bomb)


def test_per_region_choices_are_not_taken_as_text_classification():
    xml = """<View><Text name="t" value="$text"/>
      <Choices name="attr" toName="t" perRegion="true"><Choice value="x"/></Choices>
      <Labels name="ents" toName="t"><Label value="PER"/></Labels></View>"""
    assert parse_label_config(xml).control_name == "ents"
    with pytest.raises(UnsupportedLabelConfigError, match="per-region"):
        parse_label_config(xml, control_name="attr")


def test_text_without_task_field_is_unsupported():
    with pytest.raises(UnsupportedLabelConfigError, match=r"\$text"):
        parse_label_config(
            '<View><Text name="t" value="John went home"/>'
            '<Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
        )


def test_text_loaded_from_url_is_unsupported():
    with pytest.raises(UnsupportedLabelConfigError, match="valueType"):
        parse_label_config(
            '<View><Text name="t" value="$url" valueType="url"/>'
            '<Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
        )


def test_dynamic_choices_without_static_ones_are_unsupported():
    with pytest.raises(UnsupportedLabelConfigError, match="dynamic"):
        parse_label_config('<View><Text name="t" value="$text"/><Choices name="c" toName="t" value="$options"/></View>')


def test_duplicate_labels_are_a_config_error():
    with pytest.raises(LabelConfigError, match="twice"):
        parse_label_config(
            '<View><Text name="t" value="$text"/>'
            '<Labels name="l" toName="t"><Label value="A"/><Label value="A"/></Labels></View>'
        )


def test_label_without_value_is_a_config_error():
    with pytest.raises(LabelConfigError, match="neither value nor alias"):
        parse_label_config('<View><Text name="t" value="$text"/><Labels name="l" toName="t"><Label/></Labels></View>')


def test_multi_target_choices_use_the_text_target():
    cfg = parse_label_config(
        '<View><Image name="i" value="$img"/><Text name="t" value="$text"/>'
        '<Choices name="c" toName="i,t"><Choice value="a"/></Choices></View>'
    )
    assert cfg.object_name == "t"
