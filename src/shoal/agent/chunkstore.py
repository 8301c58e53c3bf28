"""The node's chunk store: verified chunks named by their SHA-256, and bandwidth caps.

Layout: ``<agent home>/chunks/<bucket>.data``, ``<bucket>.idx`` and
``<bucket>.f<N>``, one bucket per push (its version id). Chunks of the
version's big files are written at their first place in that file: the
store's ``<bucket>.f<N>`` is file N of the manifest being filled in (see
:meth:`ChunkStore.plan`), so commit completes it and hard-links it into the
new tree instead of copying 200 MB. Other chunks (small files, packs, the
manifest itself, chunks for a version that needs no placing) are appended to
``<bucket>.data``. The index has one line per chunk, ``<sha256> <offset>
<size>`` or ``<sha256> <offset> <size> <N>`` for a placed one, so a push of
200 MB costs a few files per node, not thousands, and serving a chunk is one
``sendfile(2)`` from a known offset. Writes go one ``pwrite`` per contiguous
run of a fetched batch and one index write per batch. A chunk enters the
store only through :meth:`ChunkStore.put` / :meth:`ChunkStore.put_verified`,
after its hash was checked by the caller (the fetcher hashes what it
received) or by ``put`` itself, so every id in the index names a verified
chunk and nothing outside these files is ever served by id. A placed file
that has been deployed (more than one link) is never written again: it is
sealed before commit, and writes to it fall back to ``<bucket>.data``.

An interrupted push, run again, fetches nothing the index already lists:
:meth:`ChunkStore.load` reads the indexes back (entries whose bytes lie past
the end of their file are dropped). Chunks that came from disk rather than
from this process's own writes are hashed again before use
(:meth:`ChunkStore.copy_to`, :meth:`ChunkStore.verify_at`), since a crash may
have lost unsynced bytes. :meth:`prune` deletes whole buckets once their push
has ended (:meth:`detach` forgets them at once and leaves the slow unlinking
to a worker thread; a placed file that became a deployed file only loses its
store name).

:class:`Throttle` is a token bucket shared by the downloads (or the uploads)
of one node, for the optional per-node bandwidth cap.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from .manifest import is_hash

_HASHES = re.compile(r"[0-9a-f]{64}(?:\n[0-9a-f]{64})*")


class ChunkError(Exception):
    """A chunk that cannot be stored: bad hash or an I/O error (message is one line)."""


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class _Bucket:
    """One push's files: ``<name>.data`` (appended), ``<name>.idx``, ``<name>.f<N>`` (placed)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.data = root / f"{name}.data"
        self.index = root / f"{name}.idx"
        self.fd = -1
        self.size = 0
        self.index_fd = -1
        #: chunk id → (file number, offset) where a chunk goes instead of ``data``
        self.plan: dict[str, tuple[int, int]] | None = None
        self.parts: dict[int, int] = {}  # file number → descriptor
        self.writable: set[int] = set()

    def open(self) -> int:
        if self.fd < 0:
            self.fd = os.open(str(self.data), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self.size = os.fstat(self.fd).st_size
        return self.fd

    def part_path(self, part: int) -> Path:
        return self.root / f"{self.name}.f{part}"

    def open_part(self, part: int, write: bool = False) -> int:
        """The placed file ``part``; created when writing. OSError if it cannot be."""
        fd = self.parts.get(part)
        if fd is not None:
            if write and part not in self.writable:
                raise PermissionError(f"{self.part_path(part)} is open read-only")
            return fd
        path = str(self.part_path(part))
        if write:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self.writable.add(part)
        else:  # deployed copies may have been made read-only: reading is enough here
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        self.parts[part] = fd
        return fd

    def append_index(self, line: str) -> None:
        if self.index_fd < 0:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
            self.index_fd = os.open(str(self.index), flags, 0o600)
        os.write(self.index_fd, line.encode())

    def files(self) -> list[Path]:
        found = {self.part_path(p) for p in self.parts}
        try:
            found.update(self.root.glob(f"{self.name}.f*"))
        except OSError:
            pass
        return [self.data, self.index, *sorted(found)]

    def close(self) -> None:
        for fd in (self.fd, self.index_fd, *self.parts.values()):
            if fd >= 0:
                os.close(fd)
        self.fd = self.index_fd = -1
        self.parts = {}
        self.writable = set()


#: (bucket, offset, size, verified in this process, placed file number or -1 for data)
Spot = tuple[str, int, int, bool, int]


class ChunkStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where: dict[str, Spot] = {}
        self.buckets: dict[str, _Bucket] = {}
        self._loaded = False
        self._gone = 0

    # -- index -------------------------------------------------------------------

    def _bucket(self, name: str) -> _Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            if not name.replace("-", "").isalnum():
                raise ChunkError(f"bad bucket name {name!r}")
            bucket = _Bucket(self.root, name)
            self.buckets[name] = bucket
        return bucket

    def load(self) -> None:
        """Read every bucket's index back (once)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            names = sorted(p.stem for p in self.root.glob("*.idx"))
            unlink_all([str(p) for p in self.root.glob(".*.gone")])
        except OSError:
            return
        for name in names:
            bucket = self._bucket(name)
            sizes: dict[int, int] = {}
            try:
                sizes[-1] = os.stat(str(bucket.data)).st_size
            except OSError:
                sizes[-1] = 0
            try:
                lines = bucket.index.read_text().splitlines()
            except (OSError, ValueError):
                continue
            for line in lines:
                parts = line.split()
                if len(parts) not in (3, 4) or not is_hash(parts[0]) or parts[0] in self.where:
                    continue
                try:
                    offset, n = int(parts[1]), int(parts[2])
                    part = int(parts[3]) if len(parts) == 4 else -1
                except ValueError:
                    continue
                if part not in sizes:
                    try:
                        sizes[part] = os.stat(str(bucket.part_path(part))).st_size
                    except OSError:
                        sizes[part] = 0
                if offset + n <= sizes[part]:
                    self.where[parts[0]] = (name, offset, n, False, part)

    def index(self) -> dict[str, Spot]:
        """Every stored chunk id (→ where it is): for membership tests in bulk."""
        self.load()
        return self.where

    def has(self, digest: str) -> bool:
        self.load()
        return digest in self.where

    # -- placement ----------------------------------------------------------------

    def plan(self, bucket: str, places: dict[str, tuple[int, int]]) -> None:
        """Chunks of ``bucket`` named in ``places`` are written to file ``<bucket>.f<N>``
        at the given offset (their place in the version's file N) instead of appended."""
        self._bucket(bucket).plan = places or None

    def seal(self, bucket: str) -> None:
        """No more writes to ``bucket``'s placed files (they are about to be deployed)."""
        b = self.buckets.get(bucket)
        if b is not None:
            b.plan = None

    def placed_file(self, bucket: str, part: int) -> tuple[str, int] | None:
        """(path, writable descriptor) of placed file ``part`` of ``bucket``, if it exists."""
        b = self.buckets.get(bucket)
        if b is None or not os.path.isfile(str(b.part_path(part))):
            return None
        try:
            fd = b.open_part(part, write=True)
            if os.fstat(fd).st_nlink != 1:
                return None  # already deployed elsewhere: never write into a live file
        except OSError:
            return None
        return str(b.part_path(part)), fd

    def verify_at(self, digest: str, bucket: str, part: int, offset: int) -> bool:
        """Whether ``digest`` sits, verified, at ``offset`` of placed file ``part``."""
        spot = self.where.get(digest)
        if spot is None or (spot[0], spot[1], spot[4]) != (bucket, offset, part):
            return False
        if spot[3]:
            return True
        try:
            self.read(digest)  # hashes it, and forgets it if damaged
        except OSError:
            return False
        return True

    def put(
        self, digest: str, data: bytes | memoryview, bucket: str = "misc", verified: bool = False
    ) -> None:
        """Store chunk ``digest`` in ``bucket``; ChunkError if it does not hash to it."""
        view = memoryview(data)
        if not verified and is_hash(digest) and sha256(view) != digest:
            raise ChunkError(f"chunk {digest[:12]} does not match its hash")
        self.put_verified([(digest, len(view))], view, bucket)

    def put_verified(
        self, chunks: list[tuple[str, int]], data: bytes | memoryview, bucket: str = "misc"
    ) -> None:
        """Store ``chunks`` [(sha256, size)] whose bytes lie back to back in ``data``.

        The caller has hashed every one (the fetcher, as they arrive). Planned
        chunks go to their place, the others are appended to ``<bucket>.data``;
        one ``pwrite`` per contiguous run and one index write per batch, not
        per chunk (a 200 MB push is about 10,000 chunks of 16 KiB).
        """
        self.load()
        if not chunks:
            return
        try:
            ok = _HASHES.fullmatch("\n".join(h for h, _ in chunks)) is not None
            ok = ok and all(len(h) == 64 for h, _ in chunks)  # no id hides a newline
        except TypeError:
            ok = False
        if not ok:
            bad = next((h for h, _ in chunks if not is_hash(h)), "")
            raise ChunkError(f"not a chunk id: {str(bad)[:80]!r}")
        view = memoryview(data)
        if sum(n for _, n in chunks) != len(view):
            raise ChunkError("chunk sizes do not add up to the bytes given")
        b = self._bucket(bucket)
        plan = b.plan or {}
        # runs: [file number, file offset, position in view, length, [(digest, n, offset)]]
        runs: list[list[Any]] = []
        seen: set[str] = set()
        pos = 0
        for digest, n in chunks:
            if digest not in self.where and digest not in seen:
                seen.add(digest)
                part, at = plan.get(digest, (-1, -1))
                last = runs[-1] if runs else None
                if (
                    last is not None
                    and last[0] == part
                    and last[2] + last[3] == pos
                    and (part < 0 or last[1] + last[3] == at)
                ):
                    last[3] += n
                    last[4].append((digest, n, at))
                else:
                    runs.append([part, at, pos, n, [(digest, n, at)]])
            pos += n
        if not runs:
            return
        lines = []
        spots: list[tuple[str, int, int, int]] = []
        try:
            if b.fd < 0:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                b.open()
            for part, at, start, length, items in runs:
                fd = -1
                if part >= 0:
                    try:
                        fd = b.open_part(part, write=True)
                        if os.fstat(fd).st_nlink != 1:
                            part = -1  # deployed already: never write into a live file
                    except OSError:
                        part = -1  # cannot place it (too many files open?): append it
                if part < 0:
                    fd, at = b.fd, b.size
                    b.size += length
                _pwrite_all(fd, view[start : start + length], at)
                offset = at
                for digest, n, _ in items:
                    suffix = f" {part}" if part >= 0 else ""
                    lines.append(f"{digest} {offset} {n}{suffix}\n")
                    spots.append((digest, offset, n, part))
                    offset += n
            b.append_index("".join(lines))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # ends the push session at once
                raise ChunkError(f"disk full writing {self.root}: {exc.strerror}") from None
            raise ChunkError(f"cannot store chunk in {self.root}: {exc.strerror or exc}") from None
        for digest, offset, n, part in spots:
            self.where.setdefault(digest, (bucket, offset, n, True, part))

    def span(self, digest: str) -> tuple[int, int, int] | None:
        """(file descriptor, offset, size) of a stored chunk, for sendfile/pread."""
        self.load()
        spot = self.where.get(digest)
        if spot is None:
            return None
        name, offset, size, _, part = spot
        try:
            b = self._bucket(name)
            return (b.open() if part < 0 else b.open_part(part)), offset, size
        except OSError:
            return None

    def read(self, digest: str) -> bytes:
        """The chunk's bytes (verified if they came from a previous process); OSError if not."""
        spot = self.span(digest)
        if spot is None:
            raise FileNotFoundError(f"chunk {digest[:12]} not in the store")
        fd, offset, size = spot
        data = os.pread(fd, size, offset)
        if len(data) != size or (not self.where[digest][3] and sha256(data) != digest):
            self.where.pop(digest, None)
            raise FileNotFoundError(f"chunk {digest[:12]} damaged in the store")
        return data

    def copy_to(self, digest: str, out_fd: int) -> bool:
        """Append the chunk to ``out_fd`` in the kernel where possible; False if missing."""
        spot = self.span(digest)
        if spot is None:
            return False
        fd, offset, size = spot
        if not self.where[digest][3]:
            try:
                data = self.read(digest)
            except OSError:
                return False
            _write_all(out_fd, data)
            return True
        copy = getattr(os, "copy_file_range", None)
        done = 0
        if copy is not None:
            try:
                while done < size:
                    n = copy(fd, out_fd, size - done, offset + done)
                    if n <= 0:
                        break
                    done += n
            except OSError as exc:
                if exc.errno not in (18, 22, 38, 95):  # EXDEV, EINVAL, ENOSYS, EOPNOTSUPP
                    raise
        if done < size:
            _write_all(out_fd, os.pread(fd, size - done, offset + done))
        return True

    def prune(self, keep_buckets: set[str] | None = None) -> int:
        """Delete every bucket not in ``keep_buckets``; returns how many chunks went."""
        removed, doomed = self.detach(keep_buckets)
        unlink_all(doomed)
        return removed

    def idle_buckets(self, seconds: float) -> set[str]:
        """Buckets none of whose files changed in the last ``seconds``."""
        self.load()
        cutoff = time.time() - seconds
        idle = set()
        for name, bucket in self.buckets.items():
            newest = 0.0
            for path in bucket.files():
                try:
                    newest = max(newest, os.stat(str(path)).st_mtime)
                except OSError:
                    pass
            if newest < cutoff:
                idle.add(name)
        return idle

    def detach(self, keep_buckets: set[str] | None = None) -> tuple[int, list[str]]:
        """Forget every bucket not in ``keep_buckets`` now; unlinking is left to the caller.

        The buckets leave the index and their files are renamed to unique
        ``*.gone`` names at once (renames are cheap), so nothing of them is
        served or reused from here on and a bucket of the same name made right
        after starts afresh; deleting the bytes (a second or more for 200 MB)
        can then happen on another thread: returns (chunks forgotten, paths to
        unlink). Leftover ``*.gone`` files of a crashed agent go at :meth:`load`.
        """
        self.load()
        keep = keep_buckets or set()
        removed = 0
        doomed: list[str] = []
        for name in list(self.buckets):
            if name in keep:
                continue
            bucket = self.buckets.pop(name)
            bucket.close()
            for path in bucket.files():
                self._gone += 1
                grave = str(self.root / f".{path.name}.{os.getpid()}.{self._gone}.gone")
                try:
                    os.rename(str(path), grave)
                    doomed.append(grave)
                except FileNotFoundError:
                    pass
                except OSError:
                    doomed.append(str(path))  # cannot rename: delete in place
            gone = [h for h, spot in self.where.items() if spot[0] == name]
            for h in gone:
                del self.where[h]
            removed += len(gone)
        return removed, doomed

    def close(self) -> None:
        for bucket in self.buckets.values():
            bucket.close()


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


def unlink_all(paths: list[str]) -> None:
    """Delete files, ignoring those already gone (runs on a worker thread)."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
