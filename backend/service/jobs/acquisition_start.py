"""The project's last fine-tuned acquisition model in a successor build: one more PLASM teacher
(`acquisition_teacher`) and, when the successor is that same model, the weights its fine-tune
starts from (`successor_start`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.labeling import LabelConfig
from backend.service.checkpoints import LoadedCheckpoint
from backend.service.records import UNTRAINED
from backend.service.runtime import JobContext


class LockedCheckpoint:
    """A served checkpoint as a PLASM teacher: predictions under its inference lock."""

    def __init__(self, checkpoint: LoadedCheckpoint) -> None:
        self.checkpoint = checkpoint

    def predict(self, examples: Any, **kwargs: Any) -> Any:
        with self.checkpoint.lock:
            return self.checkpoint.model.predict(examples, **kwargs)


def acquisition_teacher(ctx: JobContext, project_id: int, config: LabelConfig,
                         options: dict[str, Any]) -> tuple[list[LockedCheckpoint], dict[str, Any]]:
    """The latest fine-tuned acquisition model, trained on (nearly) every gold label, as one more
    teacher whose probabilities join the teachers' average; why it does or does not. By default only
    when it is the teacher's own model: a distilled acquisition model would dilute a stronger
    teacher's labels (the paper's ablation, fig. 17a)."""
    wanted = options.get("acquisition_teacher")
    if wanted is False:
        return [], {"used": False, "why": "acquisition_teacher=false"}
    if wanted is None and options.get("teacher") != ctx.settings.acquisition_model:
        return [], {"used": False,
                    "why": f"the teacher ({options.get('teacher')}) is not the acquisition model "
                           f"({ctx.settings.acquisition_model}); acquisition_teacher=true adds it anyway"}
    state = ctx.store.get_project(project_id)
    version = state.acq_version if state is not None else UNTRAINED
    if version == UNTRAINED:
        return [], {"used": False, "why": "no fine-tuned acquisition model yet"}
    try:
        checkpoint = ctx.checkpoints.get_finetuned(project_id, version)
    except (FileNotFoundError, OSError, ValueError) as exc:
        return [], {"used": False, "version": version, "why": f"cannot load it: {exc}"[:300]}
    if checkpoint.config.schema != config.schema:
        return [], {"used": False, "version": version, "why": "trained for another label config"}
    return [LockedCheckpoint(checkpoint)], {"used": True, "version": version}


def successor_start(ctx: JobContext, extra_teachers: list[LockedCheckpoint], why: dict[str, Any],
                     options: dict[str, Any], copy_to: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where the successor's fine-tune starts: from the acquisition model's weights when the successor
    is that same model and the acquisition model is a teacher (a copy, so that pruning cannot take the
    checkpoint away mid-build), else from the pretrained checkpoint. Measured on WNUT-16 with the gold
    the tagging order picks (160 sentences, 3 seeds, docs/benchmarks/plasm-ner/): 0.387 span F1 against
    0.343 from pretrained and 0.335 for the acquisition model itself. Returns the option override and
    what the job reports."""
    if options.get("successor_from_acquisition") is False:
        return {}, {"from": "pretrained", "why": "successor_from_acquisition=false"}
    if not extra_teachers:
        return {}, {"from": "pretrained", "why": "no fine-tuned acquisition model among the teachers"}
    if options.get("successor") != ctx.settings.acquisition_model:
        return {}, {"from": "pretrained",
                    "why": f"the successor ({options.get('successor')}) is not the acquisition model "
                           f"({ctx.settings.acquisition_model})"}
    checkpoint = extra_teachers[0].checkpoint
    with checkpoint.lock:
        checkpoint.model.save(copy_to)
    return {"successor": str(copy_to)}, {"from": "acquisition", "version": why.get("version")}
