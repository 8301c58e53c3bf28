"""The source side of a push: scan a local tree into a manifest and serve its chunks.

:func:`scan` walks ``LOCAL_DIR`` (sorted, never following symlinks), cuts every
regular file with content-defined chunking (FastCDC, through the C-accelerated
``pyfastcdc``; measured at ~1.8 GB/s here, against 2.6 MB/s for a pure-Python
gear hash, with SHA-256 at ~1.2 GB/s on top: 200 MB scan in ~0.3 s) and names
each chunk by its SHA-256, so an edit in the middle of a file changes only the
chunks it touches while its neighbours keep their names. Directories, files
and relative symlinks go into the manifest (:mod:`shoal.agent.manifest`, the
format nodes check); sockets, FIFOs and devices are skipped and listed.

With ``pack=True`` (``shoal push -a``), files smaller than
:data:`PACK_FILE_MAX` are concatenated in path order into packs of about
:data:`PACK_RAW` bytes, each zlib-compressed into one chunk: a first
deployment of many small files then moves a few dozen compressed chunks instead
of thousands of tiny ones.

:class:`SourceBackend` serves the scanned chunks to nodes through the same
read-only chunk protocol the agents use (:mod:`shoal.agent.chunkserver`). It
re-reads each chunk from the local file and checks its hash before sending it,
so a file changed after the scan is reported, never served as a lie.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from shoal.agent import manifest as mf
from shoal.agent.chunkserver import Backend
from shoal.errors import ContentError
from shoal.state import State

#: Content-defined chunking parameters (bytes); see DESIGN.md for the measurements.
CHUNK_AVG = 16 * 1024
CHUNK_MIN = 4 * 1024
CHUNK_MAX = 64 * 1024
#: ``-a``: files below this size are packed; packs hold about this many raw bytes.
PACK_FILE_MAX = 256 * 1024
PACK_RAW = 1024 * 1024
PACK_LEVEL = 6


@dataclass(frozen=True)
class ChunkParams:
    avg: int = CHUNK_AVG
    min: int = CHUNK_MIN
    max: int = CHUNK_MAX


@dataclass
class ScannedTree:
    """A scanned tree: its manifest, where every chunk lives, what was skipped."""

    root: Path
    manifest: mf.Manifest
    version: str
    blob: bytes  # the manifest, zlib-compressed: what nodes fetch first
    blob_hash: str
    locations: dict[str, tuple[Path, int, int]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes

    @property
    def chunks(self) -> list[tuple[str, int]]:
        return self.manifest.unique_chunks()


def _chunker(params: ChunkParams) -> object:
    try:
        from pyfastcdc import FastCDC
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ContentError(f"pyfastcdc is not installed: {exc}") from None
    return FastCDC(params.avg, min_size=params.min, max_size=params.max)


def cut_bytes(data: bytes, params: ChunkParams = ChunkParams()) -> list[tuple[str, int]]:
    """Chunks of ``data`` as [(sha256, size)] (for tests and small inputs)."""
    if len(data) <= params.min:
        return [(hashlib.sha256(data).hexdigest(), len(data))] if data else []
    cdc = _chunker(params)
    return [
        (hashlib.sha256(c.data).hexdigest(), c.length)
        for c in cdc.cut_buf(data)  # type: ignore[attr-defined]
    ]


def _cut_file(path: Path, size: int, cdc: object, params: ChunkParams) -> list[tuple[str, int]]:
    if size == 0:
        return []
    if size <= params.min:
        return [(hashlib.sha256(path.read_bytes()).hexdigest(), size)]
    chunks = [
        (hashlib.sha256(c.data).hexdigest(), c.length)
        for c in cdc.cut_file(str(path))  # type: ignore[attr-defined]
    ]
    if sum(n for _, n in chunks) != size:
        raise ContentError(f"{path}: changed while it was being scanned")
    return chunks


#: A file's stamp (size, mtime_ns, ctime_ns, inode) and its chunks, by absolute path.
ScanCache = dict[str, tuple[tuple[int, int, int, int], list[tuple[str, int]]]]


def scan(
    root: Path,
    *,
    pack: bool = False,
    params: ChunkParams = ChunkParams(),
    cache: ScanCache | None = None,
) -> ScannedTree:
    """Scan ``root`` into a manifest (see the module docstring); ContentError on refusal.

    ``cache`` (read and updated) skips re-chunking files whose size, times and
    inode are unchanged since an earlier scan with the same ``params`` (the
    quick check of rsync and git). A file changed without changing its stamp
    is still caught: the source re-hashes every chunk before serving it.
    """
    root = Path(root)
    if not root.is_dir():
        raise ContentError(f"{root}: not a directory")
    cdc = _chunker(params)
    entries: list[mf.Entry] = []
    locations: dict[str, tuple[Path, int, int]] = {}
    skipped: list[str] = []
    packer = _Packer()
    for rel, path, st in _walk(root, skipped):
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entries.append(mf.Entry(rel, "d", mode))
        elif stat.S_ISLNK(st.st_mode):
            entries.append(mf.Entry(rel, "l", 0o777, target=os.readlink(path)))
        elif pack and st.st_size < PACK_FILE_MAX:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ContentError(f"{path}: {exc.strerror}") from None
            entries.append(mf.Entry(rel, "f", mode, len(data), pack=packer.add(data)))
        else:
            stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            hit = cache.get(str(path)) if cache is not None else None
            if hit is not None and hit[0] == stamp:
                chunks = hit[1]
            else:
                try:
                    chunks = _cut_file(path, st.st_size, cdc, params)
                except OSError as exc:
                    raise ContentError(f"{path}: {exc.strerror}") from None
                if cache is not None:
                    cache[str(path)] = (stamp, chunks)
            offset = 0
            for digest, size in chunks:
                locations.setdefault(digest, (path, offset, size))
                offset += size
            entries.append(mf.Entry(rel, "f", mode, offset, chunks))
    packer.close()
    manifest = mf.Manifest(entries, packer.packs)
    try:
        mf.validate(manifest)
    except mf.ManifestError as exc:
        raise ContentError(f"{root}: {exc}") from None
    data = manifest.to_bytes()
    blob = zlib.compress(data, 6)
    blob_hash = hashlib.sha256(blob).hexdigest()
    blobs = dict(packer.blobs)
    blobs[blob_hash] = blob
    return ScannedTree(
        root, manifest, mf.version_of(data), blob, blob_hash, locations, blobs, skipped
    )


def _walk(root: Path, skipped: list[str]) -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, path, lstat) of everything under ``root``, sorted by relative path."""
    out: list[tuple[str, Path, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        base = root / rel_dir if rel_dir else root
        try:
            names = os.listdir(base)
        except OSError as exc:
            raise ContentError(f"{base}: {exc.strerror}") from None
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            path = base / name
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                skipped.append(rel)
                continue
            out.append((rel, path, st))
    out.sort(key=lambda item: item[0])
    return out


class _Packer:
    """Concatenates small files into zlib-compressed packs of about PACK_RAW bytes."""

    def __init__(self) -> None:
        self.packs: list[mf.Pack] = []
        self.blobs: dict[str, bytes] = {}
        self.buffer = bytearray()

    def add(self, data: bytes) -> tuple[int, int]:
        if self.buffer and len(self.buffer) + len(data) > PACK_RAW:
            self.close()
        offset = len(self.buffer)
        self.buffer += data
        return len(self.packs), offset

    def close(self) -> None:
        if not self.buffer:
            return
        blob = zlib.compress(bytes(self.buffer), PACK_LEVEL)
        digest = hashlib.sha256(blob).hexdigest()
        self.packs.append(mf.Pack(digest, len(blob), len(self.buffer)))
        self.blobs[digest] = blob
        self.buffer = bytearray()


CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_scan (
    path TEXT PRIMARY KEY,
    params TEXT NOT NULL,
    stamp TEXT NOT NULL,
    chunks TEXT NOT NULL
);
"""


def load_cache(state: State, root: Path, params: ChunkParams) -> ScanCache:
    """The cached chunks of files under ``root`` (scanned with ``params``)."""
    state.ensure("content_scan", CACHE_SCHEMA)
    prefix = str(Path(root).resolve()) + "/"
    rows = state.db.execute(
        "SELECT path, stamp, chunks FROM content_scan WHERE path >= ? AND path < ? AND params = ?",
        (prefix, prefix[:-1] + "0", _params_key(params)),
    ).fetchall()
    out: ScanCache = {}
    for path, stamp, chunks in rows:
        a, b, c, d = json.loads(stamp)
        out[path] = ((a, b, c, d), [(h, n) for h, n in json.loads(chunks)])
    return out


def save_cache(state: State, cache: ScanCache, params: ChunkParams) -> None:
    state.ensure("content_scan", CACHE_SCHEMA)
    key = _params_key(params)
    with state.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO content_scan(path, params, stamp, chunks) VALUES (?,?,?,?)",
            [(p, key, json.dumps(s), json.dumps(c)) for p, (s, c) in cache.items()],
        )


def _params_key(params: ChunkParams) -> str:
    return f"fastcdc {params.avg} {params.min} {params.max}"


class SourceBackend(Backend):
    """Chunks of a scanned tree, re-read and re-verified on every request."""

    def __init__(self, tree: ScannedTree) -> None:
        self.tree = tree
        self.changed: list[str] = []

    def lookup(self, digest: str) -> bytes | None:
        blob = self.tree.blobs.get(digest)
        if blob is not None:
            return blob
        spot = self.tree.locations.get(digest)
        if spot is None:
            return None
        path, offset, size = spot
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(size)
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() != digest:
            if str(path) not in self.changed:
                self.changed.append(str(path))
            return None
        return data
