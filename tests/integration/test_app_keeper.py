"""The keeper on a real lab: applications kept up with nobody at the keyboard.

The keeper runs as its own process (``keeper_driver.py``, the service's
keeper alone), always stopped in ``finally``; every application is taken down
and every killed node revived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink.eventlog import EventRow
from shoal.app import lifecycle, store
from shoal.app.appspec import load
from shoal.control.journal import Journal
from shoal.nodes import inventory
from shoal.nodes.health import clear_failed
from shoal.nodes.model import AttrValue, Node
from shoal.state import State

from .conftest import remote

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).with_name("keeper_driver.py")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture()
def nodes(lab: Any) -> Iterator[list[Node]]:
    clear_failed()
    yield lab.nodes()
    for node in lab.nodes():
        lab.revive(node.name)
    clear_failed()


class Keeper:
    """The keeper process of one test."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, str(DRIVER), *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


@pytest.fixture()
def keepers() -> Iterator[list[Keeper]]:
    started: list[Keeper] = []
    yield started
    for k in started:
        k.stop()


def wait_for(what: Callable[[], Any], timeout: float, step: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return what()


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def members(app: str) -> dict[str, tuple[str, int]]:
    """node -> (state, slot) of the application's members."""
    with State() as st:
        return {m.node: (m.state, m.slot) for m in store.members(st, app)}


def active(app: str) -> list[str]:
    return sorted(n for n, (s, _) in members(app).items() if s == "active")


def app_events(kind: str) -> list[EventRow]:
    with State() as st:
        return [e for e in Journal(st).read(0, topic="app").events if e.kind == kind]


def processes(node: Node, marker: str) -> int:
    """Processes running ``marker`` on every lab node (they share one PID space)."""
    return int(remote(node, f"ps -eo args | grep -c '^{marker}$' || true").strip())


def running_on(app: str, node: str) -> bool:
    status = run(lifecycle.status_async(app))
    return any(
        n.node == node and n.programs and all(p["state"] == "RUNNING" for p in n.programs)
        for n in status.nodes
        if n.state == "active"
    )


def down(app: str) -> None:
    with State() as st:
        if store.get_app(st, app) is None:
            return
    report = run(lifecycle.down_async(app))
    assert all(v == "cleaned" for v in report.nodes.values()), report.nodes


def set_attrs(names: dict[str, dict[str, AttrValue]]) -> None:
    with State() as st:
        found = {n.name: n for n in inventory.load_nodes(st, list(names))}
        inventory.import_nodes(
            [dataclasses.replace(found[n], attrs=a) for n, a in names.items()], state=st
        )


def marker_spec(
    tmp_path: Path, app: str, marker: str, count: int | str, select: str = "n[1-4]"
) -> Path:
    return spec_file(
        tmp_path,
        f"""\
        app: {app}
        components:
          w:
            select: "{select}"
            count: {count}
            on_failure: replace
            processes:
              - {{name: svc, service: "exec {marker}"}}
        """,
    )


def test_a_killed_members_node_is_replaced_with_nobody_watching(
    lab: Any, nodes: list[Node], tmp_path: Path, keepers: list[Keeper]
) -> None:
    marker = f"sleep 81{os.getpid() % 100:02d}"
    path = marker_spec(tmp_path, "kept", marker, 2)
    try:
        report = run(lifecycle.up_async(load(path)))
        assert report.members["w"] == ["n1", "n2"]
        keepers.append(Keeper("--interval", "1"))
        lab.kill("n2")
        assert wait_for(lambda: active("kept") == ["n1", "n3"] and running_on("kept", "n3"), 60)
        assert members("kept")["n2"][0] == "replaced" and members("kept")["n3"][1] == 1
        assert [(e.node, e.detail) for e in app_events("member_replaced")] == [
            ("n3", "kept: w: n3 replaces n2")
        ]
        assert processes(nodes[0], marker) == 2  # n1 and n3: n2 died with its node
    finally:
        for k in keepers:
            print(k.stop())  # the keeper's lines, shown when the test fails
        lab.revive("n2")
        clear_failed()
        down("kept")


def test_a_fatal_program_is_restarted_after_its_cool_down(
    nodes: list[Node], tmp_path: Path, keepers: list[Keeper]
) -> None:
    marker = f"sleep 82{os.getpid() % 100:02d}"
    path = spec_file(
        tmp_path,
        f"""\
        app: phoenix
        components:
          w:
            select: "n5"
            processes:
              - {{name: svc, service: "[ -f broken ] && exit 3; exec {marker}"}}
        """,
    )
    node = nodes[4]
    try:
        run(lifecycle.up_async(load(path)))
        keepers.append(Keeper("--interval", "0.5", "--cooldown", "5"))
        remote(node, f"touch .shoal/apps/phoenix/broken; pkill -f '^{marker}$'")

        def state() -> str:
            s = run(lifecycle.status_async("phoenix"))
            return str(s.nodes[0].programs[0]["state"]) if s.nodes[0].programs else ""

        assert wait_for(lambda: state() == "FATAL", 30)
        fatal_at = time.time()
        remote(node, "rm .shoal/apps/phoenix/broken")
        assert wait_for(lambda: state() == "RUNNING", 30)
        restarted = app_events("program_restarted")
        assert [(e.node, e.program) for e in restarted] == [("n5", "phoenix.w.svc")]
        assert restarted[0].time - fatal_at >= 3.0  # not before the cool-down (5 s)
        assert processes(node, marker) == 1
    finally:
        for k in keepers:
            print(k.stop())  # the keeper's lines, shown when the test fails
        down("phoenix")


def test_count_lowered_or_select_narrowed_stops_the_dropped_members(
    nodes: list[Node], tmp_path: Path, keepers: list[Keeper]
) -> None:
    marker = f"sleep 83{os.getpid() % 100:02d}"
    try:
        run(lifecycle.up_async(load(marker_spec(tmp_path, "shrink", marker, 4))))
        assert processes(nodes[0], marker) == 4
        pids = remote(nodes[0], f"pgrep -f '^{marker}$'").strip()
        report = run(lifecycle.up_async(load(marker_spec(tmp_path, "shrink", marker, 2))))
        assert sorted(report.stopped) == [("w", "n3", 2), ("w", "n4", 3)]
        assert processes(nodes[0], marker) == 2
        left = remote(nodes[0], f"pgrep -f '^{marker}$'").split()
        assert set(left) < set(pids.split())  # the kept ones not restarted
        assert members("shrink")["n3"] == ("stopped", 2)
        # the keeper: a member leaves the selection (its attribute changed)
        set_attrs({"n1": {"tier": "gold"}, "n2": {"tier": "gold"}})
        gold = marker_spec(tmp_path, "shrink", marker, "all", select="[tier=gold]")
        assert run(lifecycle.up_async(load(gold))).stopped == []
        assert active("shrink") == ["n1", "n2"]
        keepers.append(Keeper("--interval", "1"))
        set_attrs({"n1": {"tier": "gold"}, "n2": {"tier": "lead"}})
        assert wait_for(lambda: app_events("member_stopped"), 30)
        assert [e.node for e in app_events("member_stopped")] == ["n2"]
        assert processes(nodes[0], marker) == 1
        assert active("shrink") == ["n1"] and members("shrink")["n2"][0] == "stopped"
        assert running_on("shrink", "n1")
    finally:
        for k in keepers:
            print(k.stop())  # the keeper's lines, shown when the test fails
        set_attrs({"n1": {}, "n2": {}})
        down("shrink")
    assert processes(nodes[0], marker) == 0


def test_keeper_killed_mid_replacement_finishes_it_when_started_again(
    lab: Any, nodes: list[Node], tmp_path: Path, keepers: list[Keeper]
) -> None:
    marker = f"sleep 84{os.getpid() % 100:02d}"
    path = marker_spec(tmp_path, "resumed", marker, 2, select="n[5-8]")
    try:
        run(lifecycle.up_async(load(path)))
        dying = Keeper("--interval", "1", "--die-at", "replacement recorded")
        keepers.append(dying)
        lab.kill("n6")
        assert dying.proc.wait(60) == -signal.SIGKILL
        assert "dying at replacement recorded" in dying.stop()
        assert members("resumed")["n6"][0] == "replaced" and active("resumed") == ["n5", "n7"]
        assert processes(nodes[0], marker) == 1  # n5: n7 recorded, not yet acted on
        keepers.append(Keeper("--interval", "1"))
        assert wait_for(lambda: running_on("resumed", "n7"), 60)
        assert active("resumed") == ["n5", "n7"]
        assert processes(nodes[0], marker) == 2  # n5 and n7, no second replacement
        assert members("resumed")["n7"] == ("active", 1) and "n8" not in members("resumed")
    finally:
        for k in keepers:
            print(k.stop())  # the keeper's lines, shown when the test fails
        lab.revive("n6")
        clear_failed()
        down("resumed")


def test_prefer_takes_the_best_n_and_replaces_from_the_best_spare(
    nodes: list[Node], tmp_path: Path
) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: picky
        components:
          w:
            select: "n[1-6]"
            count: 2
            prefer: [{highest: score}, {lowest: rtt_ms}]
            processes:
              - {name: hi, run: "echo ${node} slot ${index}"}
        """,
    )
    try:
        set_attrs({"n2": {"score": 5}, "n4": {"score": 9}, "n5": {"score": 7}, "n6": {"score": 1}})
        report = run(lifecycle.up_async(load(path)))
        assert report.members["w"] == ["n4", "n5"]
    finally:
        set_attrs({n: {} for n in ("n2", "n4", "n5", "n6")})
        down("picky")


def test_through_shoal_serve_up_status_heal_and_down(
    lab: Any, nodes: list[Node], tmp_path: Path
) -> None:
    from shoal.client import ServiceClient

    marker = f"sleep 85{os.getpid() % 100:02d}"
    path = marker_spec(tmp_path, "served", marker, 2, select="n[1-4]")
    cmd = [sys.executable, "-m", "shoal.cli.main", "serve"]
    service = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = wait_for(ServiceClient.locate, 30)
        assert client is not None, "the service did not start"
        body = {"spec": str(path), "select": {"w": "n[2-4]"}, "stream": True}
        lines = list(client.stream("POST", "/api/v1/apps", body=body))
        assert "report" in lines[-1], lines
        assert lines[-1]["report"]["members"] == {"w": ["n2", "n3"]}
        status = client.request("GET", "/api/v1/apps/served")
        assert status["healthy"] and [n["node"] for n in status["nodes"]] == ["n2", "n3"]
        assert [a["app"] for a in client.request("GET", "/api/v1/apps")] == ["served"]
        lab.kill("n3")
        began = time.monotonic()
        assert wait_for(lambda: active("served") == ["n2", "n4"], 60)
        print(f"replacement recorded {time.monotonic() - began:.1f} s after the kill")
        assert wait_for(lambda: running_on("served", "n4"), 60)
        kinds = [e["kind"] for e in client.events(topic="app")]
        assert "member_replaced" in kinds
        assert client.request("POST", "/api/v1/apps/served/down")["nodes"]
    finally:
        lab.revive("n3")
        clear_failed()
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(10)
        assert service.stdout is not None
        print(service.stdout.read())
        down("served")
    assert processes(nodes[0], marker) == 0
