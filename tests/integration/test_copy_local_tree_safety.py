"""``shoal cp`` to nodes reads the local tree as a push scans it (issue 11 item 14's class).

SFTP carries names as UTF-8: a local name or symlink target that is not
UTF-8 used to raise a raw ``UnicodeEncodeError`` out of the whole fan-out; a
FIFO, socket or device was blamed on the node. Each is now refused, never
opened, with one line naming the path escaped, as a controller-side
:class:`LocalError` that leaves the node's health alone.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from shoal.fanout import FanoutOptions, RunOptions, copy, run

pytestmark = pytest.mark.lab

BAD = os.fsdecode(b"bad\xffname")


@pytest.fixture
def where(lab: Any) -> Any:
    nodes = lab.nodes()[:2]
    where = f"cplocal-{secrets.token_hex(3)}"
    try:
        yield nodes, where
    finally:
        run(nodes, f"rm -rf {where}", RunOptions())


def _refused(nodes: list[Any], src: Path, dest: str, needle: str) -> None:
    result = copy(nodes, [str(src), dest], FanoutOptions())
    for node in nodes:
        outcome = result[node.name]
        assert outcome.kind == "local", (outcome.kind, outcome.reason)
        assert needle in outcome.reason and "\n" not in outcome.reason, outcome.reason
        outcome.reason.encode("utf-8")  # printable anywhere


def test_a_local_name_that_is_not_utf8_is_refused(where: Any, tmp_path: Path) -> None:
    nodes, base = where
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / BAD).write_bytes(b"x")
    _refused(nodes, src, f"@:{base}/", "tree/sub/bad\\xffname: the name is not valid UTF-8")


def test_a_symlink_target_that_is_not_utf8_is_refused(where: Any, tmp_path: Path) -> None:
    nodes, base = where
    src = tmp_path / "tree"
    src.mkdir()
    (src / "link").symlink_to(BAD)
    _refused(nodes, src, f"@:{base}/", "the symlink's target is not valid UTF-8")


def test_a_destination_that_is_not_utf8_is_refused(where: Any, tmp_path: Path) -> None:
    nodes, base = where
    src = tmp_path / "file"
    src.write_bytes(b"x")
    _refused(nodes, src, f"@:{base}/{BAD}/", "the destination is not valid UTF-8")


def test_fifos_and_sockets_are_refused_unopened_and_blame_no_node(
    where: Any, tmp_path: Path
) -> None:
    nodes, base = where
    src = tmp_path / "tree"
    src.mkdir()
    os.mkfifo(src / "fifo")
    _refused(nodes, src, f"@:{base}/", "fifo is not a regular file, directory or symlink")
    os.unlink(src / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "sock"))
        _refused(nodes, src, f"@:{base}/", "sock is not a regular file, directory or symlink")
    finally:
        sock.close()
