"""The web dashboard in a real browser against a real ``shoal serve`` on the lab.

Headless Chromium (Debian's package, driven by Playwright: shoal.testing.chromium)
opens ``http://127.0.0.1:PORT/?token=TOKEN`` of a ``shoal serve --listen``
holding the lab's nodes, and logs in with the session cookie. Then, with no
reload: a killed node's tile turns down within 5 s (and up again when revived);
a bad selection in the filter shows the API's caret message; an app brought up
from the page fills its barrier; a push started from the page shows per-node
progress. Screenshots go to $SHOAL_TEST_ARTIFACTS (default tests/artifacts/,
git-ignored). Skipped with the reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import ServiceClient
from shoal.nodes.inventory import import_nodes
from shoal.state import State
from shoal.testing.chromium import browser, skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.slow]
PlaywrightTimeout = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')"
).TimeoutError

SHOAL = str(Path(sys.executable).with_name("shoal"))
ARTIFACTS = Path(
    os.environ.get("SHOAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts")
)
#: The app the page brings up: three members meet at a barrier after staggered work.
SPEC = """\
app: {name}
components:
  meet:
    select: "n[6-8]"
    count: 3
    processes:
      - name: work
        run: "sleep $(( $(od -An -N1 -tu1 /dev/urandom) % 3 ))"
      - {{name: gather, barrier: b}}
      - {{name: after, run: "echo released"}}
barriers:
  b: {{}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``shoal serve --listen`` over the lab's nodes: (its login URL, its home); stopped after."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("dash") / "svc"
    home.mkdir(mode=0o700)
    placed = [  # a map position per node (n1 in Lisbon, then eastwards)
        dataclasses.replace(n, attrs={**n.attrs, "lat": 38.7 - 2 * i, "lon": -9.1 + 20 * i})
        for i, n in enumerate(lab.nodes())
    ]
    with State(home / "state.db") as st:
        import_nodes(placed, state=st)
    env = {**os.environ, "SHOAL_HOME": str(home)}
    port = _free_port()
    log = home.parent / "serve.log"  # a file: a pipe nobody reads would stall the service
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SHOAL, "serve", "--sweep-interval", "0", "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a loaded CI machine (load 48 on 2 cores: > 30 s)
        while ServiceClient.locate(home) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "shoal serve did not listen within 120 s: " + (
                log.read_text(errors="replace")[-2000:] or "nothing in its log"
            )
            time.sleep(0.05)
        token = subprocess.run(
            [SHOAL, "serve", "token"], env=env, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        yield f"http://127.0.0.1:{port}/?token={token}", home
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def chrome(served: Any) -> Iterator[Any]:
    with browser() as context:
        yield context


@pytest.fixture
def page(chrome: Any, served: tuple[str, Path], request: pytest.FixtureRequest) -> Iterator[Any]:
    """The dashboard logged in by ``?token=``, every tile up; a screenshot kept after."""
    url, _ = served
    tab = chrome.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.goto(url)
    assert "token=" not in tab.url  # the login redirected to the URL without it
    tab.wait_for_selector("body[data-ready='1']", timeout=30_000)
    tab.wait_for_function(
        "() => document.querySelectorAll('#tiles .tile').length === 8"
        " && document.querySelectorAll('#tiles .tile.s-up').length === 8",
        timeout=60_000,
    )
    tab.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    try:
        yield tab
        assert tab.evaluate("window.__sameDocument === true"), "the page reloaded"
        assert problems == [], problems
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"dashboard-{request.node.name}.png"), full_page=True)
        tab.close()


def _tile(page: Any, node: str) -> str:
    return str(page.get_attribute(f"#tiles .tile[data-node='{node}']", "class"))


def test_a_killed_node_turns_down_within_5_s_without_a_reload(
    lab: Any, page: Any, served: tuple[str, Path]
) -> None:
    node = "n5"
    try:
        lab.kill(node)
        killed = time.time()  # the node is dead once kill returns (its link cut, then killed)
        down = f"#tiles .tile.s-down[data-node='{node}']"
        try:
            page.wait_for_selector(down, timeout=5_000)
        except PlaywrightTimeout:  # too slow: say whether the service or the page was late
            page.wait_for_selector(down, timeout=30_000)
            seen = time.time() - killed
            events = page.evaluate(
                "(n) => fetch(`/api/v1/events?after=0&node=${n}&topic=node`, {headers: "
                "{'Shoal-Protocol': '1'}}).then((r) => r.text())",
                node,
            )
            stored = [
                f"{e['kind']} +{e['stored'] - killed:.1f} s"
                for e in map(json.loads, events.splitlines())
                if e.get("stored", 0) >= killed
            ]
            arrivals = page.evaluate("window.shoalDashboard.perf.arrivals")
            reached = [f"{kind} +{t - killed:.1f} s" for t, _, kind, n in arrivals
                       if n == node and t >= killed]  # fmt: skip
            log = (served[1].parent / "serve.log").read_text(errors="replace").splitlines()
            warned = [line for line in log if line.strip()][-5:]  # e.g. a slow write batch
            raise AssertionError(
                f"{node}'s tile turned down {seen:.1f} s after the kill (> 5 s); the service "
                f"stored, after the kill: {', '.join(stored) or 'nothing'}; the page's stream "
                f"delivered: {', '.join(reached) or 'nothing'}; the service's log ends: "
                f"{' | '.join(warned) or 'nothing'}"
            ) from None
        assert page.text_content("#counts .count.s-down") == "down 1"
        page.click(f"#tiles .tile[data-node='{node}']")
        assert "down" in page.text_content("#node-detail .facts")
    finally:
        lab.revive(node)
    page.wait_for_selector(f"#tiles .tile.s-up[data-node='{node}']", timeout=30_000)
    assert page.text_content("#counts .count.s-down") == "down 0"


def test_the_filter_shows_the_caret_and_dims_the_rest(page: Any) -> None:
    page.fill("#filter", "n[1-")
    page.press("#filter", "Enter")
    page.wait_for_selector("#filter-error:not([hidden])")
    text = page.text_content("#filter-error")
    assert "^" in text and "n[1-" in text, text
    page.fill("#filter", "n[1-3]")
    page.press("#filter", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#tiles .tile.dim').length === 5")
    assert page.is_hidden("#filter-error")
    assert "dim" not in _tile(page, "n2") and "dim" in _tile(page, "n4")


def test_the_map_places_nodes_with_lat_lon(page: Any) -> None:
    page.check("#view-map")
    assert page.is_hidden("#tiles")
    page.wait_for_function("() => document.querySelectorAll('#map-dots circle.s-up').length === 8")
    lisbon = page.locator("#map-dots circle[data-node='n1']")
    assert lisbon.get_attribute("cx") == "-9.10" and lisbon.get_attribute("cy") == "-38.70"
    lisbon.click()
    assert "n1" in page.text_content("#node-detail h3")
    assert "38.7" in page.text_content("#node-detail .facts")


def test_an_app_brought_up_from_the_page_fills_its_barrier(
    page: Any, served: tuple[str, Path], tmp_path: Path
) -> None:
    spec = tmp_path / "meet.yaml"
    spec.write_text(SPEC.format(name="dashmeet"))
    page.click("nav button[data-tab='apps']")
    page.fill("#app-spec", str(spec))
    page.click("#app-up")
    page.wait_for_selector("#app-view .barrier[data-barrier='b']", timeout=60_000)
    page.wait_for_function(
        "() => { const p = document.querySelector("
        "\"#app-view .barrier[data-barrier='b'] progress\");"
        " return p && Number(p.value) === 3 && Number(p.max) === 3; }",
        timeout=90_000,
    )
    assert "3/3" in page.text_content("#app-view .barrier[data-barrier='b']")
    members = page.locator("#app-view tbody tr")
    assert members.count() == 3
    page.click("#app-down")
    page.wait_for_function(
        "() => !document.querySelector('#app-view h3')"
        " || !document.querySelector('#app-view h3').textContent.includes('running')",
        timeout=60_000,
    )


def test_a_push_from_the_page_shows_per_node_progress(page: Any, tmp_path: Path) -> None:
    tree = tmp_path / "site"
    tree.mkdir()
    for i in range(4):
        (tree / f"blob{i}").write_bytes(os.urandom(2_000_000))
    page.click("nav button[data-tab='pushes']")
    page.fill("#push-source", str(tree))
    page.fill("#push-dir", "/tmp/dash-site")
    page.fill("#push-selection", "n[1-4]")
    page.click("#push-start")
    page.wait_for_selector(".push[data-state='done'], .push[data-state='failed']", timeout=120_000)
    block = page.locator(".push").first
    assert block.get_attribute("data-state") == "done", block.text_content()
    rows = block.locator("tbody tr")
    assert rows.count() == 4
    for i in range(4):
        cells = rows.nth(i).locator("td")
        assert cells.nth(0).text_content() in {"n1", "n2", "n3", "n4"}
        assert int(cells.nth(2).text_content()) > 0  # bytes received by that node
    version = page.text_content(".push h3 + p")
    assert "source egress" in version and "version " in version, version
    page.wait_for_function(  # each pushed node's current version, once the push is over
        "() => [...document.querySelectorAll('#versions-view tbody tr')]"
        ".filter((r) => /^n[1-4]$/.test(r.cells[0].textContent) && r.cells[1].textContent)"
        ".length === 4"
    )
