"""What the bench-backend modes and the demo share: the HTTP client of a running backend, the
project the benchmarks create (a single-choice config over a corpus's labels, or a span-labeling
one over a tagging corpus's entity types), the backend's environment, and percentiles."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import requests

from backend.engine.data import load_dataset
from backend.engine.types import (
    ClassificationExample,
    TaggingExample,
    TaskType,
    classification_examples,
    tagging_examples,
)
from backend.harness.config import DEFAULT_MODEL, BackendBenchConfig

CONTROL, OBJECT = "label", "text"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0-100) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary_ms(ms: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean of millisecond latencies."""
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms)}


def stats(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max / mean of seconds, rounded to the millisecond (``{"n": 0}`` when empty)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3),
            "max": round(max(values), 3), "mean": round(statistics.fmean(values), 3)}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def label_config(labels: tuple[str, ...]) -> str:
    """A single-choice text classification config over `labels`."""
    choices = "".join(f"<Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View><Text name="{OBJECT}" value="$text"/>'
            f'<Choices name="{CONTROL}" toName="{OBJECT}" choice="single">{choices}</Choices></View>')


def ner_label_config(labels: tuple[str, ...]) -> str:
    """A span-labeling (named entity) config over the entity types `labels`, laid out as
    label_config_examples/ner_wnut16.xml."""
    items = "".join(f"<Label value={quoteattr(label)}/>" for label in labels)
    return (f'<View><Labels name="{CONTROL}" toName="{OBJECT}">{items}</Labels>'
            f'<Text name="{OBJECT}" value="$text"/></View>')


def load_tagged(spec: str, n: int) -> tuple[tuple[str, ...], list[TaggingExample]]:
    """Up to `n` sentences of a tagging corpus (seeded subsample; all of them when it has fewer)
    and its entity types."""
    dataset = load_dataset(spec, max_examples=n, seed=5)
    if dataset.task_type is not TaskType.TAGGING:
        raise ValueError(f"--task ner needs a tagging corpus; {spec!r} is {dataset.task_type.value}")
    return dataset.schema.labels, list(tagging_examples(dataset.examples))


def span_count(result: list[dict[str, Any]]) -> int:
    """The ``labels`` regions (spans) of a Label Studio result."""
    return sum(1 for item in result or [] if item.get("type") == "labels" and (item.get("value") or {}).get("labels"))


def process_rss(pid: int) -> int | None:
    """Resident set size of process `pid` in bytes (Linux ``/proc``; None where unreadable)."""
    try:
        for line in Path(f"/proc/{int(pid)}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def choice_result(label: str) -> list[dict[str, Any]]:
    """The annotation result choosing `label`."""
    return [{"from_name": CONTROL, "to_name": OBJECT, "type": "choices", "value": {"choices": [label]}}]


def chosen_label(result: list[dict[str, Any]]) -> str | None:
    """The label a /predict result chose (None: an empty result, e.g. before any model)."""
    for item in result or []:
        choices = (item.get("value") or {}).get("choices") or []
        if choices:
            return str(choices[0])
    return None


def load_examples(spec: str, n: int) -> tuple[tuple[str, ...], list[ClassificationExample]]:
    """`n` examples of a classification corpus (seeded subsample) and its labels."""
    dataset = load_dataset(spec, max_examples=n, seed=5)
    if dataset.task_type is not TaskType.CLASSIFICATION:
        raise ValueError(f"bench-backend needs a classification corpus; {spec!r} is {dataset.task_type.value}")
    if len(dataset) < n:
        raise ValueError(f"{spec!r} has {len(dataset)} examples; --pool-size plus --labeled needs {n}")
    return dataset.schema.labels, list(classification_examples(dataset.examples))


def bench_model(name: str | None) -> str:
    """The acquisition model; "tiny" (a random test model that does not ship) means the packaged one."""
    return DEFAULT_MODEL if name in (None, "", "tiny") else str(name)


def backend_env(config: BackendBenchConfig, ls_url: str, ls_token: str, redis_url: str, root: Path) -> dict[str, str]:
    """The environment of the iterations and fast-latency modes: training only on demand, the mode's
    FULL_RESCORE_ITERATIONS, checkpoints under `root`/models."""
    env = {
        **os.environ, "TOKENIZERS_PARALLELISM": "false", "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": ls_token,
        "REDIS_URL": redis_url, "MODEL_DIR": str(root / "models"), "ACQUISITION_MODEL": bench_model(config.model),
        "DEVICE": config.device, "TRAIN_EVERY_N": "0", "WORKERS": "1", "THREADS": "8", "LOG_LEVEL": "WARNING",
        "FULL_RESCORE_ITERATIONS": config.rescore, "TORCH_THREADS": str(config.torch_threads),
    }
    if config.epochs:
        env["EPOCHS"] = str(config.epochs)
    return env


@dataclass(frozen=True)
class FastWait:
    """What waiting for an annotation's fast update saw: the project's last state (``GET
    /projects/<id>``), how the wait ended (``published``: a fast version holding the annotation;
    ``settled``: a later update ended without publishing, e.g. one class labeled; ``timeout``) and
    when (``time.perf_counter()``)."""

    state: dict[str, Any]
    outcome: str
    at: float

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.state.get("fast_path") or {}
        return status

    @property
    def published(self) -> bool:
        return self.outcome == "published"


class BackendHttp:
    """The harness's HTTP client of a running backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.retried_503 = 0  # /predict calls tried again after a 503

    def state(self, project_id: int) -> dict[str, Any]:
        state: dict[str, Any] = self.http.get(f"{self.url}/projects/{project_id}", timeout=30).json()
        return state

    def fast_status(self, project_id: int) -> dict[str, Any]:
        status: dict[str, Any] = self.state(project_id).get("fast_path") or {}
        return status

    def wait_running(self, project_id: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.state(project_id)["running_job"]:
            if time.monotonic() > deadline:
                raise TimeoutError("training did not start")
            time.sleep(0.01)

    def wait_iteration(self, project_id: int, iteration: int, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(project_id)
            idle = not state["running_job"] and not state["queued_job"]
            if idle and state["iteration"] >= iteration:
                return state
            if idle and state.get("last_error"):
                raise RuntimeError(f"training failed: {state['last_error']}")
            time.sleep(0.2)
        raise TimeoutError(f"iteration {iteration} not done after {timeout}s")

    def wait_fast_update(self, project_id: int, before: dict[str, Any], labeled: int, timeout: float, *,
                         poll: float = 0.02, settled: tuple[str, ...] = ()) -> FastWait:
        """Poll ``fast_path`` until it is a published version other than `before`'s holding at least
        `labeled` labels (the backend switched Label Studio's ``model_version`` to it before saying
        so). Gives up after `timeout` s, or as soon as a later update than `before` ended in one of
        the `settled` statuses (e.g. ``skipped``: one class labeled, nothing to publish)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(project_id)
            status = state.get("fast_path") or {}
            if (status.get("status") == "published" and status.get("version") != before.get("version")
                    and int(status.get("labeled") or 0) >= labeled):
                return FastWait(state, "published", time.perf_counter())
            if int(status.get("seq") or 0) > int(before.get("seq") or 0) and status.get("status") in settled:
                return FastWait(state, "settled", time.perf_counter())
            if time.monotonic() >= deadline:
                return FastWait(state, "timeout", time.perf_counter())
            time.sleep(poll)

    def predict(self, body: dict[str, Any], timeout: float = 600, retries: int = 0) -> list[dict[str, Any]]:
        """``POST /predict`` as Label Studio sends it; one entry per task. A ``503`` (Redis slower
        than ``REDIS_REQUEST_TIMEOUT`` on a loaded machine) is tried again up to `retries` times."""
        for attempt in range(retries + 1):
            response = self.http.post(f"{self.url}/predict", json=body, timeout=timeout)
            if response.status_code != 503 or attempt == retries:
                break
            self.retried_503 += 1
            time.sleep(2.0)
        if response.status_code != 200:
            raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:500]}")
        results: list[dict[str, Any]] = response.json()["results"]
        if len(results) != len(body["tasks"]):
            raise RuntimeError(f"/predict answered {len(results)} entries for {len(body['tasks'])} tasks")
        return results

    def webhook_latencies(self, project_id: int, n: int, task_ids: list[int]) -> list[float]:
        out = []
        for i in range(n):
            event = {"action": "ANNOTATION_UPDATED", "project": {"id": project_id},
                     "task": {"id": task_ids[i % len(task_ids)]}, "annotation": {"id": i, "result": []}}
            t0 = time.perf_counter()
            r = self.http.post(f"{self.url}/webhook", json=event, timeout=10)
            out.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
        return out

    def predict_latencies(self, body: dict[str, Any], repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.predict(body, timeout=100)
            times.append((time.perf_counter() - t0) * 1000)
        return times
