"""Applications on a real lab (issue 7's required tests).

Every application a test brings up is taken down in ``finally`` (which also
checks that nothing of it is left on the nodes); nodes a test kills are
revived and leave the failed set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink.fleet import AgentOptions
from shoal.app import lifecycle, store
from shoal.app.appspec import load
from shoal.app.runtime import UpOptions
from shoal.errors import AcquireError, AppAborted
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote as _remote

pytestmark = pytest.mark.lab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def remote(node: Node, command: str) -> str:
    return _remote(node, command, check=False)


def leftovers(nodes: list[Node], app: str) -> dict[str, str]:
    """What of ``app`` is left on each node (files, step records, processes)."""
    out = {}
    for node in nodes:
        text = remote(
            node,
            f"ls -d .shoal/apps/{app} .shoal/logs/{app}.* .shoal/logs/steps/{app}.* 2>/dev/null;"
            f' grep -o \'"{app}\\.[^"]*"\' .shoal/steps.json .shoal/programs.json 2>/dev/null;'
            " true",
        ).strip()
        if text:
            out[node.name] = text
    return out


@pytest.fixture()
def nodes(lab: Any) -> Iterator[list[Node]]:
    clear_failed()
    yield lab.nodes()
    for node in lab.nodes():
        lab.revive(node.name)
    clear_failed()


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def down_clean(name: str, nodes: list[Node]) -> None:
    with State() as st:
        if store.get_app(st, name) is None:
            return
    report = run(lifecycle.down_async(name))
    assert all(v == "cleaned" for v in report.nodes.values()), report.nodes
    assert leftovers(nodes, name) == {}


def test_bytetorrent_end_to_end_converges_and_down_leaves_nothing(nodes: list[Node]) -> None:
    spec = load(EXAMPLES / "bytetorrent" / "bytetorrent.yaml")
    try:
        report = run(lifecycle.up_async(spec, UpOptions()))
        assert report.failed == {}
        assert [len(report.members[c]) for c in ("sender", "receivers", "late-receivers")] == [
            1,
            4,
            2,
        ]
        assert report.barriers["join"] is not None
        logs = run(lifecycle.logs_async("bytetorrent", lines=50))
        receivers = report.members["receivers"] + report.members["late-receivers"]
        for name in receivers:
            assert "sha256 ok" in logs[name], logs[name]
        status = run(lifecycle.status_async("bytetorrent"))
        assert status.healthy and status.versions["bt"]
        pids = {(n.node, p["name"]): p["pid"] for n in status.nodes for p in n.programs}
        assert len(pids) == 7
        again = run(lifecycle.up_async(spec, UpOptions()))
        assert again.steps_run == 0 and again.replaced == []
        status = run(lifecycle.status_async("bytetorrent"))
        assert {(n.node, p["name"]): p["pid"] for n in status.nodes for p in n.programs} == pids
    finally:
        down_clean("bytetorrent", nodes)
    assert "bt.py" not in remote(nodes[0], "ps -eo args | grep '[b]t.py seed' || true")


def test_partial_barrier_releases_at_its_threshold(nodes: list[Node], tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: partial
        components:
          fast:
            select: "n[1-3]"
            count: 3
            processes:
              - {name: meet, barrier: go}
              - {name: passed, run: "python3 -c 'import time; print(time.time())'"}
          slow:
            select: "n[4-5]"
            count: 2
            processes:
              - {name: work, run: "sleep 4; python3 -c 'import time; print(time.time())'"}
              - {name: meet, barrier: go}
              - {name: passed, run: "python3 -c 'import time; print(time.time())'"}
        barriers:
          go: {threshold: 60%}
        """,
    )
    try:
        began = time.time()
        report = run(lifecycle.up_async(load(path)))
        released = report.barriers["go"]
        assert released is not None and released - began < 3.5  # 3 of 5 = 60%: no slow node
        logs = run(lifecycle.logs_async("partial", lines=5))

        def stamp(node: str, step: str) -> float:
            text = logs[node].split(f"partial.{step}.log <==\n", 1)[1]
            return float(text.split()[0])

        for n in ("n1", "n2", "n3"):
            assert stamp(n, "fast.passed") < stamp("n4", "slow.work")
        for n in ("n4", "n5"):  # late arrivals pass straight through
            assert stamp(n, "slow.passed") - stamp(n, "slow.work") < 1.0
    finally:
        down_clean("partial", nodes)


def test_killed_receiver_is_replaced_by_a_qualifying_spare(
    lab: Any, nodes: list[Node], tmp_path: Path
) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: keep
        components:
          recv:
            select: "n[5-8]"
            count: 2
            require: ["name != n7", "mem_available_mb >= 1"]
            on_failure: replace
            processes:
              - {name: hello, run: "echo ${node} is slot ${index}"}
              - {name: work, service: "exec sleep 600"}
        """,
    )
    try:
        report = run(lifecycle.up_async(load(path)))
        assert report.members["recv"] == ["n5", "n6"]
        lab.kill("n6")
        opts = UpOptions(agent=AgentOptions(connect_timeout=3))
        mon = run(lifecycle.monitor_async("keep", opts, rounds=1, interval=0.1))
        assert mon.converged == 1 and mon.last is not None
        assert mon.last.replaced == [("recv", "n6", "n8")]  # n7 fails a requirement
        status = run(lifecycle.status_async("keep"))
        active = {n.node: n for n in status.nodes if n.state == "active"}
        assert set(active) == {"n5", "n8"} and active["n8"].slot == 1
        assert [p["state"] for p in active["n8"].programs] == ["RUNNING"]
        assert status.healthy
        logs = run(lifecycle.logs_async("keep", node="n8"))
        assert "n8 is slot 1" in logs["n8"]
    finally:
        lab.revive("n6")
        clear_failed()
        down_clean("keep", nodes)


def test_unsatisfiable_requirements_are_refused_before_any_change(
    nodes: list[Node], tmp_path: Path
) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: greedy
        components:
          big:
            select: "@lab"
            count: 3
            require: ["mem_available_mb >= 100000000", "disk_free_gb >= 0"]
            processes:
              - {name: x, run: "touch greedy-was-here"}
        """,
    )
    with pytest.raises(AcquireError) as info:
        run(lifecycle.up_async(load(path)))
    text = str(info.value)
    assert "component big needs 3 node(s) but only 0 of 8" in text
    assert "8 fails mem_available_mb >= 100000000" in text
    with State() as st:
        assert store.get_app(st, "greedy") is None
    assert leftovers(nodes, "greedy") == {}
    assert remote(nodes[0], "ls -a . .shoal 2>/dev/null | grep -c greedy || true").strip() == "0"


def test_plush_xml_is_imported_and_run(nodes: list[Node]) -> None:
    try:
        report = run(lifecycle.up_async(load(EXAMPLES / "plush" / "simple.xml")))
        assert len(report.members["Cluster1"]) == 2
        assert report.barriers["phase1"] is not None
        logs = run(lifecycle.logs_async("simple"))
        for text in logs.values():
            assert "Hello World" in text and "after the barrier" in text
    finally:
        down_clean("simple", nodes)


def test_controller_killed_during_up_rerun_does_not_duplicate(
    nodes: list[Node], tmp_path: Path
) -> None:
    marker = f"sleep 77{os.getpid() % 100:02d}"
    path = spec_file(
        tmp_path,
        f"""\
        app: resume
        components:
          w:
            select: "n[1-4]"
            count: 4
            processes:
              - {{name: slow, run: "echo start >> runs; sleep 3; echo end >> runs"}}
              - {{name: svc, service: "exec {marker}"}}
        """,
    )
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "shoal.cli.main", "app", "up", str(path), "--detach"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # killed while the slow step runs on the nodes
            if remote(nodes[0], "cat .shoal/apps/resume/runs 2>/dev/null || true").strip():
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        report = run(lifecycle.up_async(load(path)))
        assert report.members["w"] == ["n1", "n2", "n3", "n4"]
        for node in nodes[:4]:
            runs = remote(node, "cat .shoal/apps/resume/runs").split()
            assert runs == ["start", "end"], (node.name, runs)
        count = remote(nodes[0], f"ps -eo args | grep -c '^{marker}$' || true").strip()
        assert count == "4"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        down_clean("resume", nodes)
    assert remote(nodes[0], f"ps -eo args | grep -c '^{marker}$' || true").strip() == "0"


def test_barrier_timeout_applies_the_late_nodes_policy(nodes: list[Node], tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: late
        components:
          w:
            select: "n[1-4]"
            count: 3
            on_failure: replace
            processes:
              - {name: work, run: "if [ ${node} = n2 ]; then sleep 60; fi"}
              - {name: meet, barrier: b}
              - {name: after, run: "echo passed"}
        barriers:
          b: {timeout: 2}
        """,
    )
    try:
        began = time.monotonic()
        report = run(lifecycle.up_async(load(path)))
        assert time.monotonic() - began < 30
        assert report.replaced == [("w", "n2", "n4")]
        assert sorted(report.members["w"]) == ["n1", "n3", "n4"]
        logs = run(lifecycle.logs_async("late"))
        assert all("passed" in logs[n] for n in ("n1", "n3", "n4"))
    finally:
        down_clean("late", nodes)


def test_node_lost_while_others_wait_at_a_barrier_is_replaced(
    lab: Any, nodes: list[Node], tmp_path: Path
) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: lost
        components:
          w:
            select: "n[1-4]"
            count: 3
            on_failure: replace
            processes:
              - {name: work, run: "if [ ${node} = n2 ]; then sleep 60; fi"}
              - {name: meet, barrier: b}
              - {name: after, run: "echo passed"}
        barriers:
          b: {}
        """,
    )
    killer = None
    try:
        import threading

        def kill_soon() -> None:
            time.sleep(2)
            lab.kill("n2")

        killer = threading.Thread(target=kill_soon)
        killer.start()
        began = time.monotonic()
        report = run(lifecycle.up_async(load(path)))
        assert time.monotonic() - began < 45  # SSH keepalive notices the loss in ~15 s
        assert report.replaced == [("w", "n2", "n4")]
        logs = run(lifecycle.logs_async("lost"))
        assert all("passed" in logs[n] for n in ("n1", "n3", "n4"))
    finally:
        if killer is not None:
            killer.join()
        lab.revive("n2")
        clear_failed()
        down_clean("lost", nodes)


def test_abort_policy_stops_the_application(nodes: list[Node], tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        """\
        app: fragile
        components:
          svc:
            select: "n[1-2]"
            count: 2
            processes:
              - {name: keep, service: "exec sleep 600"}
          critical:
            select: "n[3-4]"
            count: 1
            on_failure: abort
            processes:
              - {name: check, after: [svc.keep], run: "echo broken; exit 4"}
        """,
    )
    try:
        with pytest.raises(AppAborted, match=r"n3 \(critical\) failed: step critical.check"):
            run(lifecycle.up_async(load(path)))
        with State() as st:
            record = store.get_app(st, "fragile")
            assert record is not None and record.status == "aborted"
        status = run(lifecycle.status_async("fragile"))
        assert all(n.programs == [] for n in status.nodes)
    finally:
        down_clean("fragile", nodes)
