"""What an interrupted or piped ``shoal run`` leaves behind on the nodes (issue 11).

Each test starts the real CLI against the lab, interrupts it (SIGINT as Ctrl-C
sends, SIGTERM, or a reader that stops after one line), then asks the nodes
through a fresh run whether the command is still there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from shoal.fanout import RunOptions, run

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def _marker() -> str:
    return f"sleep {12000 + os.getpid() % 1000}"


def _running(nodes: list[Any], marker: str) -> set[str]:
    """Pids of the processes whose whole command line is ``marker``.

    The lab's nodes share the host's process table (network and mount
    namespaces only), so one node sees every node's processes; matching the
    whole command line leaves out this controller's own ``shoal run`` process.
    """
    r = run(nodes[:1], f"pgrep -x -f '{marker}' || true", RunOptions())
    assert r.ok, [x.reason for x in r.failed]
    return set(r[nodes[0].name].stdout.split())


def _wait_until_running(nodes: list[Any], marker: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_running(nodes, marker)) == len(nodes):
            return
        time.sleep(0.3)
    raise AssertionError(f"the command never ran on every node (exit {proc.poll()})")


def _cleanup(nodes: list[Any], marker: str) -> None:
    run(nodes[:1], f"pkill -x -f '{marker}' || true", RunOptions())


def _failed_set() -> str:
    p = subprocess.run([*SHOAL, "select", "failed"], capture_output=True, text=True, timeout=30)
    return p.stdout


@pytest.mark.parametrize(
    ("sig", "code", "extra"),
    [
        (signal.SIGINT, 130, []),
        (signal.SIGTERM, 143, []),
        (signal.SIGINT, 130, ["--workers", "2"]),
        (signal.SIGTERM, 143, ["--workers", "2"]),
    ],
)
def test_signal_ends_the_remote_commands(lab: Any, sig: int, code: int, extra: list[str]) -> None:
    nodes = lab.nodes()
    marker = _marker()
    proc = subprocess.Popen(
        [*SHOAL, "run", "-s", "@lab", *extra, marker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_running(nodes, marker, proc)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        left = _running(nodes, marker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _cleanup(nodes, marker)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert not left, left
    assert took < 10, took


def test_reader_that_stops_after_one_line_stops_the_run_and_blames_no_node(lab: Any) -> None:
    nodes = lab.nodes()
    marker = _marker()
    before = _failed_set()
    proc = subprocess.Popen(
        [
            *SHOAL,
            "run",
            "-s",
            "@lab",
            "--stream",
            f"echo start; while :; do {marker}; echo tick; done",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        _wait_until_running(nodes, marker, proc)
        proc.stdout.close()  # `| head -1` has what it wanted and exits
        # end one sleep per node: the "tick" each node then sends finds the pipe closed
        run(nodes[:1], f"pkill -x -f '{marker}' || true", RunOptions())
        err = proc.stderr.read() if proc.stderr else b""
        proc.wait(timeout=30)
        left = _running(nodes, marker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _cleanup(nodes, marker)
    assert first.endswith(b": start\n"), first
    assert proc.returncode == 141, err
    assert b"Traceback" not in err, err
    assert _failed_set() == before  # no node marked unreachable for our closed pipe
    assert not left, left
