"""A reader that goes away (``shoal ... | head``): quiet exit 141, no traceback, state kept.

Each command runs in a subprocess whose stdout is a pipe with no reader left,
so its first write fails as it does under ``| head`` once head has exited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A state dir with nodes that cannot be reached (loopback port 1) and a few events."""
    from shoal.agentlink import eventlog as events
    from shoal.state import State

    env = {**os.environ, "SHOAL_HOME": str(tmp_path)}
    env.pop("MQ_NODES", None)
    for name in ("n1", "n2", "n3"):
        subprocess.run([*SHOAL, "nodes", "add", "127.0.0.1:1", "--name", name], env=env, check=True)
    os.environ["SHOAL_HOME"], old = str(tmp_path), os.environ.get("SHOAL_HOME")
    try:
        with State() as state:
            rows = [
                {"seq": i, "time": time.time(), "kind": "note", "detail": f"m{i}"} for i in range(5)
            ]
            for node in ("n1", "n2", "n3"):
                events.store(state, node, "a1", rows)
    finally:
        if old is None:
            os.environ.pop("SHOAL_HOME")
        else:
            os.environ["SHOAL_HOME"] = old
    return tmp_path


def run_into_closed_pipe(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes
    env = {**os.environ, "SHOAL_HOME": str(home)}
    env.pop("MQ_NODES", None)
    try:
        return subprocess.run(
            [*SHOAL, *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ("events", "--no-pull"),
        ("nodes", "list", "--json"),
        ("nodes", "list"),
        ("run", "--json", "--connect-timeout", "2", "--retries", "0", "true"),
        ("app", "schema"),
    ],
)
def test_closed_stdout_exits_quietly(home: Path, argv: tuple[str, ...]) -> None:
    p = run_into_closed_pipe(home, *argv)
    assert p.returncode == 141, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_state_committed_before_the_pipe_closed_is_kept(home: Path) -> None:
    p = run_into_closed_pipe(
        home, "run", "--json", "--connect-timeout", "2", "--retries", "0", "true"
    )
    assert p.returncode == 141, p.stderr
    env = {**os.environ, "SHOAL_HOME": str(home)}
    out = subprocess.run([*SHOAL, "select", "failed"], env=env, capture_output=True, text=True)
    assert "n[1-3]" in out.stdout, out.stdout  # the unreachable nodes were recorded
