"""``shoal rollout`` on a lab of real nodes (issue 15 item 1's required tests).

Each test rolls a tiny service (a shell script that records which version it
runs, then sleeps) out of its own directory; the programs and agents are
stopped at the end of the module and every node a test kills is revived.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.content.push import PushOptions, push_async
from shoal.content.rollout import RolloutPlan, resume_async, rollout_async
from shoal.content.rolloutstate import RolloutStore
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab

RUN = """#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd -P)"
if [ -e "$HOME/{name}.bad" ] && [ "$(cat "$here/VERSION")" = v2 ]; then exit 3; fi
cat "$here/VERSION" > "$HOME/{name}.running"
exec sleep 3600
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    for node in nodes:
        lab.revive(node.name)
    run(agents.stop_async(nodes, agents.AgentOptions()))


def tree(root: Path, name: str, version: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "VERSION").write_text(version + "\n")
    (root / "run.sh").write_text(RUN.format(name=name))
    (root / "run.sh").chmod(0o755)
    return root


def service(nodes: list[Node], tmp: Path, name: str) -> str:
    """v1 pushed to ``~/NAME`` and program NAME running it on every node."""
    v1 = tree(tmp / "v1", name, "v1")
    pushed = run(push_async(nodes, v1, name, PushOptions(durable=False)))
    assert pushed.ok, [(n.node, n.reason) for n in pushed.failed]
    spec = agents.proc_spec(name, ["/bin/sh", "-c", f'exec "$HOME/{name}/run.sh"'])
    started = run(agents.proc_start_async(nodes, spec))
    assert started.ok, [(r.node, r.reason) for r in started.failed]
    for node in nodes:
        wait_running(node, name, "v1")
    return name


def wait_running(node: Node, name: str, version: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if remote(node, f"cat {name}.running 2>/dev/null", check=False).strip() == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"{node.name}: {name} does not run {version}")


def programs(nodes: list[Node], name: str) -> dict[str, dict[str, Any]]:
    status = run(agents.call_async(nodes, "proc.status", {"name": name}))
    assert status.ok, [(r.node, r.reason) for r in status.failed]
    return {r.node: r.value[0] for r in status}


def test_gate_failing_at_stage_2_rolls_back_stages_1_and_2_and_never_touches_3(
    fleet: list[Node], tmp_path: Path
) -> None:
    name = service(fleet, tmp_path, unique_lab_name("ro"))
    before = programs(fleet, name)
    remote(fleet[2], f"touch {name}.bad")  # v2 cannot start on a stage-2 node
    plan = RolloutPlan(stages=["25%", "50%", "100%"], min_healthy_time=0.5, stage_deadline=30)
    events: list[str] = []
    result = run(
        rollout_async(
            fleet,
            str(tree(tmp_path / "v2", name, "v2")),
            name,
            [name],
            plan,
            on_event=lambda k, n, m: events.append(f"{k} {n} {m}"),
        )
    )
    assert result.state == "rolled_back", result
    assert fleet[2].name in result.failed and "gate" in result.failed[fleet[2].name]
    assert fleet[2].name in result.reason and name in result.reason
    stage1, stage2, stage3 = fleet[:2], fleet[2:4], fleet[4:]
    after = programs(fleet, name)
    for node in stage1 + stage2:
        wait_running(node, name, "v1")
        assert after[node.name]["state"] == "RUNNING"
    for node in stage1:  # they ran v2 and were switched back and restarted
        assert result.steps[node.name] == "rolled_back"
        assert after[node.name]["pid"] != before[node.name]["pid"]
    for node in stage3:  # never touched: same process, still v1, step pending
        assert result.steps[node.name] == "pending"
        assert after[node.name]["pid"] == before[node.name]["pid"]
        assert remote(node, f"cat {name}/VERSION").strip() == "v1"
    assert any("rolling_back" in e for e in events)
    remote(fleet[2], f"rm -f {name}.bad")


def test_controller_killed_mid_stage_resume_completes_and_no_node_is_left_stopped(
    fleet: list[Node], tmp_path: Path
) -> None:
    name = service(fleet, tmp_path, unique_lab_name("ro"))
    v2 = tree(tmp_path / "v2", name, "v2")
    cli = [str(Path(sys.executable).parent / "shoal")]
    proc = subprocess.Popen(
        [
            *cli,
            "rollout",
            "start",
            str(v2),
            name,
            "--programs",
            name,
            "--stages",
            "50%,100%",
            "--min-healthy-time",
            "1.5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    killed_in = ""
    try:
        deadline = time.monotonic() + 120
        with State() as st:
            store = RolloutStore(st)
            while time.monotonic() < deadline and proc.poll() is None:
                rid = store.latest(target=name)
                if rid is not None:
                    steps = {s.step for s in store.get(rid).nodes.values()}
                    mid = steps & {"stopping", "switching", "starting", "gating"}
                    if mid and "healthy" in steps:  # mid-stage, one node already through
                        proc.send_signal(signal.SIGKILL)
                        killed_in = ",".join(sorted(mid))
                        break
                time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_in, f"not caught mid-stage: {proc.stderr.read() if proc.stderr else ''}"
    with State() as st:
        rid = RolloutStore(st).latest(target=name)
        assert rid is not None
        assert RolloutStore(st).get(rid).state == "running"
    result = run(resume_async(rid, fleet))
    assert result.state == "done", result
    assert set(result.steps.values()) == {"healthy"}
    status = programs(fleet, name)
    for node in fleet:
        assert status[node.name]["state"] == "RUNNING", (node.name, status[node.name])
        wait_running(node, name, "v2")


def test_node_dying_mid_rollout_counts_against_the_budget_and_the_rest_proceed(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    name = service(fleet, tmp_path, unique_lab_name("ro"))
    victim = fleet[-1]
    plan = RolloutPlan(
        stages=["50%", "100%"], failure_budget=1, min_healthy_time=0.3, max_unavailable="2"
    )

    def on_event(kind: str, node: str | None, message: str) -> None:
        if kind == "rollout.stage_passed" and message.startswith("stage 1 "):
            lab.kill(victim.name)  # a stage-2 node dies after the content reached it

    try:
        result = run(
            rollout_async(
                fleet,
                str(tree(tmp_path / "v2", name, "v2")),
                name,
                [name],
                plan,
                agents.AgentOptions(connect_timeout=3, retries=0),
                on_event=on_event,
            )
        )
    finally:
        lab.revive(victim.name)
    assert result.state == "done", result
    assert set(result.failed) == {victim.name}
    for node in fleet[:-1]:
        assert result.steps[node.name] == "healthy"
        wait_running(node, name, "v2")
