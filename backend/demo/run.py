"""`feasible-al demo`: the product end to end, on a real Label Studio.

Start (or connect to) Redis, Label Studio, the backend and its two workers (the README's quick start:
one on every queue, one on the fast queue alone); create a project from a packaged corpus; annotate
a few rounds from the gold labels, each task taken from Label Studio's ``/next``; let the backend
retrain and reorder the tasks after each round; build, download and measure a PLASM successor;
print where everything is; keep the services up until Ctrl-C.
"""
from __future__ import annotations

import secrets
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.demo import report, successor
from backend.demo.data import DemoData, DemoTask, load_demo_data
from backend.demo.quality import held_out_examples, successor_quality
from backend.demo.rounds import RoundRecord, Rounds
from backend.demo.stack import Stack, StackOptions, open_stack
from backend.engine.metrics import main_metric_name
from backend.engine.types import TaskType
from backend.harness.common import BackendHttp
from backend.harness.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioAdmin

PAGE_FILE = "project-page.html"
FAILED_CHECK = 3  # exit status when the successor is worse than the acquisition model


@dataclass(frozen=True)
class DemoOptions:
    task: DemoTask = "classification"
    rounds: int = 4
    per_round: int = 40
    pool_size: int = 400
    held_out: int = 500
    seed: int = 0
    output_dir: Path = Path("runs/demo")
    no_wait: bool = False
    stack: StackOptions = field(default_factory=StackOptions)


@dataclass
class Project:
    id: int
    ml_backend_id: int
    gold_by_task: dict[int, list[dict[str, Any]]]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def create_project(ls: LabelStudioAdmin, stack: Stack, data: DemoData) -> Project:
    """Create, import the pool, connect the backend (LS adds the /webhook), Uncertainty sampling."""
    title = f"feasible-al demo: {data.corpus.dataset} {secrets.token_hex(2)}"
    pid = int(ls.create_project(title, data.label_config)["id"])
    ls.import_tasks(pid, data.tasks())
    gold_of_text = {t.text: t.result for t in data.pool}
    key = data.config.value_key
    gold = {int(t["id"]): gold_of_text[t["data"][key]]
            for t in ls.iter_tasks(pid, only_labeled=None, fields="task_only", include=("id", "data"))}
    ml = ls.connect_ml_backend(pid, stack.backend_url, "feasible-al", timeout=100)
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    return Project(pid, ml.id, gold)


def _summary(opts: DemoOptions, stack: Stack, data: DemoData, project: Project, records: list[RoundRecord],
             built: successor.SuccessorBuild, succ_q: float, standings: report.Standings) -> dict[str, Any]:
    ls_url = stack.label_studio_url
    acq_q = records[-1].quality
    tagging = data.config.task_type is TaskType.TAGGING
    return {
        "task": opts.task, "dataset": data.corpus.dataset, "model": opts.stack.model, "seed": opts.seed,
        "pool_size": len(data.pool), "held_out": len(data.held_out), "per_round": opts.per_round,
        "rounds_run": len(records), "labeled": records[-1].labeled,
        "label_studio": {"url": ls_url, "login": list(stack.login) if stack.login else None,
                         "project_id": project.id, "project_url": f"{ls_url}/projects/{project.id}/data",
                         "labeling_url": f"{ls_url}/projects/{project.id}/data?labeling=1"},
        "backend_url": stack.backend_url, "page_url": f"{stack.backend_url}/ui/projects/{project.id}",
        "page_html": str(opts.output_dir / PAGE_FILE),
        "started": stack.started,
        "rounds": [r.to_dict() for r in records],
        "quality": {"metric": main_metric_name(data.config.schema), "acquisition": acq_q, "successor": succ_q,
                    "successor_at_least_as_good": succ_q >= acq_q},
        "standings": asdict(standings),
        "successor": {"job_id": built.job_id, "archive": str(built.archive), "directory": str(built.directory),
                      "seconds": built.seconds, "chosen": built.metrics.get("chosen"),
                      "dev_metrics": built.metrics.get("dev_metrics"), "sizes": built.metrics.get("sizes"),
                      "teachers": successor.TEACHERS[opts.task],
                      "acquisition_teacher": built.metrics.get("acquisition_teacher"),
                      "auto_class": "AutoModelForTokenClassification" if tagging
                      else "AutoModelForSequenceClassification"},
    }


def drive(opts: DemoOptions, stack: Stack, data: DemoData) -> dict[str, Any]:
    """Everything after the services are up: the project, the rounds, the successor."""
    ls = LabelStudioAdmin(stack.label_studio_url, stack.api_key, timeout=300)
    backend = BackendHttp(stack.backend_url)
    project = create_project(ls, stack, data)
    _say(f"project {project.id}: {len(data.pool)} tasks imported, backend connected, Uncertainty sampling on; "
         f"the project manager's page: {stack.backend_url}/ui/projects/{project.id}")
    held_out = held_out_examples(data)
    rounds = Rounds(ls, backend, data, project.id, project.ml_backend_id, project.gold_by_task, held_out,
                    opts.per_round)
    records = rounds.run(opts.rounds)
    page = backend.http.get(f"{stack.backend_url}/ui/projects/{project.id}", timeout=60)
    (opts.output_dir / PAGE_FILE).write_text(page.text, encoding="utf-8")  # what the page showed after the rounds
    own_backend = not opts.stack.backend_url  # started here with TEACHER_MODEL = SUCCESSOR_MODEL = the model
    models = opts.stack.model if own_backend else "the backend's settings"
    teachers = successor.teachers_phrase(successor.TEACHERS[opts.task])
    _say(f"building the PLASM successor ({teachers}, the acquisition model and the successor: {models}; "
         f"pseudo-labels for the {len(data.pool) - records[-1].labeled} unlabeled tasks)...")
    built = successor.build(backend, project.id, opts.task, opts.stack.model if own_backend else None, opts.seed,
                            opts.output_dir)
    succ_q = successor_quality(built.directory, held_out)
    ranks = report.standings(ls, project.id, records[-1].version, data.config.value_key)
    return _summary(opts, stack, data, project, records, built, succ_q, ranks)


def wait_for_ctrl_c() -> None:
    _say("\nthe services keep running for you to click through: press Ctrl-C to stop them")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("stopping...")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does: everything started is stopped


def run_demo(opts: DemoOptions) -> int:
    """Run the demo; 0 when the successor is at least as good as the acquisition model."""
    started, load_before = time.perf_counter(), report.machine()
    data = load_demo_data(opts.task, opts.pool_size, opts.held_out, opts.seed)
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM both stop the demo cleanly, also where SIGINT came in ignored (a background job)
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, _terminate))}
    try:
        with ExitStack() as resources:
            t0 = time.perf_counter()
            stack = open_stack(opts.stack, resources, opts.output_dir / "logs")
            startup = time.perf_counter() - t0
            summary = drive(opts, stack, data)
            summary.update(wall_seconds=round(time.perf_counter() - started, 1), startup_seconds=round(startup, 1),
                           machine={"before": load_before, "after": report.machine()},
                           summary_path=str(opts.output_dir / "summary.json"))
            report.write_summary(opts.output_dir / "summary.json", summary)
            report.print_report(summary)
            ok = summary["quality"]["successor_at_least_as_good"]
            if not ok:
                _say("error: the successor is less accurate than the acquisition model on the held-out gold")
            if not opts.no_wait:
                wait_for_ctrl_c()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if ok else FAILED_CHECK
