"""The dashboard's shipped assets and how they are served (no browser: see
tests/integration/test_dashboard_browser.py for the page at work)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shoal.web import dashboard

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def client() -> TestClient:
    app = FastAPI()
    dashboard.mount(app)
    return TestClient(app)


def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    with client() as c:
        page = c.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        script = c.get("/ui/main.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/world.svg").headers["content-type"] == "image/svg+xml"


def test_unknown_or_escaping_names_are_404_and_never_read() -> None:
    assert dashboard.asset("../dashboard.py") is None
    assert dashboard.asset(".hidden.js") is None
    assert dashboard.asset("dashboard.py") is None  # not a shipped kind of file
    assert dashboard.asset("nosuch.js") is None
    with client() as c:
        for path in ("/ui/nosuch.js", "/ui/..%2Fdashboard.py", "/ui/__init__.py"):
            answer = c.get(path)
            assert answer.status_code == 404, path
            assert "dashboard.py" not in answer.text or "no dashboard file" in answer.text


def test_every_reference_is_shipped_and_nothing_comes_from_another_host() -> None:
    static = dashboard.STATIC
    index = (static / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', index))
    for js in static.glob("*.js"):
        text = js.read_text()
        referenced |= set(re.findall(r'from "\./([^"]+)"', text))
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), js.name  # no CDN
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", index)
    assert {"main.js", "style.css", "world.svg"} <= referenced
    for name in referenced:
        assert dashboard.asset(name) is not None, name
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "web/static/*" in package_data["package-data"]["shoal"]


def test_only_the_page_skips_the_api_protocol_header_and_eventsource_gives_it() -> None:
    assert dashboard.page({"path": "/"}) and dashboard.page({"path": "/ui/main.js"})
    assert not dashboard.page({"path": "/api/v1/nodes"})
    assert dashboard.query_protocol({"query_string": b"after=3&protocol=1"}) == "1"
    assert dashboard.query_protocol({"query_string": b"after=3"}) is None
