"""Writing a PLASM successor to disk: a `from_pretrained` directory (weights, tokenizer, config
with id2label/label2id) with `metrics.json` and a model card `README.md`, plus a `.tar.gz`.

`build_and_export` is the one call the RQ job makes: PLASM's stages, then 'export' as the last
one. Everything is built beside the target and renamed into place at the end, so a failure or a
cancellation leaves the previous export (or none) and no partial files.
"""
from __future__ import annotations

import json
import math
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from backend.engine.callbacks import CancelCheck, StageProgress, Stages
from backend.engine.io import atomic_directory, atomic_file
from backend.engine.models.factory import ClassicalModel, describe
from backend.engine.plasm.pipeline import (
    GOLD_ONLY,
    PLASM,
    PlasmOptions,
    PlasmResult,
    Predictor,
    build_successor,
    pseudo_label,
)
from backend.engine.types import Example, LabelSchema, TaskType

METRICS_FILE, CARD_FILE = "metrics.json", "README.md"
CARD_TEMPLATE = "model_card.md"  # in backend/engine/plasm/templates/


@dataclass
class ExportPaths:
    directory: Path
    archive: Path | None


def export_successor(
    result: PlasmResult, directory: str | os.PathLike[str], *, archive: bool = True,
    extra: dict[str, Any] | None = None,
) -> ExportPaths:
    """Write the kept successor as a `from_pretrained` directory with `metrics.json` and a model
    card, plus `<directory>.tar.gz`; `extra` is merged into `metrics.json` (e.g. test scores).
    The archive is renamed into place only after the directory is."""
    target = Path(directory)
    if not archive:
        with atomic_directory(target) as tmp_dir:
            _write_export(result, tmp_dir, target.name, extra)
        return ExportPaths(target, None)
    tar_path = target.parent / f"{target.name}.tar.gz"
    with atomic_file(tar_path) as tmp_tar:
        with atomic_directory(target) as tmp_dir:
            _write_export(result, tmp_dir, target.name, extra)
            with tarfile.open(tmp_tar, "w:gz") as tar:
                tar.add(tmp_dir, arcname=target.name)
    return ExportPaths(target, tar_path)


def _write_export(result: PlasmResult, directory: Path, name: str, extra: dict[str, Any] | None) -> None:
    result.model.save(directory)
    payload = {**result.to_dict(), **(extra or {})}
    (directory / METRICS_FILE).write_text(json.dumps(payload, indent=2, default=str))
    (directory / CARD_FILE).write_text(model_card(result, name))


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _score_table(result: PlasmResult) -> str:
    m = result.metrics
    rows = [
        ("teacher (pseudo-labeler)", describe(result.teacher), m["teacher"].get("main")),
        ("successor, gold + pseudo-labels (PLASM)", describe(result.successors[PLASM]),
         m.get("successor_plasm", {}).get("main")),
    ]
    if GOLD_ONLY in result.successors:
        rows.append(("successor, gold only", describe(result.successors[GOLD_ONLY]),
                     m["successor_gold_only"].get("main")))
    return "\n".join(f"| {role} | `{model}` | {_fmt(score)} |" for role, model, score in rows)


def model_card(result: PlasmResult, name: str) -> str:
    """The `README.md` of an export, from `templates/model_card.md`."""
    schema, f = result.schema, result.filter
    tagging = schema.task_type is TaskType.TAGGING
    classical = isinstance(result.model, ClassicalModel)
    template = resources.files(__package__).joinpath("templates", CARD_TEMPLATE).read_text(encoding="utf-8")
    return Template(template).substitute(
        name=name,
        pipeline="token-classification" if tagging else "text-classification",
        auto="AutoModelForTokenClassification" if tagging else "AutoModelForSequenceClassification",
        remote=", trust_remote_code=True" if classical else "",
        kept=("PLASM successor (gold + pseudo-labels)" if result.chosen == PLASM
              else "successor trained on gold labels only"),
        reason=result.chosen_reason,
        classical_note="" if not classical else (
            "\nThis is a classical model trained from scratch (code in `classical.py` beside the weights, "
            "hence `trust_remote_code=True`); its tokenizer is word level.\n"),
        labels=", ".join(f"`{x}`" for x in schema.output_names), task_type=schema.task_type.value,
        dev_share=f"{result.options.dev_share:.0%}", **vars(result.sizes),
        mode=f.mode, dev_score=_fmt(f.dev_score), share=f"{f.share:.1%}", dropped=f.dropped,
        dropped_share=f"{f.dropped_share:.1%}", teachers=f.teachers, dev_examples=f.dev_examples,
        tracin_line=(f"- TracIn self-influence: {f.tracin.form}, checkpoints at optimizer steps "
                     f"{f.tracin.checkpoint_steps}\n" if f.tracin else ""),
        metric="strict span F1 (seqeval, IOB2)" if tagging else ("macro-F1" if schema.multi_label else "accuracy"),
        table=_score_table(result),
        stages="\n".join(f"| {k} | {v:.1f} |" for k, v in result.stage_seconds.items()),
    )


def build_and_export(
    gold: Sequence[Example],
    unlabeled: Sequence[Example],
    schema: LabelSchema,
    options: PlasmOptions,
    directory: str | os.PathLike[str],
    *,
    progress: StageProgress | None = None,
    cancel_check: CancelCheck | None = None,
    archive: bool = True,
    extra: dict[str, Any] | None = None,
    extra_teachers: Sequence[Predictor] = (),
) -> tuple[PlasmResult, ExportPaths]:
    """PLASM's stages then 'export' as the last one: what the RQ job calls. A failure or
    cancellation at any stage leaves no export (and any previous one untouched)."""
    stages = Stages(progress, cancel_check)
    result = build_successor(pseudo_label(gold, unlabeled, schema, options, stages, extra_teachers), options, stages)
    with stages.stage("export"):
        paths = export_successor(result, directory, archive=archive, extra=extra)
    result.stage_seconds["export"] = stages.seconds["export"]
    return result, paths
