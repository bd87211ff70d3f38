"""The demo's services: started here on free 127.0.0.1 ports, or the user's running ones.

Whatever is given by URL is only connected to; whatever is started here (Redis, Label Studio,
gunicorn and the README's two RQ workers: one on every queue, one on the fast queue alone, so a
fine-tune never delays the fast path; see `backend.harness.processes`) is stopped, process group by
process group, when the stack closes, in reverse order of starting.
"""
from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from backend.engine.threads import WAIT_POLICY
from backend.harness.label_studio import LabelStudioServer, label_studio_executable, ls_venv_path
from backend.harness.processes import README_WORKERS, BackendProcesses, RedisServer

DEMO_MODEL = "all-MiniLM-L6-v2"  # packaged: works offline, on CPU; the engine's few-shot training
# defaults (learning rate, a floor of optimizer steps) suit it, so the demo sets no LEARNING_RATE


@dataclass(frozen=True)
class StackOptions:
    """Where the services are, when the user runs them already (empty: start one here)."""

    label_studio_url: str = ""
    api_key: str = ""
    redis_url: str = ""
    backend_url: str = ""
    model: str = DEMO_MODEL


@dataclass
class Stack:
    """The running services' addresses, and what this demo started."""

    label_studio_url: str
    api_key: str
    backend_url: str
    login: tuple[str, str] | None = None  # Label Studio user and password, when started here
    redis_url: str = ""
    model_dir: Path | None = None  # the backend's MODEL_DIR, when started here
    started: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def backend_env(stack: Stack, model: str, model_dir: Path) -> dict[str, str]:
    """The backend's whole environment: the user's (DEVICE, ... pass through) plus the demo's stack
    and model. Training waits for the demo's Start training (TRAIN_EVERY_N=0). torch's default
    threads (one per core) with passive waiting (`backend.engine.threads`; it was one thread, as
    spinning threads fought Label Studio over the cores): the NER demo on 2 Xeon cores took 626 s
    with 2 spinning threads against 751 s with one, 53-60 s per update against 71-79 s."""
    return {
        **os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or WAIT_POLICY,
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
        "LABEL_STUDIO_URL": stack.label_studio_url, "LABEL_STUDIO_API_KEY": stack.api_key,
        "REDIS_URL": stack.redis_url, "KEY_PREFIX": f"demo-{secrets.token_hex(3)}", "MODEL_DIR": str(model_dir),
        "ACQUISITION_MODEL": model, "TEACHER_MODEL": model, "SUCCESSOR_MODEL": model, "TRAIN_EVERY_N": "0",
        "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
    }


def _label_studio(options: StackOptions, resources: ExitStack, launches: list[Callable[[], object]]) -> Stack:
    if options.label_studio_url:
        if not options.api_key:
            raise ValueError("--label-studio-url needs --api-key (a personal access token or legacy token)")
        return Stack(options.label_studio_url.rstrip("/"), options.api_key, "")
    if label_studio_executable() is None:
        raise FileNotFoundError(f"Label Studio is not installed in {ls_venv_path()}: run scripts/setup.sh "
                                "(or scripts/install_label_studio.sh), or give --label-studio-url and --api-key")
    server = LabelStudioServer(startup_timeout=600)  # a fresh data directory, removed on close
    resources.callback(server.close)
    launches.append(server.start)
    stack = Stack(server.url, server.token, "", login=(server.username, server.password))
    stack.started.append(f"Label Studio {server.url}")
    stack.logs.append(server.log_path)
    return stack


def _backend(options: StackOptions, stack: Stack, resources: ExitStack, logs: Path,
             launches: list[Callable[[], object]]) -> None:
    if options.redis_url:
        stack.redis_url = options.redis_url
    else:
        redis = resources.enter_context(RedisServer())
        stack.redis_url = redis.url
        stack.started.append(f"Redis {redis.url}")
    stack.model_dir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="feasible-al-demo-")))
    processes = BackendProcesses(backend_env(stack, options.model, stack.model_dir), logs, startup_timeout=300,
                                 workers=README_WORKERS)  # the README's `feasible-al worker` + `--queues fast`
    resources.callback(processes.stop)
    launches.append(processes.start)
    stack.backend_url = processes.url
    stack.started.append(processes.describe())
    stack.logs.extend(processes.log_paths)


def open_stack(options: StackOptions, resources: ExitStack, logs: Path) -> Stack:
    """Connect to or start every service; `resources` stops what was started. Label Studio and
    the backend start side by side (Label Studio's address and token are chosen before it runs).
    The backend's logs go to `logs`, its checkpoints to a temporary MODEL_DIR."""
    launches: list[Callable[[], object]] = []
    stack = _label_studio(options, resources, launches)
    if options.backend_url:
        stack.backend_url = options.backend_url.rstrip("/")
    else:
        _backend(options, stack, resources, logs, launches)
    if launches:
        _say("starting Label Studio and the backend (a first start runs Label Studio's database migrations: "
             "a minute or more)..." if len(launches) == 2 else "starting the services...")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(launch) for launch in launches]:
            future.result()
    if stack.started:
        _say("started: " + "; ".join(stack.started))
    return stack
