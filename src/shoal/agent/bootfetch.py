"""The bootstrap that fetches a zipapp from peers: run on a node as ``python3 -``.

Theory of operation. The controller sends this file's text over the node's SSH
connection, compressed, on the standard input of the node's python (``python3
-c`` :data:`COMMAND`), followed by one line calling :func:`main` with the
fetch's parameters (:func:`program`): the peers
``[host, port, pin]`` that share the zipapp (:mod:`.agentshare`), the push
token (so it never appears in a command line), the pieces ``[sha256, size]``,
the whole file's size and SHA-256, and the destination path. It connects to
each peer in turn over TLS and goes on only if the server's certificate hashes
to the pin, asks for every piece on the chunk wire (:mod:`.chunkserver`),
checks each piece's SHA-256 as it arrives and then the whole file's, and only
then writes ``DEST.part`` (0600, fsynced) and renames it to ``DEST``. A peer
that cannot be reached, is not the pinned server, lacks a piece or sends bytes
that do not match is refused and the next one is tried; when none gives the
file, nothing is written and it exits 1 with one line on stderr naming each
peer and why. It prints one JSON line ``{peer, bytes}`` on success.

It starts nothing and reads nothing but the pieces it asked for; what it writes
is a file beside the running agent's (the controller checks that the new build
starts before renaming it in), so a failed or partial fetch leaves the old
agent as it was.

Standard library only, Python >= 3.9 (it runs before any agent is on the node).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import sys
import zlib
from typing import Any

#: A peer's TCP connect and TLS handshake, then each read.
CONNECT_SECONDS = 15.0
READ_SECONDS = 30.0
#: The longest answer header (one size per piece).
MAX_HEAD = 64 * 1024


class Refused(Exception):
    """A peer that did not give the file (the reason is the message)."""


def fetch_from(peer: list[Any], token: str, pieces: list[list[Any]]) -> bytes:
    """Every piece from ``peer`` ([host, port, pin]), each checked; Refused or OSError."""
    host, port, pin = str(peer[0]), int(peer[1]), str(peer[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # checked below, by its pinned fingerprint
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((host, port), CONNECT_SECONDS)
    try:
        conn = ctx.wrap_socket(raw)
    except BaseException:
        raw.close()
        raise
    try:
        conn.settimeout(READ_SECONDS)
        der = conn.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() != pin:
            raise Refused("not the pinned server (its certificate differs)")
        want = [str(p[0]) for p in pieces]
        request = {"v": 1, "token": token, "want": want}
        conn.sendall(json.dumps(request).encode() + b"\n")
        stream = conn.makefile("rb")
        head = json.loads(stream.readline(MAX_HEAD) or b"{}")
        if "error" in head:
            raise Refused(f"refused the request: {head['error']}")
        if head.get("n") != [int(p[1]) for p in pieces]:
            raise Refused("does not hold every piece")
        parts = []
        for digest, size in pieces:
            data = stream.read(int(size))
            if len(data) != int(size):
                raise Refused("closed the connection within a piece")
            if hashlib.sha256(data).hexdigest() != digest:
                raise Refused("sent a piece that does not match its SHA-256")
            parts.append(data)
        return b"".join(parts)
    finally:
        conn.close()


def write_file(dest: str, data: bytes) -> None:
    """``dest`` holds ``data`` (through ``dest.part``, fsynced, renamed)."""
    part = dest + ".part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, dest)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


def main(params: dict[str, Any]) -> int:
    """Fetch, check and write the file (see the module docstring); the exit status."""
    dest, size, whole = str(params["dest"]), int(params["size"]), str(params["sha256"])
    why = []
    for peer in params["peers"]:
        try:
            data = fetch_from(peer, str(params["token"]), params["pieces"])
        except (OSError, ValueError, Refused) as exc:
            why.append(f"{peer[0]}: {exc}")
            continue
        if len(data) != size or hashlib.sha256(data).hexdigest() != whole:
            why.append(f"{peer[0]}: the file does not match its SHA-256")
            continue
        try:
            write_file(dest, data)
        except OSError as exc:
            sys.stderr.write(f"writing {dest} failed: {exc.strerror or exc}\n")
            return 1
        sys.stdout.write(json.dumps({"peer": peer[0], "bytes": len(data)}) + "\n")
        return 0
    sys.stderr.write(f"no peer gave {dest}: {'; '.join(why) or 'no peers'}\n")
    return 1


#: The node's side: ``python3 -c COMMAND`` runs the compressed text on its stdin.
COMMAND = (
    'import sys, zlib; exec(compile(zlib.decompress(sys.stdin.buffer.read()), "bootfetch", "exec"))'
)


def program(params: dict[str, Any]) -> bytes:
    """This module's text and the call that runs it with ``params``, zlib-compressed
    (the standard input of ``python3 -c`` :data:`COMMAND`: 2.5 KB a node, not 7)."""
    with open(__file__, encoding="utf-8") as handle:
        source = handle.read()
    text = f"{source}\n\nsys.exit(main(json.loads({json.dumps(params)!r})))\n"
    return zlib.compress(text.encode("utf-8"), 9)
