"""The audit's dirty set: a re-scan lists again only the directories inotify says
changed, and never trusts what inotify cannot see (real inotify on a temp tree)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from shoal.agent import auditwatch, filehash
from shoal.agent.filehash import FileAudit

from .test_audit_cache import digests, new_audit, scan

pytestmark = pytest.mark.skipif(auditwatch.DirWatch.open() is None, reason="no inotify")


def make_tree(tmp_path: Path, dirs: int = 5, files: int = 4) -> Path:
    tree = tmp_path / "tree"
    for d in range(dirs):
        (tree / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (tree / f"d{d}" / f"f{d}{f}").write_bytes(os.urandom(64))
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    return tree


def settled(audit: FileAudit, tree: Path) -> dict:
    """Scan until every directory is reused (files hashed in the racy window are not)."""
    for _ in range(5):
        reply = scan(audit, tree)
        if reply["listed"] == 0:
            return reply
        time.sleep(filehash.RACY_NS / 1e9)
    raise AssertionError(f"directories listed again with nothing changed: {reply['listed']}")


def test_only_the_changed_directory_is_listed_again_and_the_change_is_seen(
    tmp_path: Path,
) -> None:
    tree = make_tree(tmp_path)
    audit = new_audit(tmp_path)
    first = scan(audit, tree)
    assert (first["listed"], first["reused"], first["hashed"]) == (6, 0, 20)
    settled(audit, tree)
    old = os.stat(tree / "d2" / "f21")
    (tree / "d2" / "f21").write_bytes(b"z" * 64)  # same size, mtime set back
    os.utime(tree / "d2" / "f21", ns=(old.st_atime_ns, old.st_mtime_ns))
    again = scan(audit, tree)
    assert (again["listed"], again["reused"], again["hashed"]) == (1, 5, 1)
    assert digests(again)["f21"] == hashlib.sha256(b"z" * 64).hexdigest()
    assert digests(again) == {**digests(first), "f21": digests(again)["f21"]}
    (tree / "d3" / "new").write_bytes(b"n")
    os.unlink(tree / "d4" / "f40")
    os.chmod(tree / "d1", 0o700)
    names = {Path(e["p"]).name: e for e in scan(audit, tree)["entries"]}
    assert "new" in names and "f40" not in names and names["d1"]["m"] == 0o700


def test_a_file_written_through_a_hard_link_elsewhere_is_seen(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, dirs=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(tree / "d0" / "f00", elsewhere / "f00")
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    audit = new_audit(tmp_path)
    scan(audit, tree)
    time.sleep(filehash.RACY_NS / 1e9)
    assert scan(audit, tree)["listed"] == 1  # the root and d1 reused, d0 never trusted
    with open(elsewhere / "f00", "r+b") as f:  # no event on the audited directory
        f.write(b"X")
    assert (
        digests(scan(audit, tree))["f00"]
        == hashlib.sha256((tree / "d0" / "f00").read_bytes()).hexdigest()
    )


def test_lost_events_mean_a_full_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    audit = new_audit(tmp_path)
    scan(audit, tree)
    settled(audit, tree)
    watch = audit._memos.dirwatch
    assert watch is not None
    monkeypatch.setattr(watch, "drain", lambda: (set(), True))  # IN_Q_OVERFLOW
    reply = scan(audit, tree)
    assert (reply["listed"], reply["reused"]) == (6, 0)


def test_listings_are_not_trusted_past_their_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path)
    audit = new_audit(tmp_path)
    scan(audit, tree)
    settled(audit, tree)
    monkeypatch.setattr(filehash, "TRUST_SECONDS", 0.0)  # an mmap write sends no event
    assert scan(audit, tree)["reused"] == 0


def test_without_inotify_every_scan_is_a_stat_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditwatch.DirWatch, "open", classmethod(lambda cls: None))
    tree = make_tree(tmp_path)
    audit = new_audit(tmp_path)
    scan(audit, tree)
    time.sleep(filehash.RACY_NS / 1e9)
    (tree / "d2" / "f21").write_bytes(b"changed")
    reply = scan(audit, tree)
    assert (reply["listed"], reply["reused"], reply["hashed"]) == (6, 0, 1)


def test_a_scan_of_other_paths_drops_the_listings_and_watches_it_did_not_visit(
    tmp_path: Path,
) -> None:
    tree = make_tree(tmp_path, dirs=2)
    other = tmp_path / "other"
    other.mkdir()
    audit = new_audit(tmp_path)
    scan(audit, tree)
    watch = audit._memos.dirwatch
    assert watch is not None and len(watch.watched) == 3
    scan(audit, other)
    assert watch.watched == {str(other)} and set(audit._memos.by_dir) <= {str(other)}
    (tree / "d0" / "f00").write_bytes(b"changed")  # unwatched now: must be seen anyway
    again = scan(audit, tree)
    assert again["reused"] == 0
    assert digests(again)["f00"] == hashlib.sha256(b"changed").hexdigest()
