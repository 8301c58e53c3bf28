"""The agent's audit stat cache: what it may trust and what it must hash again."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from shoal.agent import filehash
from shoal.agent.filehash import FileAudit


def scan(audit: FileAudit, *paths: Path) -> dict[str, Any]:
    """One whole scan (every page), the cache written as the agent would after it."""

    async def run() -> dict[str, Any]:
        reply = await audit.dispatch("audit.scan", {"paths": [str(p) for p in paths]})
        entries = list(reply["entries"])
        page = reply
        while page["next"] is not None:
            page = await audit.dispatch(
                "audit.page", {"scan": reply["scan"], "offset": page["next"]}
            )
            entries += page["entries"]
        if audit._saving is not None:
            await audit._saving
        reply["entries"] = entries
        return reply

    return asyncio.run(run())


def digests(reply: dict[str, Any]) -> dict[str, str]:
    return {Path(e["p"]).name: e["d"] for e in reply["entries"] if e["t"] == "f"}


def new_audit(tmp_path: Path) -> FileAudit:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return FileAudit(home, lambda *a: None)


def test_a_file_hashed_within_the_racy_window_is_hashed_again(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"x" * 100)
    audit = new_audit(tmp_path)
    assert scan(audit, tree)["hashed"] == 1  # written just now: not trusted next time
    assert scan(audit, tree)["hashed"] == 1  # nothing changed, but hashed again
    before = os.stat(tree / "a")
    (tree / "a").write_bytes(b"y" * 100)  # the same size, the same mtime as listed
    os.utime(tree / "a", ns=(before.st_atime_ns, before.st_mtime_ns))
    again = scan(audit, tree)
    assert again["hashed"] == 1
    assert digests(again)["a"] == hashlib.sha256(b"y" * 100).hexdigest()
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    scan(audit, tree)  # hashed past the window: trusted from now on
    assert (scan(audit, tree)["hashed"], scan(audit, tree)["cached"]) == (0, 1)


def test_a_new_file_on_a_reused_inode_with_the_old_size_and_mtime_is_hashed(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"old!" * 64)
    old = os.stat(tree / "a")
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    audit = new_audit(tmp_path)
    assert scan(audit, tree)["hashed"] == 1
    for _ in range(50):  # until the file system hands the inode out again
        os.unlink(tree / "a")
        (tree / "a").write_bytes(b"new!" * 64)
        if os.stat(tree / "a").st_ino == old.st_ino:
            break
    os.utime(tree / "a", ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.stat(tree / "a")
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    again = scan(audit, tree)
    assert again["hashed"] == 1  # the ctime (never set back) tells it apart
    assert digests(again)["a"] == hashlib.sha256(b"new!" * 64).hexdigest()


def test_the_cache_survives_a_restart_and_a_torn_cache_costs_only_a_rehash(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(30):
        (tree / f"f{i}").write_bytes(os.urandom(100 + i))
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    first = scan(new_audit(tmp_path), tree)
    assert first["hashed"] == 30
    restarted = scan(new_audit(tmp_path), tree)  # a new agent reads the cache file
    assert (restarted["hashed"], restarted["cached"]) == (0, 30)
    assert digests(restarted) == digests(first)
    cache = tmp_path / "home" / "audit-cache.marshal"
    cache.write_bytes(cache.read_bytes()[:100])
    torn = scan(new_audit(tmp_path), tree)
    assert (torn["hashed"], torn["errors"]) == (30, [])
    assert digests(torn) == digests(first)


def test_large_files_are_hashed_in_blocks_and_match_sha256(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    sizes = {"small": 10, "edge": filehash._SMALL, "big": 3 * filehash._READ + 17}
    data = {name: os.urandom(size) for name, size in sizes.items()}
    for name, blob in data.items():
        (tree / name).write_bytes(blob)
    (tree / "empty").write_bytes(b"")
    got = digests(scan(new_audit(tmp_path), tree))
    want = {name: hashlib.sha256(blob).hexdigest() for name, blob in data.items()}
    assert got == {**want, "empty": hashlib.sha256(b"").hexdigest()}


def test_a_file_swapped_for_a_fifo_after_listing_is_an_error_not_a_hang(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"data")
    st = os.lstat(tree / "a")
    os.unlink(tree / "a")
    os.mkfifo(tree / "a")  # what the walk listed is gone: a FIFO in its place
    walk = filehash._Walk({}, filehash._Memos())
    assert walk._digest(str(tree / "a"), "a", st) is None
    assert walk.errors == ["a: not a regular file any more"] and walk.new_cache == {}


def test_a_scan_of_one_tree_keeps_the_cache_of_another(tmp_path: Path) -> None:
    trees = [tmp_path / "one", tmp_path / "one-more"]  # a prefix of the other's name
    for tree in trees:
        tree.mkdir()
        (tree / "f").write_bytes(os.urandom(50))
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    audit = new_audit(tmp_path)
    scan(audit, trees[0])
    scan(audit, trees[1])
    (trees[0] / "g").write_bytes(b"g")  # the next scan of "one" rewrites the cache
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    assert scan(audit, trees[0])["hashed"] == 1
    restarted = new_audit(tmp_path)
    assert (scan(restarted, trees[1])["hashed"], scan(restarted, trees[0])["hashed"]) == (0, 0)


def test_a_stale_cache_file_costs_a_restarted_agent_only_the_files_changed(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(300):
        (tree / f"f{i}").write_bytes(os.urandom(20))
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    audit = new_audit(tmp_path)
    assert scan(audit, tree)["hashed"] == 300  # written: 300 of 0
    cache = tmp_path / "home" / "audit-cache.marshal"
    written = cache.read_bytes()
    (tree / "f7").write_bytes(b"seven")
    time.sleep(filehash.RACY_NS / 1e9 + 0.05)
    assert scan(audit, tree)["hashed"] == 1
    assert cache.read_bytes() == written  # 1 of 300: under the share, not written
    restarted = scan(new_audit(tmp_path), tree)
    assert (restarted["hashed"], restarted["cached"]) == (1, 299)
    assert digests(restarted)["f7"] == hashlib.sha256(b"seven").hexdigest()
