"""``shoal app up`` shows progress on long work (issue 19 item 7), on a terminal only.

``UpOptions.on_progress`` counts each long phase's nodes as they finish (agents
ensured, software pushed, install steps run, member blocks started); the CLI draws
it as one line redrawn with ``\\r`` on a terminal's stderr, blanked before the
report, and writes none of it to a pipe or with ``--no-progress``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shoal.testing.ptyrun import on_terminal

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def _env() -> dict[str, str]:
    """This process's environment (SHOAL_HOME set by the lab fixture), no service."""
    return {**os.environ, "SHOAL_NO_SERVICE": "1", "COLUMNS": "200"}


SPEC = """\
app: {name}
software:
  tool:
    source: tool
    install: ["test -f tool.txt"]
components:
  svc:
    select: "{nodes}"
    count: 3
    software: [tool]
    processes:
      - {{name: mark, run: "cat ${{sw.tool}}/tool.txt > ${{dir}}/marked"}}
      - {{name: server, service: "exec sleep 600", ready: "test -f ${{dir}}/marked"}}
"""


def _on_terminal(*argv: str) -> tuple[int, bytes]:
    """``argv``'s exit status and all it wrote, with stdout and stderr on a terminal."""
    return on_terminal([*SHOAL, *argv], env=_env(), timeout=240)


def _shoal(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOAL, *argv], capture_output=True, text=True, env=_env(), timeout=240)


def test_app_up_draws_each_phase_on_a_terminal_only(lab: Any, tmp_path: Path) -> None:
    name = f"prog{os.getpid()}"
    nodes = ",".join(n.name for n in lab.nodes()[5:8])
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "tool.txt").write_text("tool\n")
    spec = tmp_path / "app.yaml"
    spec.write_text(textwrap.dedent(SPEC.format(name=name, nodes=nodes)))
    try:
        code, out = _on_terminal("app", "up", "--detach", str(spec))
        assert code == 0, out
        for phase in (b"agents", b"software tool", b"install", b"start"):
            assert b"\r" + phase + b" [------------------------------] 0/3" in out, (phase, out)
            assert b"\r" + phase + b" [##############################] 3/3" in out, (phase, out)
        blank = out.rindex(b"\r" + b" " * len(b"start [") + b" " * 36)  # the line blanked
        assert out.index(b"app " + name.encode() + b": up in") > blank, out  # before the report
        piped = _shoal("app", "up", "--detach", str(spec))  # converges: every phase again
        assert piped.returncode == 0, piped.stdout + piped.stderr
        assert "\r" not in piped.stderr + piped.stdout and "[#" not in piped.stderr, piped
        code, quiet = _on_terminal("app", "up", "--detach", "--no-progress", str(spec))
        assert code == 0 and b"[#" not in quiet and b"\r" + b"agents" not in quiet, quiet
    finally:
        down = _shoal("app", "down", name)
        assert down.returncode == 0 or "no application" in down.stderr, down.stderr
