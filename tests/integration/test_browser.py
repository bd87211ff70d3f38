"""The labeling stream checked in a real browser (headless Chromium driven by Playwright).

The API-level tests prove that ``/api/projects/<id>/next`` serves the least confident task; this
one proves what an annotator actually sees: log in to the session's Label Studio 1.23.2 with its
username and password, open the project's Data Manager, press "Label All Tasks" and read the text
the labeling view (``/projects/<id>/data?labeling=1``) renders. The project holds predictions of one
version with distinct
scores, its ``model_version`` is that version and its sampling is "Uncertainty sampling", so the
view must show the unlabeled task with the lowest score (one lower-scored task is annotated first,
so "lowest overall" and "lowest unlabeled" differ). A screenshot of that view is saved in the
test's temporary directory, or, with ``UPDATE_SCREENSHOTS=1``, over
docs/screenshots/labeling-stream.png (the README's), so a plain run leaves the tree clean.

Chromium comes from the system (Debian's ``chromium``; ``scripts/ensure_chromium.sh``), never
from ``playwright install``: set ``CHROMIUM_EXECUTABLE`` to use another binary. Without a browser
(or without the ``playwright`` package) the test is skipped, unless ``REQUIRE_LABEL_STUDIO=1``
(CI), where that is a failure, as a missing Label Studio is.
"""
from __future__ import annotations

import os

import pytest
import requests

from tests.helpers.backend import CLASSIFICATION_XML, REPO_ROOT
from tests.helpers.browser import PAGE_TIMEOUT_MS

pytestmark = pytest.mark.integration

README_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "labeling-stream.png"
MODEL_VERSION = "v-test"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
# Distinct words, none a substring of another, so "this text is on the page" is unambiguous.
TEXTS_AND_SCORES = [
    ("The orchestra played a wonderful encore and the crowd cheered.", 0.93),
    ("Delivery arrived two weeks late and the box was crushed.", 0.71),
    ("The hotel room was fine, nothing special either way.", 0.12),  # lowest: annotated first
    ("Customer support answered quickly but could not fix the issue.", 0.38),  # lowest unlabeled
    ("Battery life is shorter than advertised, though the screen is bright.", 0.55),
    ("Absolutely loved the hiking trail and the view from the summit.", 0.86),
]


class LabelStudioAPI:
    """The few Label Studio REST calls this test needs (legacy token auth)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, **kw) -> dict | list:
        response = self.session.request(method, f"{self.url}{path}", timeout=30, **kw)
        assert response.ok, f"{method} {path}: HTTP {response.status_code} {response.text[:500]}"
        return response.json()


def make_project(api: LabelStudioAPI) -> tuple[int, dict[int, tuple[str, float]], int]:
    """A sentiment project with scored predictions; returns (project id, {task id: (text, score)},
    the id of the task annotated first)."""
    project = api.call("POST", "/api/projects",
                       json={"title": "Sentiment (uncertainty sampling)",
                             "label_config": CLASSIFICATION_XML})
    pid = int(project["id"])
    api.call("POST", f"/api/projects/{pid}/import", json=[{"text": text} for text, _ in TEXTS_AND_SCORES])
    listed = api.call("GET", "/api/tasks", params={"project": pid, "page_size": 100, "fields": "all"})
    by_text = {task["data"]["text"]: int(task["id"]) for task in listed["tasks"]}
    assert set(by_text) == {text for text, _ in TEXTS_AND_SCORES}
    tasks = {}
    for text, score in TEXTS_AND_SCORES:
        task_id = by_text[text]
        choice = {"from_name": "sentiment", "to_name": "text", "type": "choices",
                  "value": {"choices": ["Positive" if score > 0.5 else "Negative"]}}
        api.call("POST", "/api/predictions",
                 json={"task": task_id, "result": [choice], "score": score, "model_version": MODEL_VERSION})
        tasks[task_id] = (text, score)
    updated = api.call("PATCH", f"/api/projects/{pid}",
                       json={"model_version": MODEL_VERSION, "sampling": UNCERTAINTY_SAMPLING})
    assert updated["model_version"] == MODEL_VERSION and updated["sampling"] == UNCERTAINTY_SAMPLING
    annotated = min(tasks, key=lambda t: tasks[t][1])
    api.call("POST", f"/api/tasks/{annotated}/annotations",
             json={"result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                               "value": {"choices": ["Neutral"]}}]})
    return pid, tasks, annotated


def log_in(page, label_studio) -> None:
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("#email", label_studio.username)
    page.fill("#password", label_studio.password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/user/login" not in page.url, f"login failed, still on {page.url}"


def test_labeling_stream_shows_least_confident_unlabeled_task(browser, label_studio, tmp_path):
    api = LabelStudioAPI(label_studio.url, label_studio.token)
    pid, tasks, annotated = make_project(api)
    unlabeled = {t: v for t, v in tasks.items() if t != annotated}
    expected_id = min(unlabeled, key=lambda t: unlabeled[t][1])
    expected_text = unlabeled[expected_id][0]

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        log_in(page, label_studio)
        page.goto(f"{label_studio.url}/projects/{pid}/data")
        # Press the button, as an annotator does. (Loading /projects/<id>/data?labeling=1 directly
        # is not the same in LS 1.23.2: the page then sends the view's empty filters and
        # selection, which LS takes as a Data Manager queue and serves in table order.)
        with page.expect_response(lambda r: "/api/dm/actions" in r.url and "id=next_task" in r.url) as served:
            page.get_by_role("button", name="Label All Tasks").click()
        assert served.value.ok, f"next_task: HTTP {served.value.status}"
        next_task = served.value.json()
        assert "Active learning" in next_task.get("queue", ""), \
            f"Label Studio did not use Uncertainty sampling: queue {next_task.get('queue')!r}"
        assert int(next_task["id"]) == expected_id, (
            f"the labeling stream served task {next_task['id']}, expected {expected_id} "
            f"(the lowest {MODEL_VERSION} score among unlabeled tasks)")

        # What the annotator sees: the Text tag renders the task's text, and no other task's.
        page.get_by_text(expected_text, exact=True).wait_for(state="visible")
        for choice in ("Positive", "Negative", "Neutral"):  # the Choices tag of the config
            page.get_by_role("checkbox", name=choice).wait_for(state="visible")
        assert "labeling=1" in page.url, f"not the labeling view: {page.url}"
        shown = page.locator("body").inner_text()
        others = [text for t, (text, _) in tasks.items() if t != expected_id and text in shown]
        assert not others, f"the labeling view shows other tasks' texts too: {others}"

        update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
        screenshot = README_SCREENSHOT if update else tmp_path / README_SCREENSHOT.name
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise
    finally:
        context.close()
