#!/usr/bin/env python3
"""ByteTorrent: the file distribution service of the Plush paper, small and real.

A sender splits a file into chunks and runs a tracker that also serves
chunks; receivers run a peer server, *join* the network (phase 1: register
with the tracker), and once everybody has joined (a Shoal barrier) *transfer*
the file (phase 2): each receiver fetches chunks in its own random order,
from peers that already have them when it can and from the sender otherwise,
checks every chunk's SHA-256 and the whole file's, and serves what it holds
to the others meanwhile.

Commands (standard library only, Python >= 3.9)::

    bt.py make  --size 8M --out data.bin          deterministic test data
    bt.py seed  --file data.bin --port 7000       sender: tracker + chunk server
    bt.py peer  --dir chunks --port 7001          receiver: chunk server
    bt.py join  --tracker HOST:7000 --me HOST:7001
    bt.py fetch --tracker HOST:7000 --dir chunks --out file.bin [--me HOST:7001]
    bt.py ping  HOST:PORT                         exit 0 when a server answers

Wire protocol: one request line, one answer. ``MANIFEST`` → JSON line;
``JOIN addr`` / ``PEERS`` → JSON list line; ``GET i`` → ``OK n`` line and n
bytes, or ``NO``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import socketserver
import sys
import threading
import time

CHUNK = 256 * 1024


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1:].upper()])
    return int(text)


def make(size: int, out: str) -> None:
    with open(out + ".tmp", "wb") as f:
        counter = 0
        left = size
        while left > 0:
            block = hashlib.sha256(str(counter).encode()).digest() * 2048
            f.write(block[:left])
            left -= len(block[:left])
            counter += 1
    os.replace(out + ".tmp", out)


def manifest_of(path: str, chunk: int) -> dict:
    hashes = []
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            hashes.append(hashlib.sha256(data).hexdigest())
            whole.update(data)
    return {"size": os.path.getsize(path), "chunk": chunk, "hashes": hashes,
            "sha256": whole.hexdigest()}


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        verb, _, arg = line.partition(" ")
        srv = self.server
        if verb == "MANIFEST" and srv.manifest is not None:  # type: ignore[attr-defined]
            self.wfile.write(json.dumps(srv.manifest).encode() + b"\n")  # type: ignore[attr-defined]
        elif verb == "JOIN":
            with srv.lock:  # type: ignore[attr-defined]
                if arg and arg not in srv.peers:  # type: ignore[attr-defined]
                    srv.peers.append(arg)  # type: ignore[attr-defined]
                peers = list(srv.peers)  # type: ignore[attr-defined]
            self.wfile.write(json.dumps(peers).encode() + b"\n")
        elif verb == "PEERS":
            with srv.lock:  # type: ignore[attr-defined]
                peers = list(srv.peers)  # type: ignore[attr-defined]
            self.wfile.write(json.dumps(peers).encode() + b"\n")
        elif verb == "GET":
            data = srv.read_chunk(int(arg))  # type: ignore[attr-defined]
            if data is None:
                self.wfile.write(b"NO\n")
            else:
                self.wfile.write(b"OK %d\n" % len(data) + data)
        elif verb == "PING":
            self.wfile.write(b"PONG\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(port: int, manifest: dict | None, reader) -> None:  # type: ignore[no-untyped-def]
    server = Server(("0.0.0.0", port), Handler)
    server.manifest = manifest  # type: ignore[attr-defined]
    server.peers = []  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.read_chunk = reader  # type: ignore[attr-defined]
    print(f"serving on port {port}", flush=True)
    server.serve_forever()


def seed(path: str, port: int) -> None:
    manifest = manifest_of(path, CHUNK)
    print(f"seeding {path}: {manifest['size']} bytes, {len(manifest['hashes'])} chunks",
          flush=True)

    def reader(i: int) -> bytes | None:
        if not 0 <= i < len(manifest["hashes"]):
            return None
        with open(path, "rb") as f:
            f.seek(i * CHUNK)
            return f.read(CHUNK)

    serve(port, manifest, reader)


def peer(folder: str, port: int) -> None:
    os.makedirs(folder, exist_ok=True)

    def reader(i: int) -> bytes | None:
        try:
            with open(os.path.join(folder, f"{i}.chunk"), "rb") as f:
                return f.read()
        except OSError:
            return None

    serve(port, None, reader)


def request(addr: str, line: str, timeout: float = 10.0) -> tuple[bytes, socket.socket]:
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(line.encode() + b"\n")
    return b"", sock


def ask(addr: str, line: str) -> bytes:
    _, sock = request(addr, line)
    with sock, sock.makefile("rb") as f:
        return f.readline()


def get_chunk(addr: str, index: int) -> bytes | None:
    _, sock = request(addr, f"GET {index}")
    with sock, sock.makefile("rb") as f:
        head = f.readline().decode().split()
        if not head or head[0] != "OK":
            return None
        return f.read(int(head[1]))


def join(tracker: str, me: str) -> None:
    peers = json.loads(ask(tracker, f"JOIN {me}"))
    print(f"joined via {tracker} as {me}: {len(peers)} peer(s) so far", flush=True)


def fetch(tracker: str, folder: str, out: str, me: str | None) -> None:
    began = time.time()
    manifest = json.loads(ask(tracker, "MANIFEST"))
    peers = [p for p in json.loads(ask(tracker, "PEERS")) if p != me]
    os.makedirs(folder, exist_ok=True)
    order = list(range(len(manifest["hashes"])))
    random.shuffle(order)
    from_peers = from_sender = 0
    for i in order:
        path = os.path.join(folder, f"{i}.chunk")
        if os.path.exists(path):
            continue
        data = None
        for p in random.sample(peers, min(2, len(peers))):
            try:
                data = get_chunk(p, i)
            except OSError:
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == manifest["hashes"][i]:
                from_peers += 1
                break
            data = None
        if data is None:
            data = get_chunk(tracker, i)
            if data is None or hashlib.sha256(data).hexdigest() != manifest["hashes"][i]:
                sys.exit(f"chunk {i}: bad or missing from the sender")
            from_sender += 1
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    whole = hashlib.sha256()
    with open(out + ".tmp", "wb") as f:
        for i in range(len(manifest["hashes"])):
            with open(os.path.join(folder, f"{i}.chunk"), "rb") as c:
                data = c.read()
            whole.update(data)
            f.write(data)
    if whole.hexdigest() != manifest["sha256"]:
        sys.exit("file checksum mismatch")
    os.replace(out + ".tmp", out)
    print(f"received {manifest['size']} bytes in {time.time() - began:.2f}s: "
          f"{from_peers} chunk(s) from peers, {from_sender} from the sender; sha256 ok",
          flush=True)


def ping(addr: str) -> int:
    try:
        return 0 if ask(addr, "PING").startswith(b"PONG") else 1
    except OSError:
        return 1


def main() -> int:
    p = argparse.ArgumentParser(prog="bt.py", description=__doc__.splitlines()[0])
    s = p.add_subparsers(dest="cmd", required=True)
    a = s.add_parser("make")
    a.add_argument("--size", type=size_arg, required=True)
    a.add_argument("--out", required=True)
    a = s.add_parser("seed")
    a.add_argument("--file", required=True)
    a.add_argument("--port", type=int, default=7000)
    a = s.add_parser("peer")
    a.add_argument("--dir", required=True)
    a.add_argument("--port", type=int, default=7001)
    a = s.add_parser("join")
    a.add_argument("--tracker", required=True)
    a.add_argument("--me", required=True)
    a = s.add_parser("fetch")
    a.add_argument("--tracker", required=True)
    a.add_argument("--dir", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--me", default=None)
    a = s.add_parser("ping")
    a.add_argument("addr")
    args = p.parse_args()
    if args.cmd == "make":
        make(args.size, args.out)
    elif args.cmd == "seed":
        seed(args.file, args.port)
    elif args.cmd == "peer":
        peer(args.dir, args.port)
    elif args.cmd == "join":
        join(args.tracker, args.me)
    elif args.cmd == "fetch":
        fetch(args.tracker, args.dir, args.out, args.me)
    elif args.cmd == "ping":
        return ping(args.addr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
