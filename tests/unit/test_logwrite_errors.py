"""A program's log on a full disk (the kernel's own ENOSPC, from /dev/full): output that
cannot be written is counted and reported, and where it was lost the log says so on a
line of its own, so a cut line is never joined to a later one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from shoal.agent.logship import LogShip
from shoal.agent.rotate import RotatingLog

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def test_lost_output_is_noted_on_its_own_line_once_writes_succeed(tmp_path: Path) -> None:
    seen: list[tuple[str, OSError | None]] = []
    path = tmp_path / "p.log"
    log = RotatingLog(path, max_bytes=1 << 20, on_error=lambda w, e: seen.append((w, e)))
    log.write(b"line 1\nline 2 is cut")
    kept = tmp_path / "kept"
    os.replace(path, kept)
    path.symlink_to("/dev/full")  # the disk is full: every write fails with ENOSPC
    log.close()
    log.write(b" here\n")
    log.write(b"line 3\n")
    assert log.dropped == 13
    assert seen[-1][0] == str(path) and seen[-1][1] is not None
    assert seen[-1][1].errno == errno.ENOSPC
    path.unlink()
    os.replace(kept, path)  # room again
    log.write(b"line 4\n")
    log.write(b"line 5\n")
    assert path.read_bytes() == (
        b"line 1\nline 2 is cut\n"
        b"[shoal agent: 13 bytes of output lost here: No space left on device]\n"
        b"line 4\nline 5\n"
    )
    assert seen[-1] == (str(path), None)
    assert log.dropped == 13
    log.close()


def test_a_loss_at_a_line_end_adds_no_empty_line_and_a_failed_note_counts_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.log"
    log = RotatingLog(path, max_bytes=1 << 20)
    log.write(b"line 1\n")
    os.replace(path, tmp_path / "kept")
    path.symlink_to("/dev/full")
    log.close()
    log.write(b"line 2\n")
    log.write(b"line 3\n")  # the note cannot be written either: this is lost too
    path.unlink()
    os.replace(tmp_path / "kept", path)
    log.write(b"line 4\n")
    assert path.read_bytes() == (
        b"line 1\n[shoal agent: 14 bytes of output lost here: No space left on device]\nline 4\n"
    )
    log.close()


def test_logs_list_says_which_log_cannot_be_written_until_it_can(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    log = RotatingLog(path, max_bytes=1 << 20)
    ship = LogShip(tmp_path, lambda stream: log if stream == "web" else None)
    log.write(b"line 1\n")
    assert "write_error" not in ship.listing()[0]
    os.replace(path, tmp_path / "kept")
    path.symlink_to("/dev/full")
    log.close()
    log.write(b"line 2\n")
    (entry,) = [e for e in ship.listing() if e["stream"] == "web"]
    assert (entry["write_error"], entry["lost"]) == ("No space left on device", 7)
    path.unlink()
    os.replace(tmp_path / "kept", path)
    log.write(b"line 3\n")
    assert log.failing is None
    assert "write_error" not in ship.listing()[0]
    log.close()
