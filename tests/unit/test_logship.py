"""Rotation that keeps uncollected logs within a budget, and the agent's logs.* ops."""

from __future__ import annotations

import base64
import gzip
import hashlib
from pathlib import Path

import pytest

from shoal.agent.logship import LogShip
from shoal.agent.rotate import RotatingLog


def _fill(log: RotatingLog, lines: int, start: int = 0) -> None:
    for i in range(start, start + lines):
        log.write(f"line {i:05d}\n".encode())  # 11 bytes


def test_uncollected_rotated_files_are_kept_past_backups(tmp_path: Path) -> None:
    drops: list[tuple[str, int]] = []
    log = RotatingLog(
        tmp_path / "p.log",
        max_bytes=110,
        backups=1,
        budget=10_000,
        on_drop=lambda f, n: drops.append((f, n)),
    )
    _fill(log, 100)  # 1100 bytes: 9 rotations
    assert len(log.files()) == 10
    assert b"".join(p.read_bytes() for p in log.files()) == b"".join(
        f"line {i:05d}\n".encode() for i in range(100)
    )
    assert drops == []


def test_budget_drops_the_oldest_and_names_it(tmp_path: Path) -> None:
    drops: list[tuple[str, int]] = []
    log = RotatingLog(
        tmp_path / "p.log",
        max_bytes=110,
        backups=1,
        budget=440,
        on_drop=lambda f, n: drops.append((f, n)),
    )
    _fill(log, 100)
    assert log.disk_usage() <= 440
    assert drops and all(n == 110 for _, n in drops)
    assert sum(n for _, n in drops) + log.disk_usage() == 1100


def test_collected_files_go_past_backups_uncollected_stay(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "p.log", max_bytes=110, backups=1, budget=10_000)
    _fill(log, 30)  # current + .1 + .2 (full)
    oldest = log.files()[0]
    log.mark_collected(oldest.stat().st_ino)
    _fill(log, 10, 30)  # one more rotation: the collected oldest is past backups=1
    names = [p.name for p in log.files()]
    assert len(names) == 3  # .1 .2 (uncollected, kept) + current; the collected one went
    assert b"line 00000" not in b"".join(p.read_bytes() for p in log.files())


def _read_all(ship: LogShip, entry: dict) -> bytes:
    out = b""
    while True:
        page = ship.read(
            {"file": entry["file"], "ino": entry["ino"], "offset": len(out), "max": 50}
        )
        raw = gzip.decompress(base64.b64decode(page["data"]))
        assert hashlib.sha256(raw).hexdigest() == page["sha256"] and len(raw) == page["length"]
        if not raw:
            return out
        out += raw


def test_logship_reads_by_inode_across_a_rename_and_acks_only_exact(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = RotatingLog(logs / "web.log", max_bytes=110, backups=5, budget=10_000)
    ship = LogShip(logs, lambda name: log if name == "web" else None)
    _fill(log, 15)
    log.write(b"partial")
    files = ship.listing()
    assert [f["file"] for f in files] == ["web.log.1", "web.log"]
    rotated, current = files
    assert rotated["rotated"] and not current["rotated"]
    assert _read_all(ship, current) == b"".join(f"line {i:05d}\n".encode() for i in range(10, 15))
    log.write(b"\n")
    _fill(log, 10, 15)  # web.log.1 is now web.log.2: found by its inode
    assert _read_all(ship, rotated) == (logs / "web.log.2").read_bytes()
    data = (logs / "web.log.2").read_bytes()
    good = {"file": "web.log.1", "ino": rotated["ino"], "size": len(data)}
    with pytest.raises(ValueError, match="differ"):
        ship.ack({**good, "sha256": hashlib.sha256(data[:-1]).hexdigest(), "free": True})
    assert (logs / "web.log.2").exists()
    with pytest.raises(ValueError, match="still written"):
        ino = (logs / "web.log").stat().st_ino
        ship.ack({"file": "web.log", "ino": ino, "size": 0, "sha256": "", "free": True})
    assert ship.ack({**good, "sha256": hashlib.sha256(data).hexdigest(), "free": True})["freed"]
    assert not (logs / "web.log.2").exists()
    with pytest.raises(KeyError, match="gone"):
        ship.read({"file": "web.log.2", "ino": rotated["ino"], "offset": 0})


def test_logship_head_tells_a_reused_inode_apart(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"first file\n")
    ship = LogShip(logs, lambda name: None)
    entry = ship.listing()[0]
    head = [5, hashlib.sha256(b"first").hexdigest()]
    args = {"file": "a.log", "ino": entry["ino"], "offset": 0, "head": head}
    assert "mismatch" not in ship.read(args)
    (logs / "a.log").write_bytes(b"other file\n")  # same inode, other bytes
    assert ship.read(args)["mismatch"]


def test_the_file_being_written_is_never_taken_for_collected(tmp_path: Path) -> None:
    """A freed file's inode can come back as the new log: it must not count as collected."""
    log = RotatingLog(tmp_path / "p.log", max_bytes=110, backups=0, budget=10_000)
    log.write(b"a\n")
    ino = log.path.stat().st_ino
    log.mark_collected(ino)  # what an earlier file with this inode was
    log.close()
    log.write(b"b\n")  # the log (re)opened: this inode is the one written now
    assert ino not in log.collected
