"""``shoal events --follow`` and ``shoal sweep --every`` on lab nodes, until Ctrl-C.

Both are long-running loops of the library (:func:`shoal.agentlink.eventlog.follow`,
:func:`shoal.ops.sweep.sweep_every`) that the CLI only renders: these tests pin
what the operator sees — the lines, their order, the summary and the exit status
after an interrupt — over real SSH and real agents.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (\S+)  #(\d+)  (\S+)  (\S+)(  .*)?$")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def pair(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()[:2]
    assert run(agents.install_async(nodes, agents.AgentOptions())).ok
    yield nodes
    run(agents.call_async(nodes, "proc.remove", {"name": "followed"}, agents.AgentOptions()))
    run(agents.stop_async(nodes, agents.AgentOptions()))


class Reader:
    """Collects a child's stdout lines on a thread, so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.lines)):
                return True
            time.sleep(0.1)
        return False

    def join(self) -> list[str]:
        self._thread.join(10)
        return self.lines


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_events_follow_prints_new_events_as_they_arrive_and_exits_0_on_ctrl_c(
    pair: list[Node],
) -> None:
    names = ",".join(n.name for n in pair)
    proc = subprocess.Popen(
        [*SHOAL, "events", "-s", names, "-n", "3", "--follow", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = Reader(proc)
    try:
        time.sleep(2.0)  # the first pull and the latest 3 are printed by now
        before = len(reader.lines)
        assert before <= 3, reader.lines
        spec = agents.proc_spec("followed", ["sleep", "300"], restart="always")
        started = run(agents.call_async(pair, "proc.start", {"spec": spec}, agents.AgentOptions()))
        assert started.ok, [r.reason for r in started.failed]

        def both_started(lines: list[str]) -> bool:
            hits = [m for m in map(EVENT_LINE.match, lines[before:]) if m]
            return {m[1] for m in hits if m[3] == "started" and m[4] == "followed"} == {
                n.name for n in pair
            }

        assert reader.wait_for(both_started, 20), reader.lines
    finally:
        code, err = interrupt(proc)
    lines = reader.join()
    assert code == 0, err
    assert all(EVENT_LINE.match(line) for line in lines), lines
    fresh = [EVENT_LINE.match(line) for line in lines[before:]]
    seqs: dict[str, list[int]] = {}
    for m in fresh:
        assert m is not None
        seqs.setdefault(m[1], []).append(int(m[2]))
    # each event printed once, in the order the node numbered them
    assert all(s == sorted(set(s)) for s in seqs.values()), seqs
    assert "Traceback" not in err


def test_sweep_every_repeats_until_ctrl_c(pair: list[Node]) -> None:
    names = ",".join(n.name for n in pair)
    proc = subprocess.Popen(
        [*SHOAL, "sweep", "-s", names, "--every", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = Reader(proc)
    try:
        headed = reader.wait_for(
            lambda lines: sum(1 for line in lines if line.startswith("sweep at ")) >= 3, 30
        )
    finally:
        code, err = interrupt(proc)
    lines = reader.join()
    assert headed, lines
    assert code == 0, err
    blocks = [i for i, line in enumerate(lines) if line.startswith("sweep at ")]
    for i in blocks[:3]:
        assert re.fullmatch(r"sweep at \d\d:\d\d:\d\d:", lines[i]), lines[i]
        assert lines[i + 1].split() == ["NODE", "STATUS", "DETAIL"]
        rows = lines[i + 2 : i + 4]
        assert [r.split()[:2] for r in rows] == [[n.name, "ok"] for n in pair], rows
    stamps = [time.strptime(lines[i][9:17], "%H:%M:%S") for i in blocks[:3]]
    assert stamps == sorted(stamps)
    summaries = [line for line in err.splitlines() if line.startswith("sweep: ")]
    assert len(summaries) >= 3, err
    assert all(re.fullmatch(r"sweep: 2 node\(s\): 2 ok in \d+\.\d\ds", s) for s in summaries), (
        summaries
    )
    assert "Traceback" not in err
