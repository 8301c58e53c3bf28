"""The README's first command: ``shoal demo`` runs its whole tour and cleans up.

The demo is the embedded default a new user runs first; it touches every layer
(lab, run, cp, push, agent, app), so a break anywhere shows here. It runs in a
subprocess with a private ``SHOAL_HOME`` and must leave no lab behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import lab_skip_reason

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CHAPTERS = [
    "# A lab of 8 real SSH nodes on this machine",
    "# A node crashes (n3): the others answer, it is reported and joins 'failed'",
    "# Rerun exactly the failed nodes once they are back",
    "# A command that overruns its timeout is killed on the node, children included",
    "# Push a tree peer to peer: chunked, verified, switched in atomically",
    "# Kill the program on one node with SIGKILL; the agent restarts it within a second",
    "# An application (Plush's ByteTorrent)",
    "# The standing controller: shoal serve holds a connection to every node",
    "# A warm run (through shoal serve: no new SSH connection) beside a cold one",
    "# Cleaning up",
    "# Demo finished in",
]


def test_the_demo_runs_every_chapter_and_leaves_no_lab(tmp_path: Path) -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path / "home"
    env = {**os.environ, "SHOAL_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    positions = [out.find(chapter) for chapter in CHAPTERS]
    assert all(p >= 0 for p in positions), [
        c for c, p in zip(CHAPTERS, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions), "chapters out of order"
    assert "sha256 ok" in out  # ByteTorrent's receivers verified what they got
    assert re.search(r"the service journaled: \"kept: w: n\d+ replaces n\d+\"", out)
    assert re.search(r"warm: [0-9.]+s .*\n.*\n  cold: [0-9.]+s", out)
    labs = home / "labs"
    assert not labs.exists() or not any(labs.iterdir()), sorted(labs.iterdir())
