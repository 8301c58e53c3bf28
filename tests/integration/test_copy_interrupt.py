"""An interrupted ``shoal cp`` leaves no temporary file behind (issue 11 item 9).

Every copied file is written to a hidden ``.NAME.shoal-XXXX.tmp`` and renamed
over its name once complete. Ctrl-C (SIGINT), SIGTERM or a per-node timeout
cancels the copy mid-file; the temporary file must then be removed, on the
node for an upload and on the controller for a pull. The lab's links are
shaped to a few MB/s so the copy is surely in flight when the signal lands.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.fanout import FanoutOptions, RunOptions, copy, run
from shoal.lab import ShapeChange

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
SIZE_MB = 24
RATE_BPS = 40_000_000  # 5 MB/s per node: ~5 s for one file, so a signal lands mid-copy


def _sh(nodes: list[Any], command: str) -> dict[str, str]:
    r = run(nodes, command, RunOptions())
    assert r.ok, [x.reason for x in r.failed]
    return {n.name: r[n.name].stdout for n in nodes}


def _remote_tmps(nodes: list[Any], where: str) -> dict[str, str]:
    found = _sh(nodes, f"find {where} -name '*.shoal-*.tmp' 2>/dev/null || true")
    return {name: out for name, out in found.items() if out.strip()}


def _local_tmps(root: Path) -> list[Path]:
    return sorted(root.rglob("*.shoal-*.tmp")) if root.exists() else []


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} never happened (exit {proc.poll()})")


@pytest.fixture
def slow(lab: Any) -> Iterator[tuple[list[Any], str]]:
    """The lab's nodes with slow links and a scratch directory in each home."""
    nodes = lab.nodes()
    where = f"cpint-{secrets.token_hex(3)}"
    _sh(nodes, f"mkdir -p {where}")
    lab.shape("all", ShapeChange(rate_bps=RATE_BPS))
    try:
        yield nodes, where
    finally:
        lab.shape("all", ShapeChange(clear_rate=True))
        _sh(nodes, f"rm -rf {where}")


def _interrupt(proc: subprocess.Popen[Any], sig: int) -> tuple[str, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return err, time.monotonic() - t0


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("sig", "code", "extra"),
    [(signal.SIGINT, 130, []), (signal.SIGTERM, 143, []), (signal.SIGINT, 130, ["--workers", "2"])],
)
def test_an_interrupted_upload_leaves_no_temporary_file_on_any_node(
    slow: tuple[list[Any], str], tmp_path: Path, sig: int, code: int, extra: list[str]
) -> None:
    nodes, where = slow
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SIZE_MB << 20))
    proc = subprocess.Popen(
        [*SHOAL, "cp", "-s", "@lab", *extra, str(big), f"@:{where}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(
            "a temporary file on every node",
            lambda: len(_remote_tmps(nodes, where)) == len(nodes),
            proc,
        )
        err, took = _interrupt(proc, sig)
    finally:
        _stop(proc)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert took < 10, took
    assert _remote_tmps(nodes, where) == {}
    assert _sh(nodes, f"ls -A {where}") == {n.name: "" for n in nodes}  # no partial big.bin


def test_a_copy_that_times_out_leaves_no_temporary_file(
    slow: tuple[list[Any], str], tmp_path: Path
) -> None:
    nodes, where = slow
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SIZE_MB << 20))
    result = copy(nodes, [str(big), f"@:{where}/"], FanoutOptions(timeout=1))
    assert {r.kind for r in result} == {"timeout"}, [r.reason for r in result]
    assert _remote_tmps(nodes, where) == {}


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_pull_leaves_no_temporary_file_locally(
    slow: tuple[list[Any], str], tmp_path: Path, sig: int, code: int
) -> None:
    nodes, where = slow
    _sh(nodes, f"head -c {SIZE_MB}M /dev/urandom > {where}/big.bin")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*SHOAL, "cp", "-s", "@lab", f"@:{where}/big.bin", f"{out}/@/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait("a local temporary file per node", lambda: len(_local_tmps(out)) == len(nodes), proc)
        err, took = _interrupt(proc, sig)
    finally:
        _stop(proc)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert took < 10, took
    assert _local_tmps(out) == []
    assert not list(out.rglob("big.bin"))  # nothing partial under its final name


def test_a_symlink_is_renamed_over_what_is_there_and_never_over_a_directory(
    lab: Any, tmp_path: Path
) -> None:
    nodes = lab.nodes()[:2]
    where = f"cpint-{secrets.token_hex(3)}"
    src = tmp_path / "tree"
    src.mkdir()
    (src / "link").symlink_to("first")
    _sh(nodes, f"mkdir -p {where}")
    try:
        assert copy(nodes, [str(src), f"@:{where}/"], FanoutOptions()).ok
        (src / "link").unlink()
        (src / "link").symlink_to("second")
        assert copy(nodes, [str(src), f"@:{where}/"], FanoutOptions()).ok
        assert _sh(nodes, f"readlink {where}/tree/link") == {n.name: "second\n" for n in nodes}
        link = f"{where}/tree/link"
        _sh(nodes, f"rm {link} && mkdir {link} && echo keep > {link}/notes")
        result = copy(nodes, [str(src), f"@:{where}/"], FanoutOptions())
        for r in result:
            assert not r.ok, r
            assert r.reason.startswith(f"creating symlink {where}/tree/link failed"), r.reason
        assert _remote_tmps(nodes, where) == {}
        assert _sh(nodes, f"cat {where}/tree/link/notes") == {n.name: "keep\n" for n in nodes}
    finally:
        _sh(nodes, f"rm -rf {where}")
