"""An application's software tree digest walks the tree as a push scans it (issue 11 item 14).

``tree_digest`` (the software's version, and what ``method: copy`` compares)
must refuse a name that is not UTF-8 naming the path escaped, read a tree
changing under it as changed, never open a FIFO, socket or device, and never
follow a symlink: one line, a :class:`ShoalError`, never a hang or a raw
``OSError``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from shoal.app.software import tree_digest
from shoal.errors import ContentError

BAD = os.fsdecode(b"bad\xffname")  # a name that is not UTF-8 (a lone surrogate here)


def test_a_fifo_in_the_tree_is_skipped_never_opened(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    root.mkdir()
    (root / "run.sh").write_bytes(b"echo hi\n")
    before = tree_digest(root)
    os.mkfifo(root / "pipe")
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(tree_digest(root)), daemon=True)
    worker.start()
    worker.join(10)
    hung = worker.is_alive()
    if hung:  # unblock the reader's open (a writer appears, then EOF) so nothing is left
        with open(root / "pipe", "wb"):
            pass
        worker.join(10)
    assert not hung, "tree_digest hung opening a FIFO"
    assert got == [before]  # skipped, as a push skips it


def test_a_socket_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    root.mkdir()
    (root / "data").write_bytes(b"x")
    before = tree_digest(root)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        assert tree_digest(root) == before
    finally:
        sock.close()


def test_a_name_that_is_not_utf8_is_refused_naming_the_path_escaped(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / BAD).write_bytes(b"x")
    with pytest.raises(ContentError) as caught:
        tree_digest(root)
    message = str(caught.value)
    assert "sub/bad\\xffname" in message and "not valid UTF-8" in message
    message.encode("utf-8")
    assert "\n" not in message


def test_a_dangling_symlink_is_part_of_the_digest_not_an_error(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    root.mkdir()
    (root / "data").write_bytes(b"x")
    (root / "link").symlink_to("missing")
    first = tree_digest(root)
    (root / "link").unlink()
    (root / "link").symlink_to("other")
    assert tree_digest(root) != first  # the link's target is part of the version


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_bytes(b"one")
    (outside / "dir" / "inner").write_bytes(b"one")
    root = tmp_path / "sw"
    root.mkdir()
    (root / "file-link").symlink_to(outside / "file")
    (root / "dir-link").symlink_to(outside / "dir")
    first = tree_digest(root)
    (outside / "file").write_bytes(b"two, longer")
    (outside / "dir" / "inner").write_bytes(b"two, longer")
    (outside / "dir" / "more").write_bytes(b"")
    assert tree_digest(root) == first  # what the links point to is not the tree's


def test_contents_modes_and_names_still_change_the_digest(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"v1")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (root / ".shoal-version").write_bytes(b"ignored\n")
    first = tree_digest(root)
    assert len(first) == 16
    (root / "__pycache__" / "x.pyc").write_bytes(b"other cache")
    (root / ".shoal-version").write_bytes(b"other\n")
    assert tree_digest(root) == first  # caches and the copy's own marker are not the version
    (root / "bin" / "tool").write_bytes(b"v2")
    second = tree_digest(root)
    assert second != first
    (root / "bin" / "tool").chmod(0o700)
    assert tree_digest(root) != second


def test_files_vanishing_during_the_digest_read_as_changed(tmp_path: Path) -> None:
    root = tmp_path / "sw"
    root.mkdir()
    outcomes: list[str] = []
    for attempt in range(40):  # bounded: the deleter races the digest's walk
        for name in os.listdir(root):
            os.unlink(root / name)
        for i in range(3000):
            (root / f"f{i:05d}").write_bytes(b"x")
        names = sorted(os.listdir(root), reverse=True)
        go = threading.Event()

        def delete(names: list[str] = names, go: threading.Event = go) -> None:
            go.wait()
            for name in names:
                os.unlink(root / name)

        deleter = threading.Thread(target=delete)
        deleter.start()
        try:
            go.set()
            tree_digest(root)
            outcomes.append("ok")
        except ContentError as exc:
            assert "changed while it was being scanned" in str(exc), exc
            outcomes.append("changed")
        finally:
            deleter.join()
        if "changed" in outcomes and attempt >= 3:
            break
    assert "changed" in outcomes, outcomes
