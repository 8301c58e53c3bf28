"""A node's output reaches the operator's terminal escaped, a pipe byte for byte (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from shoal.testing.ptyrun import on_terminal

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
# OSC 52 (write the clipboard) and a cursor-up, on stdout and on stderr
HOSTILE = r"printf 'a\033]52;c;aGk=\007b\n'; printf 'c\033[1Ad\n' >&2"


def _on_terminal(*argv: str) -> bytes:
    return on_terminal([*SHOAL, *argv], timeout=60)[1]


@pytest.mark.parametrize("mode", [[], ["--stream"]])
def test_run_output_is_shown_escaped_on_a_terminal(lab: Any, mode: list[str]) -> None:
    out = _on_terminal("run", "-s", "@lab", "--no-progress", *mode, HOSTILE)
    assert b"\x1b" not in out, out
    assert b"a\\x1b]52;c;aGk=\\x07b" in out and b"c\\x1b[1Ad" in out, out


def test_run_output_to_a_pipe_is_unchanged(lab: Any) -> None:
    p = subprocess.run([*SHOAL, "run", "-s", "@lab", HOSTILE], capture_output=True, timeout=60)
    assert b"a\x1b]52;c;aGk=\x07b" in p.stdout and b"c\x1b[1Ad" in p.stdout, p.stdout
