"""What `bench-backend --mode fast-latency --task ner` checks in Label Studio and on disk after the
measured annotations: the serving version's spans, the per-word features' size, the workers' RSS."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from backend.harness.common import process_rss, span_count
from backend.harness.ls_admin import LabelStudioAdmin


def rss_of(workers: dict[str, int] | None) -> dict[str, int | None]:
    return {name: process_rss(pid) for name, pid in (workers or {}).items()}


def spans_check(ls: LabelStudioAdmin, pid: int, status: dict[str, Any], text_of: dict[int, str],
                settle_s: float = 30.0) -> dict[str, Any]:
    """The predictions LS holds for the serving fast version (`status`): how many, how many carry
    at least one span (a ``labels`` region), and whether each span is inside its task's text (its
    ``text`` is the text's slice at ``start:end``). Waits up to `settle_s` for the predictions
    created after the switch (``pushed`` in all)."""
    version, pushed = status.get("version"), int(status.get("pushed") or 0)
    deadline = time.monotonic() + settle_s
    while True:
        mine = [p for p in _predictions(ls, pid) if p.get("model_version") == version]
        if len(mine) >= pushed or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    spans = [span_count(p.get("result") or []) for p in mine]
    bad = 0
    for p in mine:
        text = text_of.get(int(p["task"]), "")
        for r in p.get("result") or []:
            value = r.get("value") or {}
            if r.get("type") == "labels" and text[value.get("start", 0):value.get("end", 0)] != value.get("text"):
                bad += 1
    return {"version": version, "pushed": pushed, "held": len(mine), "with_spans": sum(n > 0 for n in spans),
            "spans": sum(spans), "spans_outside_text": bad}


def _predictions(ls: LabelStudioAdmin, pid: int) -> list[dict[str, Any]]:
    """Every prediction of project `pid` (``GET /api/predictions/?project=``)."""
    what = f"list the predictions of project {pid}"
    payload = ls._json(ls._raw(what, "GET", "api/predictions/", params={"project": int(pid)}, timeout=120), what)
    items = payload.get("results", []) if isinstance(payload, dict) else payload
    return [p for p in items if isinstance(p, dict)]


def features_on_disk(model_dir: Path, pid: int, n_tasks: int) -> dict[str, Any]:
    """The project's per-word feature shards (`FeatureStore`'s ``words-`` set): bytes on disk."""
    from backend.service.features import features_root

    out: dict[str, Any] = {}
    root = features_root(model_dir, pid)
    for directory in sorted(root.glob("words-*")) if root.is_dir() else []:
        shards = list(directory.glob("shard-*.npz"))
        size = sum(p.stat().st_size for p in shards)
        out[directory.name] = {"shards": len(shards), "disk_bytes": size,
                               "disk_bytes_per_sentence": round(size / max(n_tasks, 1), 1)}
    return out
