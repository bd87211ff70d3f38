"""The final model: a PLASM successor built by the backend (``POST /successor``), followed on ``GET
/jobs/<id>`` and downloaded (``/successor/<id>/download``) as a user would.

Teacher and successor are the packaged all-MiniLM-L6-v2 with the backend's training defaults, so
the successor can only gain over the acquisition model (same model, same gold labels) from the
pool Label Studio holds: `TEACHERS` teachers (by task), each holding out its own 10% dev fold, and the
project's last fine-tuned acquisition model (trained on every gold label; the backend adds it by
default) pseudo-label it with their averaged probabilities (one fine-tune on a few hundred labels
is a noisy draw; an average is a better and steadier labeler), the least confident share 1 - dev
score of the pseudo-labels is dropped, and the successor learns from every gold label plus the
kept pseudo-labels, starting from the acquisition model's weights (the backend's default when the
successor is the acquisition model's own checkpoint). TracIn is skipped (`filter` uncertainty):
its probe is one more training of the successor on the whole pool, the minutes the teachers take
instead. No gold-only successor is trained to choose from: PLASM's dev split is 10% of a few
hundred labels, too few to choose by (measured: with 90 labels it chose the gold-only successor,
0.63 on 200 held-out texts, over the PLASM one, 0.64), and the successor trains on the dev split
too.
"""
from __future__ import annotations

import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from backend.demo.data import DemoTask
from backend.engine.plasm.pipeline import STAGES
from backend.harness.common import BackendHttp

# Tagging needs one: its successor starts from the acquisition model's weights, and on WNUT-16 with
# the 160 sentences the tagging order picks it scored 0.376 with one teacher and 0.383 with three
# (3 seeds, -0.030 to +0.022 a seed; the acquisition model 0.319), for 34-55 s of teachers
# instead of 110-130 s (docs/benchmarks/plasm-ner/, `warm_start_1teacher_seed*.json`)
TEACHERS: dict[DemoTask, int] = {"classification": 3, "ner": 1}
OPTIONS: dict[str, Any] = {"filter": "uncertainty", "successor_all_gold": True, "compare_gold_only": False}


def teachers_phrase(count: int) -> str:
    """"1 teacher" / "3 teachers", for the demo's lines."""
    return f"{count} teacher{'' if count == 1 else 's'}"


class SuccessorFailed(RuntimeError):
    """The successor job failed or was cancelled; the message holds the backend's reason."""


@dataclass
class SuccessorBuild:
    job_id: str
    archive: Path
    directory: Path
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)  # the job's PLASM report (dev split)


def request(backend: BackendHttp, project_id: int, task: DemoTask, model: str | None, seed: int) -> str:
    """Start the build; `model` None leaves teacher and successor to the backend's settings (a
    backend the demo did not start may allow no other)."""
    body: dict[str, Any] = {"project": project_id, "seed": seed, "teachers": TEACHERS[task], **OPTIONS}
    if model:
        body.update(teacher=model, successor=model)
    response = backend.http.post(f"{backend.url}/successor", json=body, timeout=60)
    if response.status_code != 202:
        raise SuccessorFailed(f"POST /successor: HTTP {response.status_code}: {response.text[:500]}")
    return str(response.json()["job_id"])


def overall_progress(status: dict[str, Any]) -> float:
    """0..1 over PLASM's stages (the job reports the progress of its current stage)."""
    stage = status.get("stage")
    if stage not in STAGES:
        return 1.0 if stage == "done" else 0.0
    return (STAGES.index(stage) + float(status.get("progress") or 0.0)) / len(STAGES)


def wait(backend: BackendHttp, job_id: str, timeout: float = 3600) -> dict[str, Any]:
    """Poll ``/jobs/<id>`` until the export is ready, showing the stage; the last status."""
    deadline = time.monotonic() + timeout
    shown: tuple[Any, int] | None = None
    with tqdm(total=100, desc="successor", unit="%", dynamic_ncols=True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}") as bar:
        while time.monotonic() < deadline:
            status: dict[str, Any] = backend.http.get(f"{backend.url}/jobs/{job_id}", timeout=30).json()
            if status.get("error") or status.get("status") in ("failed", "canceled", "stopped"):
                raise SuccessorFailed(f"successor job {job_id}: {status.get('error') or status.get('status')}")
            now = (status.get("stage"), round(100 * overall_progress(status)))
            if now != shown:  # redraw on change only (a log file gets one line per change)
                shown = now
                bar.n = now[1]
                bar.set_postfix_str(f"stage {now[0]}")
            if status.get("download"):
                return status
            time.sleep(1.0)
    raise TimeoutError(f"successor job {job_id} not done after {timeout:.0f} s")


def download(backend: BackendHttp, job_id: str, out_dir: Path) -> tuple[Path, Path]:
    """The archive into `out_dir`/successor.tar.gz, unpacked into `out_dir`/successor/."""
    archive, directory = out_dir / "successor.tar.gz", out_dir / "successor"
    with backend.http.get(f"{backend.url}/successor/{job_id}/download", stream=True, timeout=300) as response:
        response.raise_for_status()
        with open(archive, "wb") as fh:
            shutil.copyfileobj(response.raw, fh)
    shutil.rmtree(directory, ignore_errors=True)
    unpacked = out_dir / ".successor-unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    inner = [p for p in unpacked.iterdir() if p.is_dir()]
    (inner[0] if len(inner) == 1 else unpacked).rename(directory)
    shutil.rmtree(unpacked, ignore_errors=True)
    return archive, directory


def build(backend: BackendHttp, project_id: int, task: DemoTask, model: str | None, seed: int,
          out_dir: Path) -> SuccessorBuild:
    t0 = time.perf_counter()
    job_id = request(backend, project_id, task, model, seed)
    status = wait(backend, job_id)
    archive, directory = download(backend, job_id, out_dir)
    return SuccessorBuild(job_id, archive, directory, round(time.perf_counter() - t0, 2), status.get("metrics") or {})
