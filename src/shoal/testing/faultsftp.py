"""A node whose SFTP server lies (issue 17 part 2), a row of the fault suite
(see :mod:`.faultsuite` for the row type).

An asyncssh server on loopback (its own host key, pinned in a private
known_hosts) serves a tree through an SFTP server that lies in one way per
case: names with control characters (a terminal escape, a newline), a listing
that names ``a/b`` and ``..``, and files whose reported size differs from the
bytes it sends (smaller and larger). ``shoal cp`` pulls each case; each must be
refused with one line naming the node and the path, and nothing may be left in
the destination::

    row = lying_sftp(work)
    assert row.ok, row
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh

from shoal.fanout import copy_async
from shoal.nodes.model import Node

from .faultsuite import FaultRow

#: Case → what the server does for it.
CASES = {
    "control-char names": "a file named with an ESC sequence and one with a newline",
    "slash and .. names": "a listing that names 'a/b' and '..' beside a real file",
    "size smaller": "reports 10 bytes, sends 4000",
    "size larger": "reports 100000 bytes, sends 4000",
}


class _LyingSFTP(asyncssh.SFTPServer):
    """Serves ``root`` (chrooted), lying as the top directory's name says."""

    def __init__(self, chan: Any, root: str) -> None:
        super().__init__(chan, chroot=root.encode())

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for name in super().scandir(path):
            yield name
        if path.rstrip(b"/").endswith(b"slash"):
            attrs = asyncssh.SFTPAttrs(permissions=0o100644, size=3)
            yield asyncssh.SFTPName(b"a/b", attrs=attrs)
            yield asyncssh.SFTPName(b"..", attrs=attrs)

    def _lie(self, path: bytes, attrs: Any) -> Any:
        got = asyncssh.SFTPAttrs.from_local(attrs) if isinstance(attrs, os.stat_result) else attrs
        if b"smaller" in path and got.size:
            got.size = 10
        elif b"larger" in path and got.size:
            got.size = 100_000
        return got

    def lstat(self, path: bytes) -> Any:
        return self._lie(path, super().lstat(path))

    def stat(self, path: bytes) -> Any:
        return self._lie(path, super().stat(path))

    def fstat(self, file_obj: object) -> Any:
        name = getattr(file_obj, "name", b"")
        return self._lie(name.encode() if isinstance(name, str) else name, super().fstat(file_obj))


class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # anyone: the liar wants to be pulled from


def _tree(root: Path) -> None:
    for case in ("ctl", "slash", "smaller", "larger"):
        (root / case).mkdir(parents=True, exist_ok=True)
    (root / "ctl" / "ok.txt").write_text("fine\n")
    (root / "ctl" / "\x1b[2Jcleared").write_text("x\n")
    (root / "ctl" / "two\nlines").write_text("x\n")
    (root / "slash" / "ok.txt").write_text("fine\n")
    for case in ("smaller", "larger"):
        (root / case / "data.bin").write_bytes(os.urandom(4000))


def lying_sftp(work: Path) -> FaultRow:
    """Pull every case from the liar; each refused in one line, nothing left behind."""
    row = FaultRow(
        "an SFTP server that lies",
        "a node's SFTP server: " + "; ".join(CASES.values()),
        "every pull refused in one line naming node and path; nothing written",
    )
    began = time.monotonic()
    served, key = work / "served", work / "liar_host_key"
    _tree(served)
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])

    async def go() -> dict[str, tuple[bool, str, list[str], str]]:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[str(key)],
            server_factory=_NoAuth,
            sftp_factory=lambda chan: _LyingSFTP(chan, str(served)),
        )
        port = server.sockets[0].getsockname()[1]
        (work / "known_hosts").write_text(f"[127.0.0.1]:{port},[liar]:{port},liar {pub}\n")
        cfg = work / "ssh_config"
        cfg.write_text(
            f"Host liar\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f'  UserKnownHostsFile "{work / "known_hosts"}"\n'
        )
        node = Node("liar", "127.0.0.1", "root", port, ssh_config=str(cfg))
        seen = {}
        try:
            paths = ("ctl", "slash", "smaller/data.bin", "larger/data.bin")
            for case, remote in zip(CASES, paths, strict=True):
                out = work / "out" / case.replace(" ", "-")
                res = (await copy_async([node], [f"@:{remote}", f"{out}/@/"]))["liar"]
                left = [str(p.relative_to(out)) for p in out.rglob("*")] if out.exists() else []
                seen[case] = (res.ok, res.reason or "", [p for p in left if p != "liar"], remote)
        finally:
            server.close()
            await server.wait_closed()
        return seen

    outcomes = asyncio.run(go())
    refused = 0
    for case, (ok, reason, left, remote) in outcomes.items():
        if ok or "\n" in reason or remote.split("/")[0] not in reason:
            row.details.append(f"{case}: accepted (ok={ok}, reason {reason!r}, wrote {left})")
        elif left:
            row.details.append(f"{case}: refused ({reason}) but wrote {left}")
        else:
            refused += 1
    row.seconds = time.monotonic() - began
    row.ok = not row.details
    row.observed = f"{refused}/{len(CASES)} lies refused, nothing written; " + "; ".join(
        f"{c}: {r[:60]}" for c, (_, r, _, _) in outcomes.items()
    )
    row.lost = "nothing" if row.ok else "; ".join(row.details)[:160]
    return row
