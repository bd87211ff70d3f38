"""Read a Label Studio labeling config (XML) into what the engine needs: a `LabelSchema` and the
names that tie results to it.

Supported pairs (anything else raises `UnsupportedLabelConfigError` saying what was found):

* ``<Choices toName="x">`` on ``<Text name="x" value="$field">``: classification
  (``choice="multiple"`` makes it multi-label);
* ``<Labels toName="x">`` on ``<Text name="x" value="$field">``: tagging (character spans).

Label names are what Label Studio writes into results: a ``<Choice>``/``<Label>``'s ``alias`` when
it has one, else its ``value`` (the frontend's ``selectedValues()`` returns
``c.alias ? c.alias : c.value``; the Choice docs say the alias "replaces the choice value in the
annotation results"). Its ``value`` is remembered too, so results that carry it still map.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

# defusedxml (a dependency of the package) refuses entity expansion and DTD tricks outright
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _xml_fromstring

from backend.engine.types import LabelSchema, TaskType

__all__ = [
    "LabelConfig",
    "LabelConfigError",
    "UnsupportedLabelConfigError",
    "parse_label_config",
    "SUPPORTED_PAIRS",
    "ControlTag",
]

ControlTag = Literal["Choices", "Labels"]  # as Label Studio spells the supported control tags

# (control tag, object tag) -> task type. Tag names are matched case-insensitively.
SUPPORTED_PAIRS: dict[tuple[str, str], TaskType] = {
    ("choices", "text"): TaskType.CLASSIFICATION,
    ("labels", "text"): TaskType.TAGGING,
}
_CANONICAL_TAG: dict[str, ControlTag] = {"choices": "Choices", "labels": "Labels"}
_CHILD_TAG = {"choices": "choice", "labels": "label"}
_SUPPORTED_TEXT = "Choices->Text (classification) or Labels->Text (span tagging)"


class LabelConfigError(ValueError):
    """The labeling config (or a task read through it) cannot be used: malformed, inconsistent."""


class UnsupportedLabelConfigError(LabelConfigError):
    """The labeling config is valid Label Studio XML but holds no pair this backend can learn."""


@dataclass(frozen=True)
class LabelConfig:
    """The part of a labeling config the backend uses.

    `control_name` is the results' ``from_name``, `object_name` their ``to_name``, `value_key` the
    task data field holding the text (``"text"`` for ``value="$text"``).
    """

    control_name: str
    control_tag: ControlTag
    object_name: str
    value_key: str
    schema: LabelSchema
    # (value, alias) for labels whose results carry the alias; lets old results that hold the
    # value still map onto the schema.
    label_aliases: tuple[tuple[str, str], ...] = ()

    @property
    def task_type(self) -> TaskType:
        return self.schema.task_type

    @property
    def labels(self) -> tuple[str, ...]:
        return self.schema.labels

    def canonical_label(self, name: str) -> str | None:
        """The schema label a result's label string stands for, or None when it is unknown."""
        if name in self.schema.labels:
            return name
        for value, alias in self.label_aliases:
            if name == value:
                return alias
        return None


def _local(tag: object) -> str:
    """Lower-case tag name without any XML namespace (comments/PIs have non-str tags)."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _parse_xml(xml: str) -> Element:
    if not isinstance(xml, str):
        raise LabelConfigError(f"label config must be an XML string, got {type(xml).__name__}")
    if not xml.strip():
        raise LabelConfigError("label config is empty")
    try:
        return _xml_fromstring(xml)
    except ParseError as exc:
        raise LabelConfigError(f"label config is not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        raise LabelConfigError(f"label config uses forbidden XML constructs (DTD/entities): {exc!r}") from exc


def _objects(root: Element) -> dict[str, Element]:
    """Object tags (data holders such as Text, Image): a `name` and a `value`, no `toName`."""
    objects: dict[str, Element] = {}
    for el in root.iter():
        if "toName" in el.attrib or not el.get("name") or el.get("value") is None:
            continue
        objects.setdefault(el.get("name", ""), el)
    return objects


def _controls(root: Element) -> list[Element]:
    return [el for el in root.iter() if el.get("toName") and el.get("name")]


def _targets(control: Element) -> list[str]:
    return [t.strip() for t in control.get("toName", "").split(",") if t.strip()]


def _describe(control: Element, objects: dict[str, Element]) -> str:
    """`Tag->Target` as a user sees it in the XML, e.g. ``RectangleLabels->Image``."""
    parts = []
    for target in _targets(control) or ["?"]:
        obj = objects.get(target)
        parts.append(obj.tag if obj is not None else f"?(no object named {target!r})")
    return f"{control.tag}->{','.join(parts)}"


def _why_unsupported(control: Element, objects: dict[str, Element]) -> str | None:
    """None when the control is a supported pair, else a short reason."""
    ctag = _local(control.tag)
    text_targets = [t for t in _targets(control) if t in objects and _local(objects[t].tag) == "text"]
    if (ctag, "text") not in SUPPORTED_PAIRS or not text_targets:
        return f"found {_describe(control, objects)}"
    if ctag == "choices" and control.get("perRegion", "").lower() == "true":
        return f"found per-region {_describe(control, objects)} (classifies regions, not the text)"
    return None


def _text_target(control: Element, objects: dict[str, Element]) -> Element:
    for target in _targets(control):
        obj = objects.get(target)
        if obj is not None and _local(obj.tag) == "text":
            return obj
    raise AssertionError("caller checked the control has a Text target")  # pragma: no cover


def _label_names(control: Element) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    child = _CHILD_TAG[_local(control.tag)]
    names: list[str] = []
    aliases: list[tuple[str, str]] = []
    for el in control.iter():
        if _local(el.tag) != child:
            continue
        value, alias = el.get("value"), el.get("alias")
        name = alias or value
        if not name:
            raise LabelConfigError(
                f"<{el.tag}> inside {control.tag} {control.get('name')!r} has neither value nor alias"
            )
        if name in names:
            raise LabelConfigError(f"label {name!r} appears twice in {control.tag} {control.get('name')!r}")
        names.append(name)
        if alias and value and value != alias:
            aliases.append((value, alias))
    return tuple(names), tuple(aliases)


def _build(control: Element, objects: dict[str, Element]) -> LabelConfig:
    ctag = _local(control.tag)
    name = control.get("name", "")
    obj = _text_target(control, objects)
    value = (obj.get("value") or "").strip()
    if not value.startswith("$") or len(value) < 2:
        raise UnsupportedLabelConfigError(
            f"{obj.tag} {obj.get('name')!r} has value={value!r}; it must name a task field like \"$text\""
        )
    if (obj.get("valueType") or "text").lower() == "url":
        raise UnsupportedLabelConfigError(
            f"{obj.tag} {obj.get('name')!r} has valueType=\"url\": the backend needs the text itself in the task"
        )
    labels, aliases = _label_names(control)
    if not labels:
        dynamic = " (dynamic labels from task data are not supported)" if control.get("value") else ""
        raise UnsupportedLabelConfigError(f"{control.tag} {name!r} defines no labels{dynamic}")
    task_type = SUPPORTED_PAIRS[(ctag, "text")]
    multi = task_type is TaskType.CLASSIFICATION and control.get("choice", "single").lower() == "multiple"
    return LabelConfig(
        control_name=name,
        control_tag=_CANONICAL_TAG[ctag],
        object_name=obj.get("name", ""),
        value_key=value[1:],
        schema=LabelSchema(task_type, labels, multi_label=multi),
        label_aliases=aliases,
    )


def _listing(controls: Iterable[Element], objects: dict[str, Element]) -> str:
    return ", ".join(f"{c.get('name')!r} ({_describe(c, objects)})" for c in controls) or "none"


def parse_label_config(xml: str, control_name: str | None = None) -> LabelConfig:
    """Parse a labeling config and pick the control to learn.

    With `control_name`, that control must exist and be supported; without it, the first
    supported control in document order is used (projects with several controls should say which).
    """
    root = _parse_xml(xml)
    objects = _objects(root)
    controls = _controls(root)

    if control_name is not None:
        chosen = [c for c in controls if c.get("name") == control_name]
        if not chosen:
            raise LabelConfigError(
                f"no control tag named {control_name!r} in the label config; "
                f"available: {_listing(controls, objects)}"
            )
        reason = _why_unsupported(chosen[0], objects)
        if reason:
            raise UnsupportedLabelConfigError(
                f"control {control_name!r} is not supported: {reason}; supported: {_SUPPORTED_TEXT}"
            )
        return _build(chosen[0], objects)

    reasons = []
    for control in controls:
        reason = _why_unsupported(control, objects)
        if reason is None:
            return _build(control, objects)
        reasons.append(reason)
    found = "; ".join(reasons) if reasons else "found no control tags (tags with name and toName)"
    raise UnsupportedLabelConfigError(
        f"no supported control in the label config: {found}. Supported: {_SUPPORTED_TEXT}"
    )
