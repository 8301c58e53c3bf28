"""The ``shoal`` command's exit statuses on real nodes, one test per outcome.

The statuses are decided once in :mod:`shoal.cli.exitcodes`: 0 every node
succeeded, 1 a node's command failed there, 2 refused before touching a node,
3 some node unreachable or timed out (3 before 1), 130 interrupted; ``--json``
changes none of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import remote

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
FAST = ["--connect-timeout", "2"]


def shoal(*argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOAL, *argv], capture_output=True, text=True, timeout=timeout)


def _names(lab: Any, count: int) -> str:
    return ",".join(n.name for n in lab.nodes()[:count])


@pytest.fixture()
def cut_node(lab: Any) -> Iterator[str]:
    """The last node of the lab with its link down (healed after, its failure cleared)."""
    victim = lab.nodes()[-1].name
    lab.cut(victim)
    try:
        yield victim
    finally:
        lab.heal(victim)
        shoal("nodes", "clear-failed", "-s", victim)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_0_when_every_node_succeeded(lab: Any, json_flag: list[str]) -> None:
    p = shoal("run", "-s", "@lab", *json_flag, "true")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_1_when_a_command_failed_on_a_node(lab: Any, json_flag: list[str]) -> None:
    first = lab.nodes()[0].name
    p = shoal("run", "-s", "@lab", *json_flag, f'test "$SHOAL_NODE" != {first}')
    assert p.returncode == 1, p.stderr
    if json_flag:
        failed = [r for r in map(json.loads, p.stdout.splitlines()) if not r["ok"]]
        assert [(r["node"], r["status"]) for r in failed] == [(first, "failed")]


@pytest.mark.parametrize(
    "argv",
    [
        ("run", "-s", "@no-such-group", "true"),
        ("run", "-s", "@lab", "   "),
        ("run", "-s", "@lab", "--connect-timeout", "nan", "true"),
        ("agent", "status", "-s", "@lab", "--frobnicate"),
        ("versions", "-s", "@lab & [os=none]", "app"),
    ],
    ids=["unknown-group", "no-command", "bad-value", "bad-option", "empty-selection"],
)
def test_2_when_refused_before_touching_a_node(lab: Any, argv: tuple[str, ...]) -> None:
    p = shoal(*argv)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stdout == "" and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_3_when_a_node_is_unreachable_even_if_others_failed(
    lab: Any, cut_node: str, json_flag: list[str]
) -> None:
    p = shoal("run", "-s", "@lab", *FAST, "--retries", "0", *json_flag, "exit 1")
    assert p.returncode == 3, p.stderr  # 3 wins over 1: a 1 would mean every node answered
    if json_flag:
        statuses = {r["node"]: r["status"] for r in map(json.loads, p.stdout.splitlines())}
        assert statuses.pop(cut_node) == "unreachable"
        assert set(statuses.values()) == {"failed"}


def test_3_when_a_command_timed_out(lab: Any) -> None:
    p = shoal("run", "-s", _names(lab, 2), "-t", "1", "sleep 30")
    assert p.returncode == 3, p.stderr
    assert "timeout" in p.stderr


@pytest.mark.parametrize(
    "argv",
    [("agent", "status"), ("sweep",), ("versions", "app"), ("facts", "refresh")],
    ids=lambda a: a[0],
)
def test_3_for_agent_push_and_facts_commands_too(
    lab: Any, cut_node: str, argv: tuple[str, ...]
) -> None:
    p = shoal(*argv, "-s", "@lab", *FAST, timeout=120)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)


def test_130_when_interrupted(lab: Any) -> None:
    marker = f"sleep 4{os.getpid() % 1000:03d}"
    proc = subprocess.Popen(
        [*SHOAL, "run", "-s", _names(lab, 2), "--json", marker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30  # connected and running on both nodes
        look = f"pgrep -f '[{marker[0]}]{marker[1:]}' || true"
        while not all(remote(n, look).strip() for n in lab.nodes()[:2]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
