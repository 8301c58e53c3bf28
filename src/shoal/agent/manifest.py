"""Content manifests: what a version of a pushed tree is, and the rules it must obey.

Shared by the controller (which builds manifests, :mod:`shoal.content.scan`) and
the node agent (which checks them before writing anything), so it is standard
library only and runs on Python >= 3.9.

A manifest is canonical JSON (keys sorted, no spaces, UTF-8)::

    {"format": 2, "m": 448,
     "entries": [{"p": "bin", "t": "d", "m": 493},
                 {"p": "bin/run", "t": "f", "m": 493, "n": 70000,
                  "c": [["<sha256>", 65536], ["<sha256>", 4464]]},
                 {"p": "bin/sh", "t": "l", "l": "run"},
                 {"p": "etc/a.conf", "t": "f", "m": 420, "n": 12, "k": [0, 0]}],
     "packs": [["<sha256>", 2311, 4096]]}

Entries are sorted by path; each file is the concatenation of its chunks (each
named by the SHA-256 of its bytes), or, with ``k`` = [pack, offset], a slice of
a *pack*: a zlib-compressed chunk of many small files (``shoal push -a``),
listed in ``packs`` as [sha256 of the compressed bytes, compressed size, raw
size]. The version id is the first 16 hex digits of the SHA-256 of the
canonical JSON, so the same tree always has the same id on every node.
``m`` is the mode of the tree's top directory (``REMOTE_DIR`` itself), so a
0700 tree stays 0700 on the nodes. Format 1 had no ``m`` and deployed the top
at 0755: it is still read (kept versions' manifests, for chunk reuse), and an
agent that knows only format 1 refuses a format-2 manifest rather than widen
its top directory.

Safety rules, checked by :func:`parse` wherever a manifest is read (a node
never trusts the controller's checks): paths are relative, made of plain
components (no ``..``, ``.``, empty parts, NUL or backslash-free tricks) that are
valid Unicode (a lone surrogate, Python's stand-in for a byte that is not
UTF-8, would make two different strings one file name), unique,
and every entry's parent is a directory entry of the same manifest, so nothing
is ever written through a symlink; symlink targets are relative and, resolved
inside the manifest's own tree (following its other symlinks), never leave it;
sizes agree with the chunks. :func:`file_mode` drops setuid/setgid unless the
push asked for them.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from typing import Any

FORMAT = 2
#: Formats :func:`parse` reads; format 1 lacks the top directory's mode (0755 then).
FORMATS = (1, 2)
OLD_ROOT_MODE = 0o755
#: Longest path and symlink target accepted, and deepest symlink chain followed.
MAX_PATH = 4096
MAX_LINK_HOPS = 40
_HASH = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9a-f]{16}$")
_HASHES = re.compile(r"[0-9a-f]{64}(?:\n[0-9a-f]{64})*")  # ids joined by newlines

Chunk = tuple[str, int]


class ManifestError(ValueError):
    """A manifest that must not be deployed; the message names the entry."""


def is_hash(text: object) -> bool:
    return isinstance(text, str) and bool(_HASH.match(text))


def is_version(text: object) -> bool:
    return isinstance(text, str) and bool(_VERSION.match(text))


@dataclass
class Entry:
    path: str
    kind: str  # "f" file, "d" directory, "l" symlink
    mode: int = 0o644
    size: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    target: str = ""
    pack: tuple[int, int] | None = None  # (pack index, offset in the raw pack)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "d":
            return {"p": self.path, "t": "d", "m": self.mode}
        if self.kind == "l":
            return {"p": self.path, "t": "l", "l": self.target}
        out: dict[str, Any] = {"p": self.path, "t": "f", "m": self.mode, "n": self.size}
        if self.pack is not None:
            out["k"] = [self.pack[0], self.pack[1]]
        else:
            out["c"] = [[h, n] for h, n in self.chunks]
        return out


@dataclass
class Pack:
    hash: str
    size: int  # compressed bytes (what moves)
    raw: int  # bytes after decompression


@dataclass
class Manifest:
    entries: list[Entry] = field(default_factory=list)
    packs: list[Pack] = field(default_factory=list)
    root_mode: int = OLD_ROOT_MODE  # the top directory's mode

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same tree gives the same bytes, hence the same version."""
        value = {
            "format": FORMAT,
            "m": self.root_mode,
            "entries": [e.to_json() for e in self.entries],
            "packs": [[p.hash, p.size, p.raw] for p in self.packs],
        }
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def version(self) -> str:
        return version_of(self.to_bytes())

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "f")

    def unique_chunks(self) -> list[Chunk]:
        """Every chunk a node needs, once, in first-use order (packs included).

        The controller and the nodes number chunks by their index in this list.
        """
        seen: dict[str, int] = {}
        out: list[Chunk] = []
        for e in self.entries:
            for h, n in e.chunks:
                if h not in seen:
                    seen[h] = n
                    out.append((h, n))
        for p in self.packs:
            if p.hash not in seen:
                seen[p.hash] = p.size
                out.append((p.hash, p.size))
        return out

    def chunk_locations(self) -> dict[str, tuple[str, int, int]]:
        """chunk hash → (path, offset, size) of one place it sits in this version's files."""
        where: dict[str, tuple[str, int, int]] = {}
        for e in self.entries:
            offset = 0
            for h, n in e.chunks:
                if h not in where:
                    where[h] = (e.path, offset, n)
                offset += n
        return where


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_mode(mode: int, allow_setuid: bool = False) -> int:
    """Permission bits to give a deployed file or directory."""
    bits = stat.S_IMODE(mode)
    if not allow_setuid:
        bits &= ~(stat.S_ISUID | stat.S_ISGID)
    return bits


# -- parsing and validation ---------------------------------------------------


def parse(data: bytes) -> Manifest:
    """Decode and validate a manifest; ManifestError says what is wrong and where."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if (
        not isinstance(value, dict)
        or type(value.get("format")) is not int
        or value["format"] not in FORMATS
    ):
        raise ManifestError(f"manifest format is not one of {FORMATS}")
    root_mode = OLD_ROOT_MODE if value["format"] == 1 else _int(value.get("m"), "mode", "top")
    raw_packs = value.get("packs", [])
    raw_entries = value.get("entries")
    if not isinstance(raw_entries, list) or not isinstance(raw_packs, list):
        raise ManifestError("manifest needs lists 'entries' and 'packs'")
    packs = [_pack(p, i) for i, p in enumerate(raw_packs)]
    manifest = Manifest([_entry(e, packs) for e in raw_entries], packs, root_mode)
    validate(manifest)
    return manifest


def _int(value: object, what: str, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{path!r}: {what} must be a non-negative integer")
    return value


def _pack(value: object, index: int) -> Pack:
    if not (isinstance(value, list) and len(value) == 3 and is_hash(value[0])):
        raise ManifestError(f"pack {index}: must be [sha256, size, raw size]")
    return Pack(value[0], _int(value[1], "size", f"pack {index}"), _int(value[2], "raw", ""))


def _entry(value: object, packs: list[Pack]) -> Entry:
    if not isinstance(value, dict):
        raise ManifestError("manifest entry is not an object")
    path = value.get("p")
    if not isinstance(path, str):
        raise ManifestError("manifest entry without a path")
    kind = value.get("t")
    if kind == "d":
        return Entry(path, "d", _int(value.get("m", 0o755), "mode", path))
    if kind == "l":
        target = value.get("l")
        if not isinstance(target, str):
            raise ManifestError(f"{path!r}: symlink without a target")
        return Entry(path, "l", 0o777, target=target)
    if kind != "f":
        raise ManifestError(f"{path!r}: unknown entry type {kind!r}")
    mode = _int(value.get("m", 0o644), "mode", path)
    size = _int(value.get("n"), "size", path)
    if "k" in value:
        k = value["k"]
        if not (isinstance(k, list) and len(k) == 2):
            raise ManifestError(f"{path!r}: pack reference must be [pack, offset]")
        index, offset = _int(k[0], "pack", path), _int(k[1], "pack offset", path)
        if index >= len(packs) or offset + size > packs[index].raw:
            raise ManifestError(f"{path!r}: pack reference outside its pack")
        return Entry(path, "f", mode, size, pack=(index, offset))
    raw = value.get("c", [])
    if not isinstance(raw, list):
        raise ManifestError(f"{path!r}: chunk must be [sha256, size]")
    chunks: list[Chunk] = []
    for c in raw:  # the hot loop of a big manifest: 10,000 chunks per 200 MB
        if type(c) is not list or len(c) != 2 or type(c[0]) is not str or len(c[0]) != 64:
            raise ManifestError(f"{path!r}: chunk must be [sha256, size]")
        n = c[1]
        if type(n) is not int or n < 0:
            _int(n, "chunk size", path)  # raises with the usual message
        chunks.append((c[0], n))
    if chunks and _HASHES.fullmatch("\n".join(h for h, _ in chunks)) is None:
        raise ManifestError(f"{path!r}: chunk must be [sha256, size]")
    if sum(n for _, n in chunks) != size:
        raise ManifestError(f"{path!r}: chunk sizes do not add up to the file size {size}")
    return Entry(path, "f", mode, size, chunks)


def check_path(path: str) -> list[str]:
    """The components of a safe relative path; ManifestError otherwise."""
    if not path or len(path) > MAX_PATH:
        raise ManifestError(f"{path!r}: empty or too long path")
    if "\0" in path:
        raise ManifestError(f"{path!r}: NUL in path")
    _check_unicode(path, path, "path")
    if path.startswith("/"):
        raise ManifestError(f"{path!r}: absolute path")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ManifestError(f"{path!r}: '..', '.' or empty component in path")
    return parts


def _check_unicode(path: str, text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{path!r}: {what} is not valid UTF-8") from None


def validate(manifest: Manifest) -> None:
    """Apply every safety rule of the module docstring (raises ManifestError)."""
    kinds: dict[str, str] = {}
    targets: dict[str, str] = {}
    previous = ""
    for e in manifest.entries:
        parts = check_path(e.path)
        if e.path <= previous:
            raise ManifestError(f"{e.path!r}: entries out of order or duplicated")
        previous = e.path
        parent = "/".join(parts[:-1])
        if parent and kinds.get(parent) != "d":
            raise ManifestError(f"{e.path!r}: parent {parent!r} is not a directory of the tree")
        kinds[e.path] = e.kind
        if e.kind == "l":
            targets[e.path] = e.target
    for path, target in targets.items():
        check_link(path, target, kinds, targets)


def check_link(path: str, target: str, kinds: dict[str, str], targets: dict[str, str]) -> None:
    """Resolve ``path``'s target inside the tree; ManifestError if it can leave it."""
    if not target or len(target) > MAX_PATH or "\0" in target:
        raise ManifestError(f"{path!r}: bad symlink target")
    _check_unicode(path, target, "symlink target")
    if target.startswith("/"):
        raise ManifestError(f"{path!r}: symlink to an absolute path {target!r}")
    hops = 0
    # resolve the components of target relative to the link's directory
    base = path.split("/")[:-1]
    pending = [p for p in target.split("/") if p not in ("", ".")]
    current: list[str] = list(base)
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not current:
                raise ManifestError(f"{path!r}: symlink {target!r} escapes the tree")
            current.pop()
            continue
        candidate = "/".join([*current, part])
        if kinds.get(candidate) == "l":
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise ManifestError(f"{path!r}: symlink loop through {candidate!r}")
            inner = targets[candidate]
            if inner.startswith("/"):
                raise ManifestError(f"{candidate!r}: symlink to an absolute path")
            pending = [p for p in inner.split("/") if p not in ("", ".")] + pending
            continue
        current.append(part)
