"""The chunk wire's CPU cost per byte over TLS against plain TCP, on loopback.

Usage::

    .venv/bin/python bench/push_tls_wire.py [--mb 200] [--rounds 3]

One chunk server (a store of ``--mb`` MB of 16 KiB-ish chunks) and one fetcher
in this process, 1 MiB batches as push asks for them, five at once; prints
MB/s and the process's CPU seconds per 100 MB, for the plain wire and for TLS
with a pinned certificate, best of ``--rounds``, and their ratio. Both ends
run in one process (one core), so the figure is the sum of the sender's and
the receiver's work, as on a node that serves peers while it fetches.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import hashlib
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from shoal.agent.chunkfetch import Fetcher  # noqa: E402
from shoal.agent.chunkserver import ChunkServer, StoreBackend  # noqa: E402
from shoal.agent.chunkstore import ChunkStore  # noqa: E402
from shoal.content.datatls import make_identity  # noqa: E402

TOKEN = "t" * 32
CHUNK = 16 * 1024


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one(
    work: Path, chunks: list[tuple[str, int]], store: ChunkStore, tls: bool
) -> tuple[float, float]:
    ident = make_identity("bench") if tls else None
    server = ChunkServer(
        StoreBackend(store),
        tls=ident.context() if ident else None,
        fingerprint=ident.fingerprint if ident else "",
    )
    server.tokens.add(TOKEN)
    port = await server.start("127.0.0.1")
    dst = ChunkStore(work / f"dst-{time.monotonic_ns()}")
    fetcher = Fetcher(dst)
    per = (1 << 20) // CHUNK
    batches = [chunks[i : i + per] for i in range(0, len(chunks), per)]
    queue = list(batches)

    async def worker() -> None:
        while queue:
            batch = queue.pop()
            got = await fetcher.fetch(
                "127.0.0.1", port, TOKEN, batch, bucket="v", pin=ident.fingerprint if ident else ""
            )
            assert not got.error, got.error

    c0, t0 = cpu(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(5)))
    took, used = time.monotonic() - t0, cpu() - c0
    fetcher.close()
    server.close()
    dst.close()
    return took, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-tls-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        store = ChunkStore(work / "src")
        chunks = []
        for _ in range(args.mb * 1_000_000 // CHUNK):
            data = os.urandom(CHUNK)
            digest = hashlib.sha256(data).hexdigest()
            store.put(digest, data, "v")
            chunks.append((digest, CHUNK))
        size = len(chunks) * CHUNK
        print(
            f"{size / 1e6:.0f} MB in {len(chunks)} chunks, loopback, load {os.getloadavg()[0]:.2f}"
        )
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for label, tls in (("plain", False), ("TLS", True)):
                took, used = asyncio.run(one(work, chunks, store, tls))
                if label not in best or used < best[label][1]:
                    best[label] = (took, used)
        for label, (took, used) in best.items():
            print(
                f"{label:<6} {size / took / 1e6:7.1f} MB/s   "
                f"{used / size * 1e8:.2f} CPU s per 100 MB (both ends)"
            )
        ratio = best["TLS"][1] / best["plain"][1]
        print(f"TLS / plain CPU per byte = {ratio:.2f}   (load {os.getloadavg()[0]:.2f})")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
