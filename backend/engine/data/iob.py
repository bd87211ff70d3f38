"""Tag schemes: every tagging corpus is normalised to IOB2, the scheme `LabelSchema.output_names` assumes."""
from __future__ import annotations

import re
from collections.abc import Sequence

_PREFIXED_TAG = re.compile(r"^([BIESLU])-(\S+)$")
_BARE_TAG = re.compile(r"^[^\s-]\S*$")
_PREFIXES = {"B", "I", "E", "S", "L", "U"}


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Normalise IOB1, IOB2, IOBES/BILOU or bare entity-type tags to IOB2.

    Bare tags (`PER PER O LOC`) mark one entity per run of equal types. An `I-`/`E-`/`L-` tag that
    does not continue an entity of its type starts one (the IOB1 convention). Raises ValueError on
    tags that cannot be read (empty, a prefix with no type, whitespace inside).
    """
    out: list[str] = []
    prev: str | None = None  # entity type the previous word belongs to, if it may continue
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"tag {tag!r} is not a string")
        if tag == "O":
            out.append("O")
            prev = None
            continue
        if not valid_tag(tag):
            raise ValueError(f"invalid tag {tag!r} (expected O, B-<type>, I-<type> or a bare type)")
        match = _PREFIXED_TAG.match(tag)
        prefix, etype = match.groups() if match else ("", tag)
        begins = prefix in ("B", "S", "U") or etype != prev
        out.append(("B-" if begins else "I-") + etype)
        prev = None if prefix in ("E", "S", "L", "U") else etype
    return out


def valid_tag(tag: str) -> bool:
    """O, a prefixed tag (`B-geo-loc`) or a bare type (`PER`); not a lone prefix (`B`, `I-`) or blank."""
    if tag == "O" or _PREFIXED_TAG.match(tag):
        return True
    return bool(_BARE_TAG.match(tag)) and tag not in _PREFIXES and not re.match(r"^[BIESLU]-", tag)
