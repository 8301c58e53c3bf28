"""Host-key decisions' pieces: which known_hosts file knows a host, which one trusted a
key (logged at DEBUG), a first-seen key recorded (accept-new), and the refusal's message.

:class:`shoal.transport.ssh` decides; this module reads and writes the files and words
the outcome. Reading a file here is only for a key asyncssh did not trust already (or
for the DEBUG line), never on a connection's ordinary path.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

import asyncssh

from shoal.errors import HostKeyError
from shoal.logsetup import logger

log = logger("shoal.transport.hostkeys")


def known_in(files: list[str], host: str, addr: str, port: int) -> str | None:
    """The first of ``files`` with an entry (any key) for the host, or None."""
    for path in files:
        if not os.path.exists(path):
            continue
        try:
            trusted = asyncssh.read_known_hosts(path).match(host, addr, port)[0]
        except (asyncssh.Error, OSError, ValueError):
            continue
        if trusted:
            return path
    return None


def log_trusted_by(
    node: str, host: str, files: list[str], conn: asyncssh.SSHClientConnection
) -> None:
    """DEBUG: which of ``files`` trusted the key asyncssh accepted (read only then)."""
    key = conn.get_server_host_key()
    peer = conn.get_extra_info("peername") or ("", 0)
    port = int(peer[1]) if len(peer) > 1 else 22
    where = "a known_hosts file"
    for path in files:
        with contextlib.suppress(asyncssh.Error, OSError, ValueError):
            if key is not None and any(
                k.public_data == key.public_data
                for k in asyncssh.read_known_hosts(path).match(host, str(peer[0]), port)[0]
            ):
                where = path
                break
    shown = f"{key.get_algorithm()} {key.get_fingerprint()}" if key is not None else "its key"
    log.debug("%s: host key %s trusted by %s", node, shown, where)


def record_key(path: str, names: list[str], port: int, key: asyncssh.SSHKey) -> None:
    """Append a first-seen key (accept-new) under the node's name and address."""
    unique = [n for i, n in enumerate(names) if n and n not in names[:i]]
    if port and port != 22:
        unique = [f"[{n}]:{port}" for n in unique]
    line = f"{','.join(unique)} {key.export_public_key().decode().strip()}\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a", encoding="ascii") as fh:
        fh.write(line)


def refusal(
    verdict: str | None, stale: tuple[str, str] | None, node: str, exc: Exception
) -> HostKeyError:
    """The error of a key not trusted: changed (with the ssh-keygen -R advice), unknown,
    or whatever asyncssh said."""
    if verdict == "changed" and stale is not None:
        path, entry = stale
        return HostKeyError(
            "HOST KEY CHANGED: the key offered differs from the one in known_hosts; refusing "
            f"(if the change is expected: ssh-keygen -f {shlex.quote(path)} "
            f"-R {shlex.quote(entry)})",
            node,
        )
    if verdict == "unknown":
        return HostKeyError(
            "host key not in known_hosts; refusing (verify it, add it with ssh-keyscan, "
            "or use --host-keys accept-new to trust on first use)",
            node,
        )
    return HostKeyError(f"host key not verifiable: {exc}", node)
