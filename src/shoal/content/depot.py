"""The depot: named, versioned packages kept content-addressed on the controller.

``$SHOAL_HOME/depot/chunks/ab/<sha256>`` holds every chunk once (the same
FastCDC chunks and manifests a push uses, :mod:`.scan`), so a new version of a
package stores only the chunks it does not share with any version already
there; each version's compressed manifest is one more chunk. The index lives
in the state database (tables ``depot_versions``, ``depot_deployed``), each
change one transaction; chunks are written (temporary file, rename, one
file-system flush) before the index names them, so the index never points at
a chunk that is not on disk.

A version is named ``NAME@LABEL``: the label is ``--version`` or, without it,
the version id (the manifest's 16 hex digits, the id nodes report). ``@latest``
is the newest put, and a unique prefix of the id works too. Sources
(:meth:`Depot.put`): a local directory (:func:`.scan.scan`), a tarball
(:mod:`.tarsource`, never extracted) or an ``http(s)://`` URL of a tarball
(:mod:`.urlsource`, fetched once, optional SHA-256). :meth:`Depot.tree` gives a
:class:`~.scan.ScannedTree` whose chunks are the store's files, so a push serves
straight from the depot (and still re-hashes each chunk before sending it).

Every push records what it left on each node (:func:`record_deployed`), so
``depot show`` says where each version runs and ``versions`` can name the
depot entry of a node's version. :meth:`Depot.remove` refuses a version a node
still runs, or that a caller-given user (an app's spec) names; :meth:`Depot.gc`
deletes chunks no version references. Puts, removals and collections hold one
lock file, so a collection never deletes the chunks of a put in progress.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal.agent import manifest as mf
from shoal.agent.activate import _sync_fs
from shoal.errors import ContentError, UsageError
from shoal.state import State

from .scan import ChunkParams, ScannedTree, SourceBackend, scan
from .tarsource import read_tar
from .urlsource import fetch, is_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS depot_versions (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version TEXT NOT NULL,
    blob TEXT NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY (name, label)
);
CREATE TABLE IF NOT EXISTS depot_deployed (
    node TEXT NOT NULL,
    dir TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (node, dir)
);
"""


@dataclass(frozen=True)
class DepotVersion:
    """One ``NAME@LABEL`` of the depot."""

    name: str
    label: str
    version: str  # the manifest's id, as nodes report it
    blob: str  # sha256 of the compressed manifest (a chunk of the store)
    created: float
    source: str
    bytes: int
    files: int
    stored: int  # bytes of new chunks this put added to the store

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.label}"


@dataclass(frozen=True)
class PutResult:
    entry: DepotVersion
    new_chunks: int
    new_bytes: int
    existed: bool  # the same content was already stored under this label


@dataclass(frozen=True)
class GcResult:
    chunks: int
    bytes: int


@dataclass(frozen=True)
class Deployment:
    node: str
    dir: str
    version: str
    at: float


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@VERSION`` (``depot:`` prefix allowed; bare NAME is ``@latest``)."""
    text = ref.removeprefix("depot:")
    name, _, label = text.partition("@")
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"bad depot reference {ref!r}: expected NAME@VERSION")
    return name, label or "latest"


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "._+-" for c in name):
        raise UsageError(f"bad depot {what} {name!r}: letters, digits, '._+-' only")
    if name.startswith(".") or name == "latest":
        raise UsageError(f"bad depot {what} {name!r}: reserved")


class Depot:
    """The depot of the state directory ``state`` lives in."""

    def __init__(self, state: State, root: Path | None = None) -> None:
        self.state = state
        self.root = root or Path(state.path).parent / "depot"
        self.chunks = self.root / "chunks"
        state.ensure("depot", SCHEMA)

    # -- the store ---------------------------------------------------------

    def chunk_path(self, digest: str) -> Path:
        return self.chunks / digest[:2] / digest

    def _write_chunk(self, digest: str, data: bytes, written: dict[str, int]) -> None:
        if digest in written:
            return
        path = self.chunk_path(digest)
        if path.exists():
            written[digest] = 0
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{digest}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ContentError(f"depot store {self.chunks}: {exc.strerror or exc}") from None
        written[digest] = len(data)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- put ---------------------------------------------------------------

    def put(
        self,
        source: str,
        name: str,
        label: str | None = None,
        *,
        sha256: str | None = None,
        params: ChunkParams | None = None,
    ) -> PutResult:
        """Store ``source`` (directory, tarball or URL) as ``name@label``."""
        _check_name(name, "name")
        if label is not None:
            _check_name(label, "version")
        written: dict[str, int] = {}
        with self._locked():
            try:
                return self._put(source, name, label, sha256, params or ChunkParams(), written)
            except BaseException:
                self._forget(written)  # a refused source leaves nothing behind
                raise

    def _put(
        self,
        source: str,
        name: str,
        label: str | None,
        sha256: str | None,
        params: ChunkParams,
        written: dict[str, int],
    ) -> PutResult:
        if is_url(source):
            got = fetch(source, self.root / "tmp", sha256)
            try:
                manifest = self._read_tar(got.path, written, params)
            finally:
                got.path.unlink(missing_ok=True)
        elif sha256 is not None:
            raise UsageError("--sha256 checks a URL's download; give an http(s):// URL")
        elif Path(source).is_dir():
            manifest = self._read_dir(Path(source), written, params)
        elif Path(source).is_file():
            manifest = self._read_tar(Path(source), written, params)
        else:
            raise ContentError(f"{source}: no such directory, tarball or URL")
        data = manifest.to_bytes()
        version = mf.version_of(data)
        blob = zlib.compress(data, 6)
        blob_hash = hashlib.sha256(blob).hexdigest()
        self._write_chunk(blob_hash, blob, written)
        label = label or version
        have = self._row(name, label)
        if have is not None and have.version != version:
            raise ContentError(
                f"depot {name}@{label} already holds {have.version}; "
                "give another --version (or depot rm it first)"
            )
        new_bytes = sum(written.values())
        entry = DepotVersion(
            name,
            label,
            version,
            blob_hash,
            time.time(),
            source if is_url(source) else str(Path(source).resolve()),
            manifest.total_bytes,
            sum(1 for e in manifest.entries if e.kind == "f"),
            new_bytes,
        )
        if have is not None:
            return PutResult(have, 0, 0, True)
        _flush(self.chunks)
        with self.state.transaction() as db:
            db.execute(
                "INSERT INTO depot_versions VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    entry.name,
                    entry.label,
                    entry.version,
                    entry.blob,
                    entry.created,
                    entry.source,
                    entry.bytes,
                    entry.files,
                    entry.stored,
                ),
            )
        return PutResult(entry, sum(1 for n in written.values() if n), new_bytes, False)

    def _read_dir(self, root: Path, written: dict[str, int], params: ChunkParams) -> mf.Manifest:
        tree = scan(root, params=params)
        if tree.skipped:
            raise ContentError(
                f"{root}: holds sockets, FIFOs or devices: {', '.join(tree.skipped[:5])}"
            )
        backend = SourceBackend(tree)
        for digest, _ in tree.chunks:
            if digest in written or self.chunk_path(digest).exists():
                written.setdefault(digest, 0)
                continue
            data = backend.lookup(digest)
            if data is None:
                raise ContentError(f"{backend.changed[-1]}: changed while it was being stored")
            self._write_chunk(digest, data, written)
        return tree.manifest

    def _read_tar(self, path: Path, written: dict[str, int], params: ChunkParams) -> mf.Manifest:
        return read_tar(path, lambda h, b: self._write_chunk(h, b, written), params)

    def _forget(self, written: dict[str, int]) -> None:
        for digest, n in written.items():
            if n:
                self.chunk_path(digest).unlink(missing_ok=True)
        written.clear()

    # -- reading -----------------------------------------------------------

    def _row(self, name: str, label: str) -> DepotVersion | None:
        row = self.state.db.execute(
            "SELECT * FROM depot_versions WHERE name=? AND label=?", (name, label)
        ).fetchone()
        return _entry(row) if row is not None else None

    def entries(self, name: str | None = None) -> list[DepotVersion]:
        """Every version (of ``name``), oldest first."""
        if name is None:
            rows = self.state.db.execute("SELECT * FROM depot_versions ORDER BY name, created")
        else:
            rows = self.state.db.execute(
                "SELECT * FROM depot_versions WHERE name=? ORDER BY created", (name,)
            )
        return [_entry(r) for r in rows]

    def resolve(self, ref: str) -> DepotVersion:
        """The entry ``ref`` (``NAME@LABEL``, ``@latest``, an id prefix) names."""
        name, label = parse_ref(ref)
        versions = self.entries(name)
        if not versions:
            known = ", ".join(sorted({v.name for v in self.entries()})) or "none"
            raise ContentError(f"depot has no package {name!r} (known: {known})")
        if label == "latest":
            return versions[-1]
        for v in versions:
            if v.label == label:
                return v
        ids = {v.version: v for v in versions if v.version.startswith(label)}
        if len(ids) == 1:
            return next(iter(ids.values()))
        labels = ", ".join(v.label for v in versions)
        what = "is ambiguous" if ids else "is not a version"
        raise ContentError(f"depot {name}@{label} {what} (versions: {labels})")

    def tree(self, ref: str) -> tuple[DepotVersion, ScannedTree]:
        """The entry and a push source serving its chunks from the store."""
        entry = self.resolve(ref)
        blob = self._read_chunk(entry.blob, entry)
        manifest = mf.parse(zlib.decompress(blob))
        locations: dict[str, tuple[Path, int, int]] = {}
        for digest, n in manifest.unique_chunks():
            path = self.chunk_path(digest)
            if not path.exists():
                raise ContentError(
                    f"depot {entry.ref}: chunk {digest[:16]} is missing from {self.chunks} "
                    "(put the package again)"
                )
            locations[digest] = (path, 0, n)
        scanned = ScannedTree(
            self.root, manifest, entry.version, blob, entry.blob, locations, {entry.blob: blob}
        )
        return entry, scanned

    def _read_chunk(self, digest: str, entry: DepotVersion) -> bytes:
        try:
            data = self.chunk_path(digest).read_bytes()
        except OSError as exc:
            raise ContentError(f"depot {entry.ref}: manifest unreadable: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ContentError(f"depot {entry.ref}: manifest chunk {digest[:16]} is corrupt")
        return data

    def deployments(self, version: str | None = None) -> list[Deployment]:
        """What pushes left on nodes (of ``version``), by node and directory."""
        sql = "SELECT node, dir, version, at FROM depot_deployed"
        rows = (
            self.state.db.execute(sql + " WHERE version=? ORDER BY node, dir", (version,))
            if version
            else self.state.db.execute(sql + " ORDER BY node, dir")
        )
        return [Deployment(r[0], r[1], r[2], r[3]) for r in rows]

    # -- removal -----------------------------------------------------------

    def remove(self, ref: str, users: Mapping[str, Sequence[str]] | None = None) -> DepotVersion:
        """Drop ``ref`` from the index (chunks stay until :meth:`gc`).

        Refused while a node runs its content (and no other entry keeps that
        content) or while ``users`` (version id → who, e.g. ``app web``) names it.
        """
        with self._locked():
            entry = self.resolve(ref)
            others = [v for v in self.entries() if v.version == entry.version and v != entry]
            if not others:
                who = [f"{d.node}:{d.dir}" for d in self.deployments(entry.version)]
                who += list((users or {}).get(entry.version, ()))
                if who:
                    more = f" and {len(who) - 5} more" if len(who) > 5 else ""
                    raise ContentError(
                        f"depot {entry.ref} is in use by {', '.join(who[:5])}{more}; "
                        "push another version there first"
                    )
            with self.state.transaction() as db:
                db.execute(
                    "DELETE FROM depot_versions WHERE name=? AND label=?", (entry.name, entry.label)
                )
        return entry

    def gc(self) -> GcResult:
        """Delete every stored chunk no version's manifest references."""
        with self._locked():
            keep: set[str] = set()
            for entry in self.entries():
                keep.add(entry.blob)
                blob = self._read_chunk(entry.blob, entry)
                keep.update(h for h, _ in mf.parse(zlib.decompress(blob)).unique_chunks())
            count = freed = 0
            if not self.chunks.is_dir():
                return GcResult(0, 0)
            for sub in self.chunks.iterdir():
                for path in sub.iterdir():
                    if path.name not in keep:
                        freed += path.stat().st_size
                        path.unlink()
                        count += 1
        return GcResult(count, freed)


def _entry(row: Mapping[str, object]) -> DepotVersion:
    return DepotVersion(*(row[k] for k in DepotVersion.__dataclass_fields__))  # type: ignore[arg-type]


def _flush(path: Path) -> None:
    """One flush of the file system holding the store before the index names new chunks."""
    if path.exists():
        _sync_fs(path)


def record_deployed(state: State, remote_dir: str, versions: Mapping[str, str]) -> None:
    """Note that ``remote_dir`` on each node now holds ``versions[node]``."""
    if not versions:
        return
    state.ensure("depot", SCHEMA)
    now = time.time()
    with state.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO depot_deployed(node, dir, version, at) VALUES (?,?,?,?)",
            [(node, remote_dir, v, now) for node, v in versions.items()],
        )


def origins(state: State, versions: Sequence[str]) -> dict[str, str]:
    """version id → the depot entries (``NAME@LABEL``, comma-joined) holding it."""
    state.ensure("depot", SCHEMA)
    out: dict[str, list[str]] = {}
    for v in set(versions):
        for row in state.db.execute(
            "SELECT name, label FROM depot_versions WHERE version=? ORDER BY created", (v,)
        ):
            out.setdefault(v, []).append(f"{row[0]}@{row[1]}")
    return {v: ", ".join(refs) for v, refs in out.items()}
