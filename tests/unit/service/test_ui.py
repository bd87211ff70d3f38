"""The project manager's page (/ui/) against a real Redis and an in-process RQ worker: it shows the
numbers ``GET /projects/<id>`` shows, a curve, the jobs and workers; bad states are pages, not 500s."""
from __future__ import annotations

import base64
import re

from backend.model import FeasibleALModel
from backend.service.app import create_app
from backend.service.runtime import set_context
from tests.unit.service.test_fast_path import (
    PID,
    annotate,
    connect,
    examples,
    make_backend,
    work,
)


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, f"no element #{element_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_the_page_shows_what_the_api_shows(redis_url, tmp_path, tiny_bert):
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=0)
    set_context(backend)
    try:
        data = examples(40)
        ls, client = connect(backend, [t for t, _ in data])
        empty = client.get(f"/ui/projects/{PID}")  # connected, nothing labeled: a state, not an error
        assert empty.status_code == 200 and "No version has been published yet" in empty.text
        assert "none yet" in client.get("/ui/").text or f"projects/{PID}" in client.get("/ui/").text

        for i, (_, label) in enumerate(data[:6]):
            annotate(client, ls, i + 1, label)
        work(backend)
        annotate(client, ls, 7, data[6][1])
        work(backend)
        api = client.get(f"/projects/{PID}").json
        page = client.get(f"/ui/projects/{PID}")
        assert page.status_code == 200
        html = page.text
        assert text_of(html, "serving-model") == api["serving"]["model"] == "proxy"
        assert text_of(html, "version") == api["version"] and text_of(html, "labeled") == "7"
        assert text_of(html, "fast-status") == api["fast_path"]["status"] == "published"
        assert "Workers alive" in html and api["workers"]["alive"] == 0  # the test drains queues in-process
        assert "No worker serves" in html  # ... and the page says what that means
        updates = re.findall(r"<tr><td>[^<]*ago</td><td>fast</td>", html)
        assert len(updates) == 2, "one row per published version"
        src = re.search(r'<img id="curve" src="([^"]+)"', html).group(1)
        assert f"/ui/projects/{src}" == f"/ui/projects/{PID}/curve.svg", "relative to /ui/projects/"
        svg = client.get(f"/ui/projects/{PID}/curve.svg")
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
        index = client.get("/ui/").text
        assert f'href="projects/{PID}"' in index
        assert client.get("/ui/projects/999999").status_code == 404
    finally:
        set_context(None)


def test_the_page_is_behind_basic_auth(redis_url, tmp_path, tiny_bert):
    backend = make_backend(redis_url, tmp_path, tiny_bert, basic_auth_user="pm", basic_auth_pass="secret")
    client = create_app(FeasibleALModel, backend=backend).test_client()
    assert client.get("/ui/").status_code == 401
    token = base64.b64encode(b"pm:secret").decode()
    assert client.get("/ui/", headers={"Authorization": f"Basic {token}"}).status_code == 200
