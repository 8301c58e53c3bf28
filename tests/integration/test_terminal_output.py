"""A node's output reaches the operator's terminal escaped, a pipe byte for byte (issue 11)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
# OSC 52 (write the clipboard) and a cursor-up, on stdout and on stderr
HOSTILE = r"printf 'a\033]52;c;aGk=\007b\n'; printf 'c\033[1Ad\n' >&2"


def _on_terminal(*argv: str) -> bytes:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*SHOAL, *argv], stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    return out


@pytest.mark.parametrize("mode", [[], ["--stream"]])
def test_run_output_is_shown_escaped_on_a_terminal(lab: Any, mode: list[str]) -> None:
    out = _on_terminal("run", "-s", "@lab", "--no-progress", *mode, HOSTILE)
    assert b"\x1b" not in out, out
    assert b"a\\x1b]52;c;aGk=\\x07b" in out and b"c\\x1b[1Ad" in out, out


def test_run_output_to_a_pipe_is_unchanged(lab: Any) -> None:
    p = subprocess.run([*SHOAL, "run", "-s", "@lab", HOSTILE], capture_output=True, timeout=60)
    assert b"a\x1b]52;c;aGk=\x07b" in p.stdout and b"c\x1b[1Ad" in p.stdout, p.stdout
