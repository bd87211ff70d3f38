"""The README works as written: every `feasible-al ...` command in its bash blocks parses with the
real CLI parser, every repository path it (and docker/, label_config_examples/ READMEs) names exists, its layout
section lists every module of `backend/`, and its settings table is the one
`feasible-al settings --markdown` generates."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from backend.cli import build_parser, replay
from backend.cli.docs import BEGIN, END, markdown_table, with_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TEXT = README.read_text(encoding="utf-8")
# top-level entries a path named in the README starts with (anything else is a user's path)
REPO_ROOTS = ("backend/", "docs/", "scripts/", "tests/", "label_config_examples/", "docker/", ".ci/",
              "Dockerfile", "pyproject.toml")
USER_CREATED = {"docker/.env"}  # the README tells the user to create it


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^ *```bash\n(.*?)^ *```", text, flags=re.S | re.M)


def shell_commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped, split at && ; | &."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words + [";"]:
            if word in ("&&", "||", ";", "|", "&"):
                if current:
                    commands.append(current)
                current = []
            elif word.endswith(("&", ";")) and word not in ("&", ";"):
                current.append(word[:-1])
                commands.append(current)
                current = []
            else:
                current.append(word)
    return [shlex.join(c) for c in commands]


def feasible_al_commands() -> list[list[str]]:
    return [shlex.split(c)[1:] for block in bash_blocks(TEXT) for c in shell_commands(block)
            if c.startswith("feasible-al ")]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def test_the_readme_has_its_commands():
    argvs = feasible_al_commands()
    subcommands = {next(a for a in argv if not a.startswith("-") and not a.isdigit()) for argv in argvs}
    assert {"demo", "serve", "worker", "simulate", "simulate-plasm", "distill", "plasm", "bench",
            "bench-backend"} <= subcommands
    assert "bash scripts/setup.sh && feasible-al demo" in TEXT and "bash scripts/test.sh" in TEXT


@pytest.mark.parametrize("argv", feasible_al_commands(), ids=lambda argv: " ".join(argv)[:70])
def test_every_readme_command_parses(parser, argv):
    try:
        args = parser.parse_args(argv)
        replay(parser, args, argv)  # --config: the run's saved values as defaults
    except SystemExit as exc:
        pytest.fail(f"`feasible-al {shlex.join(argv)}` does not parse (exit {exc.code})")
    assert callable(args.func)


def test_bash_blocks_hold_no_placeholders():
    """`<job id>` in a shell line is a redirection from a file named `job`: use a variable instead."""
    for block in bash_blocks(TEXT):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.commenters = "#"
            tokens = list(lexer)
            assert not {"<", ">", ">>", "<<"} & set(tokens), f"a placeholder or redirection in: {line.strip()}"


def named_paths(text: str) -> set[str]:
    """Repository paths the README names in code spans, links and bash blocks."""
    candidates = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)\s]+)\)", text))
    for block in bash_blocks(text):
        candidates |= set(block.split())
    out = set()
    for word in candidates:
        word = word.strip("\"'(),;:")
        if word.startswith(REPO_ROOTS) and not re.search(r"[<>*{}$]|\|", word):
            out.add(word)
    return out


def test_every_named_path_exists():
    assert {"scripts/setup.sh", "docker/README.md", "docs/screenshots/labeling-stream.png"} <= named_paths(TEXT)
    for readme in (README, REPO / "docker" / "README.md", REPO / "label_config_examples" / "README.md"):
        paths = named_paths(readme.read_text(encoding="utf-8"))
        missing = sorted(p for p in paths - USER_CREATED if not (REPO / p).exists())
        assert not missing, f"{readme.relative_to(REPO)} names paths that do not exist: {missing}"


def layout_entries(text: str) -> list[str]:
    """The layout block as repository paths, one per line (indentation = nesting, 2 spaces)."""
    section = text.split("## Layout", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, flags=re.S).group(1)
    stack: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + name
        paths.append(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, path))
    return paths


def test_layout_names_every_module_and_only_real_ones():
    listed = layout_entries(TEXT)
    missing = sorted(p for p in listed if not (REPO / p).exists())
    assert not missing, f"the README's layout names what does not exist: {missing}"
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "backend").rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts}
    unlisted = sorted(modules - set(listed))
    assert not unlisted, f"add one line per module to the README's layout section: {unlisted}"


def test_settings_table_is_the_generated_one():
    assert TEXT.count(BEGIN) == 1 and TEXT.count(END) == 1
    assert with_table(TEXT, markdown_table()) == TEXT, (
        "README's settings table drifted from backend/service/settings.py: "
        "run feasible-al settings --markdown --write README.md")


def test_settings_command_writes_and_checks(tmp_path, capsys):
    from backend.cli import main

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n", encoding="utf-8")
    assert main(["settings", "--check", str(doc)]) == 1
    assert main(["settings", "--write", str(doc)]) == 0
    assert main(["settings", "--check", str(doc)]) == 0
    written = doc.read_text(encoding="utf-8")
    assert written.startswith("intro\n") and written.endswith("outro\n") and "| `REDIS_URL` |" in written
    capsys.readouterr()
    assert main(["settings"]) == 0
    env = capsys.readouterr().out
    assert "\nREDIS_URL=redis://localhost:6379/0\n" in env and "\nLABEL_STUDIO_API_KEY=\n" in env
    assert "FULL_RESCORE_ITERATIONS=1,2,5,9" in env


def test_settings_table_cells_stay_markdown():
    table = markdown_table()
    rows = table.splitlines()[2:]
    assert all(len(re.split(r"(?<!\\)\|", row)) == 5 for row in rows), "a cell holds an unescaped |"
    assert "MODEL_DIR/&lt;project&gt;" in table
