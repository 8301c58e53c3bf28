"""Node-sent text reaches a terminal shown, never obeyed; pipes get it byte for byte.

The end-to-end cases run ``shoal`` under a pseudo-terminal (what an operator
has) and under a pipe, with state that holds text a hostile node could have
sent: a failure reason and an event message carrying OSC 52 (clipboard
write), a CSI cursor move and a bidi override.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.cli.terminal import escape_controls
from shoal.testing.ptyrun import on_terminal

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
HOSTILE = "evil\x1b]52;c;aGk=\x07\x1b[2A\u202etxt.exe\x9b\x7f end"
SHOWN = "evil\\x1b]52;c;aGk=\\x07\\x1b[2A\\u202etxt.exe\\x9b\\x7f end"


def test_escape_controls_keeps_text_newlines_tabs_and_utf8() -> None:
    assert escape_controls(HOSTILE) == SHOWN
    assert escape_controls("a\tb\nc é ✓ 名前\n") == "a\tb\nc é ✓ 名前\n"
    assert escape_controls("over\rwrite\x00\x08") == "over\\x0dwrite\\x00\\x08"


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    from shoal.agentlink import eventlog as events
    from shoal.nodes.health import mark_failed
    from shoal.state import State

    env = {**os.environ, "SHOAL_HOME": str(tmp_path)}
    subprocess.run([*SHOAL, "nodes", "add", "127.0.0.1:1", "--name", "n1"], env=env, check=True)
    with State(tmp_path / "state.db") as state:
        mark_failed({"n1": HOSTILE}, state=state)
        events.store(state, "n1", "a1", [{"seq": 1, "time": time.time(), "detail": HOSTILE}])
    return tmp_path


def shown(home: Path, *argv: str) -> bytes:
    """What ``shoal ARGV`` writes to a terminal (stdout and stderr share it)."""
    env = {**os.environ, "SHOAL_HOME": str(home)}
    env.pop("MQ_NODES", None)
    return on_terminal([*SHOAL, *argv], env=env, timeout=30)[1]


@pytest.mark.parametrize("argv", [("nodes", "failed"), ("events", "--no-pull")])
def test_terminal_sees_escapes_shown(home: Path, argv: tuple[str, ...]) -> None:
    out = shown(home, *argv)
    assert b"\x1b" not in out and "\u202e".encode() not in out, out
    assert SHOWN.encode() in out, out


def test_raw_option_and_pipes_pass_bytes_unchanged(home: Path) -> None:
    out = shown(home, "--raw", "nodes", "failed")
    assert HOSTILE.encode() in out
    env = {**os.environ, "SHOAL_HOME": str(home)}
    piped = subprocess.run([*SHOAL, "nodes", "failed"], env=env, capture_output=True, timeout=30)
    assert HOSTILE.encode() in piped.stdout
