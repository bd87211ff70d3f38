"""Flags generated from the engine's config dataclasses (transformers' `HfArgumentParser`), so
defaults and help live once, on the dataclass; and replaying a run from its saved config.

`arguments(Source, "group")` is a flat copy of `Source`'s fields that `HfArgumentParser` can read:
nested dataclass fields are left out (they are sibling groups on the command line), tuples become
`nargs` lists, and `overrides` changes a field's default/type/help or adds argparse keywords
(`choices`, `nargs`). `build(namespace, Args)` turns the parsed flags back into a `Source`.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from argparse import ArgumentParser, Namespace
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from backend.engine.errors import DatasetError

if TYPE_CHECKING:
    import argparse

    from transformers import HfArgumentParser

    # `feasible-al`'s subcommands: the subparsers action made with `parser_class=HfArgumentParser`
    Subcommands: TypeAlias = argparse._SubParsersAction[HfArgumentParser]

Overrides = Mapping[str, Mapping[str, Any]]


class ArgumentView:
    """Base of the flat dataclasses `arguments` makes: the group name `HfArgumentParser` reads, the
    dataclass the flags build, and the flag prefix of its fields."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    _argument_group_name: ClassVar[str]
    source: ClassVar[type]
    prefix: ClassVar[str]


def arguments(
    source: type,
    group: str,
    *,
    include: Collection[str] | None = None,
    exclude: Collection[str] = (),
    prefix: str = "",
    overrides: Overrides | None = None,
) -> type[ArgumentView]:
    """A flat dataclass of `source`'s (selected) fields for one argument group; flag names are the
    field names (`--max_length` and `--max-length`), with `prefix` prepended."""
    hints = typing.get_type_hints(source)
    specs = []
    for f in dataclasses.fields(source):
        wanted = f.init and f.name not in exclude and (include is None or f.name in include)
        if not wanted or dataclasses.is_dataclass(hints[f.name]):
            continue
        extra = dict((overrides or {}).get(f.name, {}))
        kind = extra.pop("type", hints[f.name])
        default = extra.pop("default", _default(f))
        metadata = {**f.metadata, **extra}
        if "help" in metadata:
            metadata["help"] = metadata["help"].replace("%", "%%")  # argparse %-formats help
        kind, metadata = _sequence_as_nargs(kind, metadata)
        spec = dataclasses.field(metadata=metadata) if default is dataclasses.MISSING else \
            dataclasses.field(default=default, metadata=metadata)
        specs.append((prefix + f.name, kind, spec))
    view: type[ArgumentView] = dataclasses.make_dataclass(f"{source.__name__}Arguments", specs, bases=(ArgumentView,))
    view._argument_group_name = group  # read by HfArgumentParser
    view.source, view.prefix = source, prefix
    return view


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _sequence_as_nargs(kind: Any, metadata: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """`tuple[int, ...]` (optionally `| None`) -> `int` with `nargs="+"` (unless given): argparse
    collects a list, `build` turns it back into a tuple."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) in (tuple, list):
            kind = inner[0]
    if typing.get_origin(kind) in (tuple, list):
        return typing.get_args(kind)[0], {"nargs": "+", **metadata}
    return kind, metadata


def values(namespace: Namespace, view: type[ArgumentView]) -> dict[str, Any]:
    """The parsed flags of one group, by `source` field name (lists as tuples)."""
    out = {}
    for f in dataclasses.fields(view):
        value = getattr(namespace, f.name)
        out[f.name[len(view.prefix):]] = tuple(value) if isinstance(value, list) else value
    return out


def build(namespace: Namespace, view: type[ArgumentView], **fields: Any) -> Any:
    """`view.source` from the parsed flags of its group, plus `fields` (e.g. nested configs)."""
    return view.source(**values(namespace, view), **fields)


# ----------------------------------------------------------------------------------- replay
NESTED_PREFIXES = {"successor_training": "successor_"}  # nested config -> flag prefix


def flatten_config(block: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A saved config (nested dataclasses as objects) as flag values: nested objects are
    flattened, `successor_training` fields get the `successor_` prefix, and an outer value wins
    over a nested one of the same name (a training config's `seed` is per run)."""
    flat, nested = {}, []
    for key, value in block.items():
        if isinstance(value, Mapping):
            nested.append((key, value))
        else:
            flat[prefix + key] = value
    for key, value in nested:
        for name, item in flatten_config(value, NESTED_PREFIXES.get(key, prefix)).items():
            flat.setdefault(name, item)
    return flat


def replay_defaults(path: str, parser: ArgumentParser, aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flag defaults from a run's `results.json` (its `config` and `data` blocks; older files name
    only the dataset) or from a JSON object of flag values. Flags not known to `parser` are ignored."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"--config {path}: {exc}") from exc
    if not isinstance(payload, dict):
        raise DatasetError(f"--config {path}: expected a JSON object")
    if "config" in payload:
        flat = flatten_config(payload["config"])
        data = payload.get("data") or ({"dataset": payload["dataset"]} if "dataset" in payload else {})
        flat.update(data)
    else:
        flat = flatten_config(payload)
    for old, new in (aliases or {}).items():
        if old in flat:
            flat.setdefault(new, flat[old])
    known = {f.name for view in getattr(parser, "dataclass_types", ()) for f in dataclasses.fields(view)}
    return {name: value for name, value in flat.items() if name in known}
