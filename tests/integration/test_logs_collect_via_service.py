"""``shoal logs collect`` through ``shoal serve``: its held connections, the same store.

With a service running for the state directory, ``logs collect`` is answered
by it (a node it knows is down fails at once with the detector's reason, where
direct SSH waits for its connect to time out); ``--no-service`` goes direct.
Both print the same table and summary, exit with the same status and fill the
same central store, each line once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.client import ServiceClient
from shoal.lab import Lab
from shoal.ops import logcollect
from shoal.state import State
from shoal.testing.serveproc import serving

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))
DEAD = "n3"
WRITE = 'for i in $(seq 200); do echo "line seq=$(printf %08d $i)"; done; exec sleep 600'
SEQ = re.compile(rb"seq=(\d{8})")


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHOAL, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def rows(out: str) -> list[str]:
    """The table's NODE column."""
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def test_logs_collect_goes_through_the_service_when_one_runs(lab: Lab) -> None:
    app = f"lv{os.getpid()}"
    name = f"{app}.w"
    installed = shoal("--no-service", "agent", "install", "-s", "n[1-2]")
    assert installed.returncode == 0, installed.stderr
    started = shoal("--no-service", "proc", "start", "-s", "n[1-2]", name, "--", "sh", "-c", WRITE)
    assert started.returncode == 0, started.stderr
    lab.kill(DEAD)
    try:
        with serving(stop_timeout=30) as proc:
            client = ServiceClient.locate()
            assert client is not None
            deadline = time.monotonic() + 120  # a loaded machine attaches slowly
            while True:
                links = {n["name"]: n["link"] for n in client.request("GET", "/api/v1/nodes")}
                if links.get(DEAD) == "down" and links.get("n1") == links.get("n2") == "up":
                    break
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, links
                time.sleep(0.1)
            argv = ("logs", "collect", "-s", "n[1-3]", "--app", app, "--connect-timeout", "2")
            warm = shoal(*argv)
            cold = shoal("--no-service", *argv)
        assert warm.returncode == cold.returncode != 0, (warm.stderr, cold.stderr)
        assert rows(warm.stdout) == rows(cold.stdout) == ["n1", "n2"]
        assert warm.stdout.split("\n")[0].split() == cold.stdout.split("\n")[0].split()
        assert DEAD in warm.stderr and DEAD in cold.stderr
        assert "connect timed out" in cold.stderr  # direct SSH tried the dead node
        assert "connect timed out" not in warm.stderr  # the service knew it was down
        for out in (warm.stderr, cold.stderr):
            assert re.search(r"logs collect: 3 node\(s\), .* new.*; 1 node\(s\) failed", out), out
        with State() as state:  # the service's store is the CLI's: every line once
            for node in ("n1", "n2"):
                got = list(logcollect.lines(state, node, name))
                assert [int(m.group(1)) for x in got if (m := SEQ.search(x))] == list(range(1, 201))
    finally:
        lab.revive(DEAD)
        shoal("--no-service", "proc", "remove", "-s", "n[1-2]", name)
        shoal("--no-service", "agent", "stop", "-s", "n[1-2]")
