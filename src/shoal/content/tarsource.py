"""A tarball as a push source: members read into a manifest, never extracted to disk.

:func:`read_tar` streams ``.tar``, ``.tar.gz``, ``.tar.bz2``, ``.tar.xz`` and
``.tar.zst`` (zstd through the ``zstandard`` package; the compression is told
from the first bytes, not the name) member by member with :mod:`tarfile`'s
stream mode, cuts every regular file with the same FastCDC parameters as
:func:`.scan.scan` and hands each chunk to a sink (the depot's store), so the
manifest is the one a directory holding the same tree would give.

A member is refused with its name, before anything is recorded, when it is
absolute, has a ``..`` (or empty) component, is a device, a FIFO or another
special file, is a hard link to something that is not an earlier regular file
of the archive, or is a symlink that leads out of the tree (the rules of
:mod:`shoal.agent.manifest`, :func:`~shoal.agent.manifest.check_link`). A
leading ``./`` is dropped; directories an archive leaves implicit are added
(mode 0755); a name given twice is refused (which one would a node get?).
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from shoal.agent import manifest as mf
from shoal.errors import ContentError

from .scan import ChunkParams, _chunker

#: Called with (sha256, bytes) for every chunk read (the same chunk may come twice).
ChunkSink = Callable[[str, bytes], None]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def read_tar(path: Path, sink: ChunkSink, params: ChunkParams | None = None) -> mf.Manifest:
    """The manifest of the tarball at ``path``; every chunk goes to ``sink``.

    ContentError names the archive (and the member) on any refusal.
    """
    chunking = params or ChunkParams()
    try:
        with open(path, "rb") as raw:
            head = raw.read(4)
            raw.seek(0)
            if head == ZSTD_MAGIC:
                return _read_stream(path, _zstd_reader(path, raw), sink, chunking)
            return _read_stream(path, raw, sink, chunking)
    except OSError as exc:
        raise ContentError(f"{path}: {exc.strerror or exc}") from None


def _zstd_reader(path: Path, raw: IO[bytes]) -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        raise ContentError(
            f"{path}: a zstd archive needs the zstandard package (pip install zstandard)"
        ) from None
    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw)
    return reader


class _Builder:
    """Entries by normalised name, checked as they come."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.entries: dict[str, mf.Entry] = {}
        self.root_mode = 0o755

    def refuse(self, member: str, why: str) -> ContentError:
        return ContentError(f"{self.archive}: member {member!r}: {why}")

    def name(self, member: tarfile.TarInfo) -> str | None:
        """The member's relative path (None for the top itself)."""
        raw = member.name
        if raw.startswith("/"):
            raise self.refuse(raw, "absolute path")
        name = raw
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        if name in ("", "."):
            return None
        try:
            mf.check_path(name)
        except mf.ManifestError as exc:
            raise self.refuse(raw, str(exc).split(": ", 1)[-1]) from None
        return name

    def add(self, raw: str, entry: mf.Entry) -> None:
        parts = entry.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            have = self.entries.get(parent)
            if have is None:
                self.entries[parent] = mf.Entry(parent, "d", 0o755)
            elif have.kind != "d":
                raise self.refuse(raw, f"its parent {parent!r} is not a directory")
        have = self.entries.get(entry.path)
        if have is not None and not (have.kind == entry.kind == "d"):
            raise self.refuse(raw, "appears twice in the archive")
        self.entries[entry.path] = entry

    def manifest(self) -> mf.Manifest:
        entries = [self.entries[k] for k in sorted(self.entries)]
        manifest = mf.Manifest(entries, [], self.root_mode)
        try:
            mf.validate(manifest)
        except mf.ManifestError as exc:
            raise ContentError(f"{self.archive}: member {exc}") from None
        return manifest


def _read_stream(
    path: Path, fileobj: IO[bytes], sink: ChunkSink, params: ChunkParams
) -> mf.Manifest:
    cdc = _chunker(params)
    out = _Builder(path)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as archive:
            for member in archive:
                _member(out, archive, member, cdc, sink, params)
    except tarfile.ReadError as exc:
        raise ContentError(f"{path}: not a tar archive or broken ({exc})") from None
    except tarfile.TarError as exc:
        raise ContentError(f"{path}: broken archive: {exc}") from None
    except (EOFError, ValueError) as exc:  # a truncated compressed stream
        raise ContentError(f"{path}: broken archive: {exc}") from None
    return out.manifest()


def _member(
    out: _Builder,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    cdc: Any,
    sink: ChunkSink,
    params: ChunkParams,
) -> None:
    raw = member.name
    mode = stat.S_IMODE(member.mode)
    if (
        member.isdev()
        or member.isfifo()
        or not (member.isreg() or member.isdir() or member.issym() or member.islnk())
    ):
        what = "a FIFO" if member.isfifo() else "a device or special file"
        raise out.refuse(raw, f"is {what}")
    name = out.name(member)
    if name is None:
        if not member.isdir():
            raise out.refuse(raw, "names the top of the tree but is not a directory")
        out.root_mode = mode
        return
    if member.isdir():
        out.add(raw, mf.Entry(name, "d", mode))
    elif member.issym():
        out.add(raw, mf.Entry(name, "l", 0o777, target=member.linkname))
    elif member.islnk():
        target = member.linkname
        while target.startswith("./"):
            target = target[2:]
        first = out.entries.get(target)
        if first is None or first.kind != "f":
            raise out.refuse(raw, f"hard link to {member.linkname!r}, not an earlier file")
        out.add(raw, mf.Entry(name, "f", mode, first.size, list(first.chunks)))
    else:
        handle = archive.extractfile(member)
        if handle is None:  # pragma: no cover - isreg() members always have data
            raise out.refuse(raw, "has no data")
        chunks = _cut(handle, member.size, cdc, sink, params)
        if sum(n for _, n in chunks) != member.size:
            raise out.refuse(raw, "shorter than its header says (truncated archive)")
        out.add(raw, mf.Entry(name, "f", mode, member.size, chunks))


def _cut(
    handle: IO[bytes], size: int, cdc: Any, sink: ChunkSink, params: ChunkParams
) -> list[tuple[str, int]]:
    if size <= params.min:
        data = handle.read()
        if not data:
            return []
        digest = hashlib.sha256(data).hexdigest()
        sink(digest, data)
        return [(digest, len(data))]
    chunks = []
    for c in cdc.cut_stream(handle):
        data = bytes(c.data)
        digest = hashlib.sha256(data).hexdigest()
        sink(digest, data)
        chunks.append((digest, c.length))
    return chunks
