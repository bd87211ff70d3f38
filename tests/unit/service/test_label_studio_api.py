"""`LabelStudioApi` is what the jobs call on ``ctx.ls``; the real client and the tests' stand-in both
implement it (mypy checks the signatures in their modules; here the same at run time), and a
`JobContext` takes either through its constructor."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from backend.service.ls_client import LabelStudioClient
from backend.service.ls_errors import LabelStudioError, LabelStudioNotFoundError, LabelStudioUnavailableError
from backend.service.ls_protocol import LabelStudioApi
from backend.service.runtime import Backend, JobContext, LabelStudioNotConfiguredError
from tests.helpers.backend import CLASSIFICATION_XML, make_settings
from tests.helpers.fake_label_studio import InMemoryLabelStudio, choice_result

PACKAGE = Path(__file__).resolve().parents[3] / "backend"
PROTOCOL_CALLS = {name for name, value in vars(LabelStudioApi).items()
                  if callable(value) and not name.startswith("_")}


def _calls_on_ctx_ls() -> set[str]:
    """Every ``<anything>.ls.<method>(...)`` the web process and the workers make (the jobs'
    ``ctx.ls.labeled_tasks(...)``); the harness and the demo drive Label Studio with their own client."""
    found = set()
    for path in [*(PACKAGE / "service").rglob("*.py"), PACKAGE / "model.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "ls"):
                found.add(node.func.attr)
    return found


def test_the_protocol_lists_exactly_the_calls_the_jobs_make() -> None:
    assert PROTOCOL_CALLS == _calls_on_ctx_ls()


@pytest.mark.parametrize("implementation", [LabelStudioClient, InMemoryLabelStudio])
def test_the_client_and_the_stand_in_have_the_protocol_signatures(implementation: type) -> None:
    for name in PROTOCOL_CALLS:
        expected = inspect.signature(getattr(LabelStudioApi, name))
        actual = inspect.signature(getattr(implementation, name))
        assert [(p.name, p.kind) for p in actual.parameters.values()] == \
               [(p.name, p.kind) for p in expected.parameters.values()], f"{implementation.__name__}.{name}"
    # the stand-in's defaults are the real client's
    if implementation is InMemoryLabelStudio:
        for name in PROTOCOL_CALLS:
            real = inspect.signature(getattr(LabelStudioClient, name)).parameters
            assert [p.default for p in inspect.signature(getattr(implementation, name)).parameters.values()] == \
                   [p.default for p in real.values()], name


def test_both_are_instances_of_the_protocol() -> None:
    assert isinstance(LabelStudioClient("http://127.0.0.1:9", "a-legacy-token"), LabelStudioApi)
    assert isinstance(InMemoryLabelStudio(), LabelStudioApi)


def test_a_context_takes_its_label_studio_by_constructor(redis_url: str, tmp_path: Path) -> None:
    stand_in = InMemoryLabelStudio()
    settings = make_settings(redis_url, tmp_path)  # no LABEL_STUDIO_URL: a given one needs none
    assert JobContext.from_settings(settings, label_studio=stand_in).ls is stand_in
    assert Backend.from_settings(settings, label_studio=stand_in).ls is stand_in
    with pytest.raises(LabelStudioNotConfiguredError):
        JobContext.from_settings(settings).ls  # noqa: B018 - the property is the call under test


def test_without_one_the_context_creates_the_real_client_from_the_settings(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path, label_studio_url="http://127.0.0.1:9/",
                             label_studio_api_key="a-legacy-token", label_studio_timeout=7.0)
    ctx = JobContext.from_settings(settings)
    client = ctx.ls
    assert isinstance(client, LabelStudioClient) and ctx.ls is client and ctx.label_studio is client
    assert client.url == "http://127.0.0.1:9" and client.timeout == 7.0


def test_the_stand_in_answers_like_label_studio() -> None:
    ls = InMemoryLabelStudio([{"id": 5, "data": {"text": "b"}}], CLASSIFICATION_XML, project_id=3)
    first, second = ls.add_texts(["c", "d"])
    assert (first, second) == (6, 7) and ls.count_tasks(3) == 3
    ls.annotate(6, "Positive")
    ls.annotate(7, "Negative", was_cancelled=True)  # skipped: still unlabeled
    assert [t["id"] for t in ls.labeled_tasks(3)] == [6]
    assert ls.unlabeled_tasks(3) == [{"id": 5, "data": {"text": "b"}}, {"id": 7, "data": {"text": "d"}}]
    assert ls.get_project(3)["label_config"] == CLASSIFICATION_XML
    with pytest.raises(LabelStudioNotFoundError):
        ls.get_project(4)

    with pytest.raises(LabelStudioError) as refused:
        ls.set_model_version(3, "v1")  # no prediction of v1 yet
    assert refused.value.status_code == 400 and ls.refused_versions == ["v1"] and ls.model_version == ""
    assert ls.import_predictions(3, [{"task": 5, "result": choice_result("Positive"), "score": 0.2,
                                      "model_version": "v1"}]) == 1
    assert ls.create_predictions([{"task": 7, "result": [], "score": 0.1, "model_version": "v1"}]) == 1
    with pytest.raises(ValueError):
        ls.create_predictions([{"task": 7, "result": [], "score": float("nan")}])
    ls.set_model_version(3, "v1")
    assert ls.model_versions(3) == {"v1": 2} and ls.next_task() == 7
    assert ls.delete_model_version(3, "v1") == 2 and ls.model_version == "" and ls.predictions == []

    ls.fail = True
    with pytest.raises(LabelStudioUnavailableError, match="unreachable"):
        ls.labeled_tasks(3)
