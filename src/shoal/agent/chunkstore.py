"""The node's chunk store: verified chunks named by their SHA-256, and bandwidth caps.

Layout: ``<agent home>/chunks/<first two hex digits>/<sha256>``, mode 0600. A
chunk enters the store only through :meth:`ChunkStore.put`, which checks its
hash first and renames a temporary file into place, so every name in the store
is a verified chunk (an interrupted push, run again, fetches nothing it
already holds) and nothing outside this directory is ever named by a chunk
id. The chunk server reads only :meth:`ChunkStore.path` of a well-formed hash.
The store is a staging area for pushes in progress: :meth:`prune` empties it
down to the chunks still wanted once a push has ended everywhere (later pushes
reuse the files of the deployed versions instead).

:class:`Throttle` is a token bucket shared by the downloads (or the uploads)
of one node, for the optional per-node bandwidth cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from .manifest import is_hash


class ChunkError(Exception):
    """A chunk that cannot be stored: bad hash or an I/O error (message is one line)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChunkStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not is_hash(digest):
            raise ChunkError(f"not a chunk id: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except ChunkError:
            return False

    def put(self, digest: str, data: bytes, verified: bool = False) -> None:
        """Store ``data`` as chunk ``digest``; ChunkError if it does not hash to it."""
        if not verified and sha256(data) != digest:
            raise ChunkError(f"chunk {digest[:12]} does not match its hash")
        final = self.path(digest)
        tmp = final.with_name(f".{digest[:16]}.{os.getpid()}.{id(data)}.tmp")
        try:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(str(tmp), str(final))
        except OSError as exc:
            try:
                os.unlink(str(tmp))
            except OSError:
                pass
            raise ChunkError(f"cannot store chunk in {self.root}: {exc.strerror or exc}") from None

    def read(self, digest: str) -> bytes:
        with open(str(self.path(digest)), "rb") as handle:
            return handle.read()

    def prune(self, keep: Iterable[str] = ()) -> int:
        """Delete every stored chunk not in ``keep``; returns how many were removed."""
        wanted: set[str] = set(keep)
        removed = 0
        if not self.root.is_dir():
            return 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for item in sub.iterdir():
                if item.name in wanted:
                    continue
                try:
                    item.unlink()
                    removed += 1
                except OSError:
                    pass
            try:
                sub.rmdir()
            except OSError:
                pass
        return removed


class Throttle:
    """A token bucket: :meth:`take` waits until ``n`` bytes may pass at ``rate`` B/s."""

    def __init__(self, rate: float | None, burst: float = 0.05) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.capacity = (self.rate or 0) * burst + 65536
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)
