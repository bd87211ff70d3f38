"""The project manager's page: ``GET /ui/`` (every project) and ``GET /ui/projects/<id>`` (one
project), behind the same basic auth as the API, rendered server-side (no front-end build): which
model serves and why, the quality curve over labels with its interval (``curve.svg``, matplotlib),
the stopping signal, seconds per update and the share of the pool each update re-scored, the jobs
running (stage, progress, errors) and the workers serving them, suspect labels, and the successor
builds with their download links. The page reloads itself every few seconds while a job runs.

Every number comes from `project_view` (what ``GET /projects/<id>`` returns) and the project's
`HistoryPoint` list, so the page and the API cannot disagree; a project with no labels, a dead
job or a Label Studio that is down is a state the page states, never a 500.
"""
from __future__ import annotations

import io
import time
from typing import Any

from flask import Blueprint, Response, render_template

from backend.service.api_errors import ApiError, runtime
from backend.service.jobs.common import describe_job
from backend.service.jobs.successor import export_ready, successors_dir
from backend.service.project_view import project_view
from backend.service.protocol import parse_project_id
from backend.service.records import HistoryPoint
from backend.service.runtime import Backend

ui = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")

REFRESH_SECONDS = 3
TABLE_ROWS = 12  # updates listed under the curve, newest first

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1100px;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem} td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:left}
.muted{color:#777}.bad{color:#b00020}.good{color:#1b5e20}.box{background:#f6f6f6;padding:.6rem;border-radius:4px}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _ago(at: float) -> str:
    seconds = max(0, int(time.time() - at))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago" if seconds < 7200 else \
        f"{seconds // 3600} h ago"


def _jobs(backend: Backend, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The running and queued pipeline jobs (with the stage job it waits on), as /jobs/<id> shows them."""
    out = []
    for job_id in dict.fromkeys(j for j in (view.get("running_job"), view.get("queued_job")) if j):
        described = describe_job(backend, job_id) or {"id": job_id, "status": "gone"}
        progress = described.get("progress")
        out.append({"id": job_id, "status": described.get("status"), "stage": described.get("stage") or "",
                    "progress": f"{100 * progress:.1f}%" if isinstance(progress, float) else "",
                    "error": described.get("error") or ""})
    return out


def _builds(backend: Backend, project_id: int) -> list[dict[str, Any]]:
    root = successors_dir(backend.settings.model_dir, project_id)
    ids = sorted({p.name.removesuffix(".tar.gz") for p in root.iterdir()} if root.is_dir() else set())
    out = []
    for job_id in ids[-10:]:
        status = backend.store.get_status(job_id)
        ready = export_ready(backend, job_id)
        out.append({"id": job_id, "stage": status.stage if status else "unknown",
                    "download": f"../../successor/{job_id}/download" if ready else None})
    return out


def _stopping(view: dict[str, Any], points: list[HistoryPoint]) -> str:
    stop = view.get("stopping") or next((p.stop for p in reversed(points) if p.stop), None)
    if not stop:
        return "No stopping signal yet: it compares the predictions of updates 10+ labels apart on a fixed sample."
    verdict = (f"STOP: labels stopped changing the model's predictions (fired at {stop.get('first_fired_at')} labels). "
               if stop.get("fired") else "Keep labeling: ")
    return verdict + str(stop.get("why") or "")


def _table(points: list[HistoryPoint]) -> list[dict[str, Any]]:
    return [{"ago": _ago(p.at), "kind": p.kind, "version": p.version, "labeled": p.labeled, "serving": p.serving,
             "cv": _fmt(p.cv), "heldout": _fmt(p.heldout), "seconds": _fmt(p.seconds, 2),
             "share": f"{p.scored / p.pool:.0%}" if p.scored is not None and p.pool else ""}
            for p in reversed(points[-TABLE_ROWS:])]


def _latest_estimate(view: dict[str, Any], points: list[HistoryPoint]) -> tuple[str, str]:
    quality = view.get("quality") or {}
    if quality.get("value") is not None:
        unit = "sentences" if quality.get("metric") == "span F1" else "labels"
        held = f"{quality.get('audits')} audit {unit}"
        if quality.get("ground_truth"):
            held += f" and {quality['ground_truth']} ground-truth tasks"
        return (f"Estimate from {held} ({quality.get('method')}, "
                f"{quality.get('confidence', 0.9):.0%} interval)",
                f"{quality['value']:.3f} [{quality['low']:.3f}, {quality['high']:.3f}]")
    for p in reversed(points):
        if p.estimate and p.estimate.get("value") is not None:
            e = p.estimate
            return (f"Estimate ({e.get('method', 'audit')}, {e.get('n')} labels)",
                    f"{e['value']:.3f} [{e.get('low', 0):.3f}, {e.get('high', 1):.3f}]")
        if p.cv is not None:
            return "Latest CV (optimistic, not an audit)", f"{p.cv:.3f}"
    return "Estimate", "none yet (too few labels per class to cross-validate)"


def _suspects(backend: Backend, project_id: int, view: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    record = view.get("suspects") or {}
    ls_url = backend.settings.label_studio_url
    listed = [{**s, "link": f"{ls_url}/projects/{project_id}/data?task={s['task']}" if ls_url else "#"}
              for s in record.get("suspects", [])]
    if listed:
        return listed, ""
    if record:
        return [], record.get("note") or f"none among {record.get('labeled')} labels: the cross-validated head agrees."
    return [], "Not computed yet (classification projects, with the proxy head's cross-validation)."


@ui.get("/")
def index() -> str:
    backend = runtime()
    rows = []
    for pid in sorted(backend.store.project_ids()):
        state = backend.store.get_project(pid)
        if state is None:
            continue
        fast = state.fast_status or {}
        rows.append({"id": pid, "url": f"projects/{pid}", "task": state.task_type.value if state.task_type else "",
                     "serving": state.serving_model or "", "version": state.version,
                     "labeled": fast.get("labeled", ""), "error": state.last_error or ""})
    return render_template("ui_index.html", style=_STYLE, rows=rows)


def _project_id(raw: str) -> int:
    pid = parse_project_id(raw)
    if runtime().store.get_project(pid) is None:
        raise ApiError(404, "unknown_project", f"unknown project {pid}: Label Studio has not connected it")
    return pid


@ui.get("/projects/<project_id>")
def project_page(project_id: str) -> str:
    backend = runtime()
    pid = _project_id(project_id)
    view = project_view(backend, pid)
    points = backend.store.history(pid)
    serving = view.get("serving") or {}
    fast = view.get("fast_path") or {}
    jobs = _jobs(backend, view)
    building = fast.get("status") == "building_features"
    labeled = fast.get("labeled") if fast.get("labeled") is not None else (points[-1].labeled if points else 0)
    estimate_label, estimate = _latest_estimate(view, points)
    suspects, suspects_note = _suspects(backend, pid, view)
    return render_template(
        "ui_project.html", style=_STYLE, p=view, refresh=REFRESH_SECONDS if jobs or building else 0,
        serving_model=serving.get("model") or "none yet (no version published)", why=serving.get("why"),
        labeled=labeled, points=points, metric=points[-1].metric if points else "",
        latest_estimate_label=estimate_label, latest_estimate=estimate, stopping=_stopping(view, points),
        table=_table(points), fast=fast, jobs=jobs, workers=view["workers"],
        suspects=suspects, suspects_note=suspects_note, builds=_builds(backend, pid))


@ui.get("/projects/<project_id>/curve.svg")
def curve(project_id: str) -> Response:
    backend = runtime()
    pid = _project_id(project_id)
    return Response(render_curve(backend.store.history(pid)), mimetype="image/svg+xml")


def render_curve(points: list[HistoryPoint]) -> bytes:
    """SVG: the estimate with its interval band, the proxy CV and the fine-tunes' held-out scores
    over labels; iterations marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 3.2))
    try:
        est = [(p.labeled, p.estimate) for p in points if p.estimate and p.estimate.get("value") is not None]
        if est:
            xs = [x for x, _ in est]
            ax.plot(xs, [e["value"] for _, e in est], "-", color="C0", label="estimate (audit / ground truth)")
            ax.fill_between(xs, [e.get("low", e["value"]) for _, e in est], [e.get("high", e["value"]) for _, e in est],
                            color="C0", alpha=0.2, label="interval")
        cv = [(p.labeled, p.cv) for p in points if p.cv is not None]
        if cv:
            ax.plot([x for x, _ in cv], [y for _, y in cv], "--", color="C1", label="proxy CV (optimistic)")
        held = [(p.labeled, p.heldout) for p in points if p.heldout is not None]
        if held:
            ax.plot([x for x, _ in held], [y for _, y in held], "s", color="C2", label="fine-tune held-out")
        for p in points:
            if p.kind == "iteration":
                ax.axvline(p.labeled, color="#bbb", lw=0.8, zorder=0)
        ax.set_xlabel("labels")
        ax.set_ylabel(points[-1].metric if points else "quality")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if est or cv or held:
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no estimate yet", ha="center", va="center", transform=ax.transAxes, color="#777")
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="svg")
        return buffer.getvalue()
    finally:
        plt.close(fig)


__all__ = ["ui", "render_curve"]
