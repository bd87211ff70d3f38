"""What the demo tells the user at the end, and the JSON summary it writes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.demo.successor import teachers_phrase
from backend.engine.io import atomic_write_json
from backend.harness.ls_admin import LabelStudioAdmin

TOP = 5


@dataclass(frozen=True)
class Standing:
    task_id: int
    score: float
    text: str


@dataclass
class Standings:
    """The unlabeled tasks as Label Studio orders them by the serving version's prediction score
    (lowest first: what *Uncertainty sampling* serves next)."""

    version: str
    unlabeled: int
    with_prediction: int  # unlabeled tasks holding a prediction of `version`
    first: list[Standing] = field(default_factory=list)


def standings(ls: LabelStudioAdmin, project_id: int, version: str, value_key: str) -> Standings:
    out = Standings(version, 0, 0)
    for task in ls.iter_tasks(project_id, only_labeled=False, fields="all", ordering="tasks:predictions_score"):
        out.unlabeled += 1
        scores = [float(p["score"]) for p in task.get("predictions", []) if p.get("model_version") == version]
        if scores:
            out.with_prediction += 1
            if len(out.first) < TOP:
                out.first.append(Standing(int(task["id"]), scores[0], str(task["data"].get(value_key, ""))))
    return out


def machine() -> dict[str, Any]:
    """The CPU count and load: the demo's times depend on what else the machine runs."""
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, summary)


def _shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_report(s: dict[str, Any]) -> None:
    """The human summary: where to click, what was measured, where the successor is."""
    ls, q, st = s["label_studio"], s["quality"], s["standings"]
    lines = [
        "", f"== feasible-al demo: {s['dataset']} ({s['task']}), {s['rounds_run']} rounds, "
        f"{s['labeled']} labels, {s['wall_seconds']:.0f} s ==",
        f"Label Studio: {ls['url']}" + (f"  (login {ls['login'][0]} / {ls['login'][1]})" if ls.get("login") else ""),
        f"  project:         {ls['project_url']}",
        f"  labeling stream: {ls['labeling_url']}  (Uncertainty sampling: least confident first)",
        f"backend: {s['backend_url']}  (model {s['model']}, serving version {st['version']})",
        f"  project manager's page: {s['page_url']}  (serving model, quality curve, jobs, workers)",
        "started here: " + ("; ".join(s["started"]) or "nothing (your running services)"),
        f"held-out gold ({s['held_out']} texts, {q['metric']}):",
        f"  acquisition model (chose the labels): {q['acquisition']:.3f}",
        f"  PLASM successor (exported):           {q['successor']:.3f}  "
        f"({'at least as good' if q['successor_at_least_as_good'] else 'WORSE than the acquisition model'})",
        "seconds per update (Start training -> new order in Label Studio): "
        + ", ".join(f"{r['update_seconds']:.1f}" for r in s["rounds"]),
        "serving after each round: " + ", ".join(str(r.get("serving") or "?") for r in s["rounds"]),
        "fast path's features while each round was annotated: "
        + ", ".join(str(r.get("fast_features") or "none yet") for r in s["rounds"]),
        f"the {st['unlabeled']} unlabeled tasks, ordered by uncertainty ({st['with_prediction']} hold a "
        f"prediction of {st['version']}); next up:",
    ]
    lines += [f"  #{t['task_id']:<6} score {t['score']:.3f}  {_shorten(t['text'])}" for t in st["first"]]
    succ = s["successor"]
    acquisition = succ.get("acquisition_teacher") or {}
    labelers = teachers_phrase(succ["teachers"]) + (
        f" and the acquisition model {acquisition['version']}" if acquisition.get("used") else "")
    lines += [
        f"successor: {succ['directory']}  (archive {succ['archive']}; pseudo-labels from {labelers})",
        f"  load it:  from transformers import {succ['auto_class']}",
        f"            model = {succ['auto_class']}.from_pretrained({str(succ['directory'])!r})",
        f"summary: {s['summary_path']}",
    ]
    print("\n".join(lines), flush=True)
