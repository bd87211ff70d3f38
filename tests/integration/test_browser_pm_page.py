"""The project manager's page in a real browser (headless Chromium, Playwright), against the real
stack (Label Studio 1.23.2, gunicorn, an RQ worker): it loads behind basic auth, shows the
numbers ``GET /projects/<id>`` shows, reloads itself while a training runs and the progress it
shows moves. A screenshot goes to the test's temporary directory, or with ``UPDATE_SCREENSHOTS=1``
over docs/screenshots/pm-page.png (the README's)."""
from __future__ import annotations

import os
import secrets
import time

import pytest

from tests.helpers.backend import CLASSIFICATION_XML, REPO_ROOT
from tests.helpers.browser import PAGE_TIMEOUT_MS
from tests.helpers.servers import BackendProcesses
from tests.integration.test_backend_e2e import (  # noqa: F401  (module fixture `ls`)
    AUTH,
    Stack,
    classification_tasks,
    ls,
    stack_env,
)
from tests.integration.test_backend_e2e import (
    wait_for as wait_for_every,
)

pytestmark = pytest.mark.integration

README_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "pm-page.png"
POOL = 60


@pytest.fixture(scope="module")
def stack(label_studio, redis_server, tiny_bert, tmp_path_factory):
    """Fast path on, basic auth on (the page is behind it), a slow training (many epochs) so the page
    can be watched while it runs."""
    root = tmp_path_factory.mktemp("pm-page")
    env = stack_env(label_studio, redis_server, tiny_bert, root, FAST_PATH="on", TRAIN_EVERY_N="0",
                    EPOCHS="3000", TORCH_THREADS="1")
    with BackendProcesses(env, root, startup_timeout=90) as processes:
        yield Stack(processes.url, env, processes)



def wait_for(predicate, timeout: float, what: str, stack: Stack):
    return wait_for_every(predicate, timeout, what, stack, interval=0.3)


def load_while_still(page, stack: Stack, pid: int, tries: int = 10) -> dict:
    """Load the page between two reads of ``GET /projects/<id>`` that show the same version and
    fast-path status (a fast update still queued can publish while the page loads); that read."""
    for _ in range(tries):
        before = stack.get(f"/projects/{pid}").json()
        response = page.goto(f"{stack.url}/ui/projects/{pid}")
        assert response is not None and response.ok
        after = stack.get(f"/projects/{pid}").json()
        if (before["version"], before["fast_path"]) == (after["version"], after["fast_path"]):
            return after
        time.sleep(1.0)
    raise AssertionError(f"the project kept changing for {tries} page loads: {after}")


def test_the_pm_page_shows_the_api_numbers_and_a_training_moving(browser, stack, ls, tmp_path):  # noqa: F811
    pid = ls.create_project(f"pm-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    data, results = classification_tasks(POOL)
    ids = ls.import_tasks(pid, data)
    # the fast path posts through the API with auth; LS's own webhook carries none, so annotate and
    # deliver the events ourselves (as tests/integration/test_webhook_triggers.py does)
    assert stack.post("/setup", json={"project": f"{pid}.0", "schema": CLASSIFICATION_XML}).ok
    for task_id, result in list(zip(ids, results, strict=True))[:8]:
        annotation = ls.create_annotation(task_id, result)
        stack.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": pid},
                                     "task": {"id": task_id}, "annotation": annotation})
    wait_for(lambda: (stack.get(f"/projects/{pid}").json().get("fast_path") or {}).get("labeled") == 8,
             180, "a fast version with all 8 labels", stack)

    context = browser.new_context(viewport={"width": 1200, "height": 1400},
                                  http_credentials={"username": AUTH[0], "password": AUTH[1]})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        api = load_while_still(page, stack, pid)
        assert page.locator("#serving-model").inner_text() == api["serving"]["model"]
        assert page.locator("#version").inner_text() == api["version"]
        assert page.locator("#fast-status").inner_text() == api["fast_path"]["status"]
        assert page.locator("#curve").evaluate("img => img.complete && img.naturalWidth > 0")
        assert f"Workers alive: {api['workers']['alive']}" in page.locator("#workers").inner_text()

        stack.post("/train", json={"project": pid})  # Start training: a slow fine-tune
        wait_for(lambda: (stack.get(f"/projects/{pid}").json().get("running_job")), 60, "a running training", stack)
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(seen) < 2:
            page.reload()  # what the page's own refresh does every few seconds
            assert page.locator("meta[http-equiv=refresh]").count() == 1, "the page reloads while a job runs"
            cells = page.locator("#jobs td.progress").all_inner_texts()
            seen |= {c for c in cells if c}
            time.sleep(1.0)
        assert len(seen) >= 2, f"the training's progress never moved on the page: {seen}\n{stack.log_tail()}"

        update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
        screenshot = README_SCREENSHOT if update else tmp_path / README_SCREENSHOT.name
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise
    finally:
        context.close()
        ls.delete_project(pid)
