"""DSMT's lifecycle scripts in a depot package on real nodes (issue 16 item 1): a
``lifecycle:`` service runs ``install.sh`` as an install step, ``start.sh`` as the
service, ``status.sh`` as its health check and ``stop.sh`` before the stop signal."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.app import lifecycle, store
from shoal.app.appspec import load
from shoal.content.depot import Depot
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab

SCRIPTS = {
    # the marks directory is $HOME/$MARKS on the node
    # install steps run in the package's directory (without the component's env)
    "install.sh": "echo installed > installed.mark\n",
    "start.sh": textwrap.dedent(
        """\
        trap 'echo "$(date +%s.%N)" > "$HOME/$MARKS/term"; exit 0' TERM
        mkdir -p "$HOME/$MARKS" && echo $$ > "$HOME/$MARKS/pid"
        cp "$(dirname "$0")/installed.mark" "$HOME/$MARKS/install"
        while :; do sleep 0.1; done
        """
    ),
    # the time, and whether the program's pid is still alive when it runs
    "stop.sh": textwrap.dedent(
        """\
        if kill -0 "$SHOAL_PID" 2>/dev/null; then alive=alive; else alive=gone; fi
        echo "$(date +%s.%N) $SHOAL_PID $alive" >> "$HOME/$MARKS/stop"
        """
    ),
    "status.sh": '[ ! -e "$HOME/$MARKS/sick" ] || { echo sick; exit 3; }\n',
}


def spec(tmp_path: Path, app: str, source: str, env: str = "{}", step: str = "") -> Path:
    """The spec of ``app``: one ``lifecycle: pkg`` service on n1, pkg from ``source``."""
    path = tmp_path / "app.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            app: {app}
            software:
              pkg: {{source: {source}}}
            components:
              c:
                select: "n1"
                software: [pkg]
                env: {env}
                processes:
                  - {{name: svc, lifecycle: pkg{step}}}
            """
        )
    )
    return path


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    clear_failed()
    nodes = lab.nodes()[:2]
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    run(agents.stop_async(nodes, agents.AgentOptions()))


def program(node: Node, name: str) -> dict[str, Any]:
    status = run(agents.status_async([node]))
    (outcome,) = list(status)
    return next(p for p in outcome.value["programs"] if p["name"] == name)


@pytest.mark.parametrize("mode", [0o755, 0o644], ids=["executable", "not-executable"])
def test_a_lifecycle_service_runs_the_packages_scripts(
    fleet: list[Node], tmp_path: Path, mode: int
) -> None:
    """The scripts run whether or not they are executable (non-executable ones by sh)."""
    marks = unique_lab_name("t-pkgscripts")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name, body in SCRIPTS.items():
        (pkg / name).write_text("#!/bin/sh\n" + body)
        (pkg / name).chmod(mode)
    with State() as st:
        Depot(st).put(str(pkg), "lcpkg", f"{mode:o}")
    app = unique_lab_name("lcapp")
    env, depot = f"{{MARKS: {marks}}}", f'"depot:lcpkg@{mode:o}"'
    path = spec(tmp_path, app, depot, env, ", health_interval: 1")
    node = fleet[0]
    name = f"{app}.c.svc"
    try:
        report = run(lifecycle.up_async(load(path)))
        assert not report.failed, report.failed
        assert remote(node, f"cat {marks}/install").strip() == "installed"
        deadline = time.monotonic() + 30
        while program(node, name)["health"] != "ok":
            assert time.monotonic() < deadline, program(node, name)
            time.sleep(0.2)
        remote(node, f"touch {marks}/sick")  # status.sh fails: health turns failing
        deadline = time.monotonic() + 30
        while (prog := program(node, name))["health"] != "failing":
            assert time.monotonic() < deadline, prog
            time.sleep(0.1)
        assert "sick" in prog["health_detail"], prog
        remote(node, f"rm -f {marks}/sick {marks}/stop {marks}/term")
        deadline = time.monotonic() + 30
        while (prog := program(node, name))["health"] != "ok":
            assert time.monotonic() < deadline, prog
            time.sleep(0.2)
        pid = str(prog["pid"])  # the program the agent runs (start.sh is in its group)
        run(lifecycle.down_async(app))
        # stop.sh ran once, while the program was alive, before the TERM reached it
        stopped = remote(node, f"cat {marks}/stop").split()
        assert stopped[1:] == [pid, "alive"], stopped
        term = float(remote(node, f"cat {marks}/term"))
        assert float(stopped[0]) <= term, (stopped, term)
    finally:
        with State() as st:
            present = store.get_app(st, app) is not None
        if present:
            run(lifecycle.down_async(app))
        remote(node, f"rm -rf {marks}", check=False)


def test_a_failing_install_script_is_one_line_naming_node_package_script_status(
    fleet: list[Node], tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "install.sh").write_text("echo building\nexit 3\n")  # not executable
    (pkg / "start.sh").write_text("sleep 600\n")
    app = unique_lab_name("lcfail")
    path = spec(tmp_path, app, "pkg")
    try:
        report = run(lifecycle.up_async(load(path)))
        (problem,) = report.failed.values()
        assert "\n" not in problem, problem
        assert problem.startswith("n1: install step of pkg failed (exit 3)"), problem
        assert problem.endswith("package pkg: install.sh failed with exit status 3"), problem
    finally:
        with State() as st:
            present = store.get_app(st, app) is not None
        if present:
            run(lifecycle.down_async(app))
