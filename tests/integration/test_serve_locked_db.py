"""A state database locked by another process does not freeze ``shoal serve``.

Another process holds ``BEGIN EXCLUSIVE`` for 8 s while the service watches lab
nodes: heartbeats keep flowing (no live node suspect or down), ``/status``
answers within a short client timeout all along, a node cut meanwhile is still
detected, and the events of that time are stored, in order, once the lock goes.
The service is a subprocess over its own state directory and is always stopped.
"""

from __future__ import annotations

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
from shoal.testing.serveproc import serving

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))
HOLD = (
    "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(float(sys.argv[2])); "
    "c.execute('COMMIT')"
)


@pytest.fixture
def service(lab: Any, tmp_path: Path) -> Iterator[tuple[ServiceClient, Path, list[str]]]:
    home = tmp_path / "svc"
    home.mkdir(mode=0o700)
    names = [n.name for n in lab.nodes()[:3]]
    with State(home / "state.db") as st:
        import_nodes([n for n in lab.nodes() if n.name in names], state=st)
    with serving(home, "--busy-timeout", "5"):
        client = ServiceClient.locate(home, timeout=2)
        assert client is not None
        yield client, home, names


def _links_up(client: ServiceClient, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while client.status()["nodes"].get("links", {}).get("up") != count:
        assert time.monotonic() < deadline, client.status()["nodes"]
        time.sleep(0.2)


def test_a_locked_database_delays_writes_not_heartbeats(lab: Any, service: Any) -> None:
    client, home, names = service
    _links_up(client, len(names))
    time.sleep(12)  # past the first live-facts flush: a steady state
    before = client.status()["events"]["last"]
    victim, live = names[0], names[1:]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home / "state.db"), "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lab.cut(victim)
        try:
            answered = 0
            while holder.poll() is None:  # ~8 s: every answer within the 2 s client timeout
                st = client.status()
                assert st["events"]["last"] == before  # nothing could be stored yet
                answered += 1
                time.sleep(0.25)
            assert answered >= 10
        finally:
            lab.heal(victim)
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    deadline = time.monotonic() + 15
    while True:
        events = client.events(after=before)
        kinds = [(e["kind"], e["node"]) for e in events]
        if ("node_down", victim) in kinds:
            break
        assert time.monotonic() < deadline, kinds
        time.sleep(0.2)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert kinds.index(("node_suspect", victim)) < kinds.index(("node_down", victim))
    for name in live:  # their heartbeats flowed through the lock
        assert ("node_suspect", name) not in kinds and ("node_down", name) not in kinds
    down = next(e for e in events if e["kind"] == "node_down")
    assert down["stored"] - down["time"] > 1  # decided during the lock, stored after it
    failed = [f["name"] for f in client.failed()]
    assert victim in failed and not set(live) & set(failed)  # written through the writer too
