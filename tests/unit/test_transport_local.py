"""Local transport, real processes: timeouts kill the group; background children do not hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shoal.fanout import FanoutOptions, RunOptions, copy, run
from shoal.nodes.model import Node
from shoal.transport.local import LocalTransport


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = f"sleep 7{os.getpid() % 1000}"
    t = LocalTransport(tmp_path)
    r = run(
        [Node("local")],
        f"sh -c '{marker}' & {marker}",
        RunOptions(timeout=0.5),
        transport=t,
    )
    assert r["local"].kind == "timeout"
    time.sleep(0.2)
    assert os.popen(f"pgrep -f '[{marker[0]}]{marker[1:]}'").read() == ""


def test_background_child_does_not_hold_the_result(tmp_path: Path) -> None:
    marker = f"sleep 8{os.getpid() % 1000}"
    t0 = time.monotonic()
    r = run(
        [Node("local")],
        f"{marker} & echo started",
        RunOptions(),
        transport=LocalTransport(tmp_path),
    )
    os.system(f"pkill -f '[{marker[0]}]{marker[1:]}'")
    assert r["local"].stdout == "started\n"
    assert time.monotonic() - t0 < 2


def test_local_copy_is_atomic_and_recursive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    root = tmp_path / "node"
    r = copy(
        [Node("local")],
        [str(src), "@:dst/"],
        FanoutOptions(),
        transport=LocalTransport(root),
    )
    assert r.ok, r["local"].reason
    assert (root / "dst" / "src" / "d" / "f").read_text() == "x"
