"""Central log collection: every node's logs in the state directory, nothing lost or twice.

Theory of operation. For each selected node, over one agent connection
(:mod:`shoal.agent.logship` on the node side): ``logs.list``, then for every
file (programs' logs, rotated ones included, and steps' logs) the bytes after
the controller's offset of that file, in ranges the node gzip-compresses and
checksums (sha256 of the raw range). Each range is decompressed and checked
here, then written as one *segment* (the gzip bytes as sent) with write to a
temporary name + fsync + rename + fsync of the directory, and only then is the
offset advanced, in the same transaction that registers the segment. A
controller killed at any point leaves either a counted segment or one that is
not registered (a later run writes the same range under the same name); a
node killed mid-collect loses nothing already committed.

A file is known by its inode (rotation renames files; the inode stays) plus
the sha256 of its first bytes, which the node checks on every read, so a
rotated file is neither sent again under its new name nor skipped, and a new
file that got an old inode is collected from its start. Once a rotated file
is collected whole, the controller re-reads its segments from the store,
hashes them, records that (``acked``, committed before the node hears of it,
so no file leaves a node unrecorded even if the disk fills right after), and
acknowledges (``logs.ack``): the node may then drop it when
enough newer ones exist, or at once with ``free=True`` — never before, and
never unless the node's own size and sha256 of the file are exactly those.

Store layout: ``<state dir>/logs/<node>/<stream>/<file id>/<start>.gz``
(``stream``: the program's name, or ``steps/<step id>``). Tables (owned here)::

    log_files(id PK, node, stream, ino, head_len, head_sha, offset, rotated,
              acked, freed, gone, first_seen, last_seen)
    log_segments(file_id, start, length, stored, sha256, t, written)

Write time. ``t`` is when the controller stored a segment; ``written`` is
when its bytes were written on the node: the file's mtime taken by the node
*after* reading the range (so no byte of it was written later), moved onto
the controller's clock by the node's clock offset seen in that answer (the
node's ``now`` against the controller's on arrival: off by the one-way
latency, milliseconds). :func:`lines` with ``since`` keeps a line when the
segment that ends it has ``written >= since``: never a line written at or
after ``since`` is missed; a line written before may show when its segment
was still being written after ``since`` (the span of one collected range: at
most one collection interval of a live file; a rotated file's ranges all
carry the moment it was last written). Leading timestamps in lines are not
parsed: programs' output has no format Shoal can rely on (or a time zone),
while the node's mtime is always there. Rows from before this column
(``written`` NULL) count their ``t``.

Retention (:func:`prune`: by total size, by age, or both; whole files, the
least recently written first) deletes only files the node no longer needs the
store for: ``acked`` ones (stored whole, verified, the node told) and ``gone``
ones (no longer on the node). "Nothing lost" means that no byte leaves the
store except by the operator's budget, and the budget never takes a file not
yet acked: a live file, or a rotated one not yet verified whole, keeps every
segment, because its acknowledgement hashes the whole file from the store (a
pruned head would be a gap that the ack refuses, so the node would keep the
file until its own budget dropped it uncollected). A store over its budget
with only such files stays over it, and :class:`Pruned` says by how much
(``over``); the rows of pruned files still on a node stay, so they are not
collected again.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from shoal.agentlink.agentclient import AgentClient
from shoal.agentlink.fleet import AgentOptions, AgentOutcome, Write, each_agent
from shoal.errors import AgentError, LocalError, StateError
from shoal.fanout.results import NodeOutcome, Results
from shoal.logsetup import logger
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Transport

log = logger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_files (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    stream TEXT NOT NULL,
    ino INTEGER NOT NULL,
    head_len INTEGER NOT NULL,
    head_sha TEXT NOT NULL,
    offset INTEGER NOT NULL DEFAULT 0,
    rotated INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    freed INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS log_files_node ON log_files(node, gone);
CREATE TABLE IF NOT EXISTS log_segments (
    file_id INTEGER NOT NULL REFERENCES log_files(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    t REAL NOT NULL,
    written REAL,
    PRIMARY KEY (file_id, start)
);
"""

#: Bytes of a file's start whose sha256 tells it from a later file with its inode.
HEAD_BYTES = 256


@dataclass
class CollectOptions:
    """What to collect: ``app`` limits to one application's programs and steps;
    ``free`` deletes rotated files on the nodes once stored and verified."""

    app: str | None = None
    free: bool = False
    chunk: int = 1 << 20


@dataclass
class Collected:
    """One node's collection: files seen, ranges stored, bytes, rotated files freed, and
    the node's logs that cannot be written now (``path: error, N bytes of output lost``)."""

    files: int = 0
    segments: int = 0
    raw: int = 0
    stored: int = 0
    acked: int = 0
    freed: list[str] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "segments": self.segments,
            "bytes": self.raw,
            "stored": self.stored,
            "acked": self.acked,
            "freed": self.freed,
            "write_errors": self.write_errors,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Collected:
        """The inverse of :meth:`to_json` (a node's record from the service)."""
        return cls(
            files=int(record["files"]),
            segments=int(record["segments"]),
            raw=int(record["bytes"]),
            stored=int(record["stored"]),
            acked=int(record["acked"]),
            freed=list(record["freed"]),
            write_errors=list(record["write_errors"]),
        )


@contextmanager
def _tx(
    st: State, node: str, outcome: str = "the node keeps every file not yet stored"
) -> Iterator[sqlite3.Connection]:
    """:meth:`State.transaction`, a failed commit (a full disk) one LocalError line that
    ends with ``outcome``: what the node did or did not do meanwhile."""
    try:
        with st.transaction() as db:
            yield db
    except sqlite3.Error as exc:
        with suppress(sqlite3.Error):
            st.db.execute("ROLLBACK")
        raise LocalError(
            f"cannot record collected logs in {st.path}: {exc}; {outcome}", node=node
        ) from None


class _Writes:
    """Where one collection's writes go: at once on ``st`` (the CLI), or through
    ``write`` (the service's writer thread: :data:`shoal.agentlink.fleet.Write`) with
    segment files written in a worker thread, so the service's loop never waits for
    SQLite's lock or an fsync. Reads stay on ``st`` (what the writer committed)."""

    def __init__(self, st: State, write: Write | None) -> None:
        self.st = st
        self.write = write

    async def tx(
        self,
        node: str,
        fn: Callable[[sqlite3.Connection], T],
        outcome: str = "the node keeps every file not yet stored",
    ) -> T:
        """``fn(db)`` in one transaction, committed when this returns (see :func:`_tx`)."""
        if self.write is None:
            with _tx(self.st, node, outcome) as db:
                return fn(db)

        def job(state: State) -> T:
            with state.transaction() as db:
                return fn(db)

        try:
            done: T = await asyncio.wrap_future(self.write(job))
        except (StateError, sqlite3.Error) as exc:
            raise LocalError(
                f"cannot record collected logs in {self.st.path}: {exc}; {outcome}", node=node
            ) from None
        return done

    async def segment(self, node: str, row: dict[str, Any], start: int, data: str) -> int:
        if self.write is None:
            return _write_segment(self.st, node, row, start, data)
        return await asyncio.to_thread(_write_segment, self.st, node, row, start, data)


def ensure(state: State) -> None:
    state.ensure("logcollect", SCHEMA)
    columns = {r[1] for r in state.db.execute("PRAGMA table_info(log_segments)")}
    if "written" not in columns:  # a store made before write times were kept
        with state.transaction() as db:
            db.execute("ALTER TABLE log_segments ADD COLUMN written REAL")


def store_dir(state: State) -> Path:
    return state.path.parent / "logs"


async def collect_async(
    nodes: Sequence[Node],
    options: CollectOptions | None = None,
    agent_options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    write: Write | None = None,
) -> Results[AgentOutcome]:
    """Collect the logs of every node; each outcome's value is a :class:`Collected`.
    ``write``: the service's writer (every write through it, see :class:`_Writes`)."""
    opts = options or CollectOptions()
    with opened(state) as st:
        if write is None:
            ensure(st)
        else:
            await asyncio.wrap_future(write(ensure))
        step = partial(_collect_node, opts=opts, write=write)
        return await each_agent(nodes, step, agent_options, transport=transport, state=st)


def _wanted(stream: str, app: str | None) -> bool:
    if app is None:
        return True
    name = stream[len("steps/") :] if stream.startswith("steps/") else stream
    return name.startswith(app + ".")


async def _collect_node(
    client: AgentClient,
    node: Node,
    st: State,
    ao: AgentOptions,
    *,
    opts: CollectOptions,
    write: Write | None,
) -> AgentOutcome:
    done = Collected()
    w = _Writes(st, write)
    rows = {
        int(r["ino"]): dict(r)
        for r in st.db.execute("SELECT * FROM log_files WHERE node = ? AND gone = 0", (node.name,))
    }
    known = [[ino, r["head_len"], r["head_sha"]] for ino, r in rows.items()]
    listing = (await client.call("logs.list", timeout=ao.call_timeout, known=known))["files"]
    same = {int(f["ino"]) for f in listing if f.get("same")}
    gone = [r["id"] for ino, r in rows.items() if ino not in same]  # deleted, or a new file
    if gone:
        marks = [(i,) for i in gone]
        await w.tx(node.name, lambda db: db.executemany(GONE, marks))
    rows = {ino: r for ino, r in rows.items() if ino in same}
    for entry in listing:
        if not _wanted(entry["stream"], opts.app):
            continue
        done.files += 1
        if entry.get("write_error"):
            where = f"{ao.home.rstrip('/')}/logs/{entry['file']}"
            problem = f"{where}: {entry['write_error']}, {entry['lost']} bytes of output lost"
            done.write_errors.append(problem)
            log.warning("%s: cannot write %s", node.name, problem)
        row = rows.get(int(entry["ino"]))
        if row is not None and row["stream"] != entry["stream"]:
            await _mark_gone(w, node.name, row["id"])
            row = None
        row = await _pull_file(client, node, w, ao, opts, entry, row, done)
        if row is not None and entry["rotated"]:
            await _acknowledge(client, node, w, ao, opts, entry, row, done)
    return NodeOutcome(node.name, value=done)


GONE = "UPDATE log_files SET gone = 1 WHERE id = ?"


async def _mark_gone(w: _Writes, node: str, file_id: int) -> None:
    await w.tx(node, lambda db: db.execute(GONE, (file_id,)))


async def _pull_file(
    client: AgentClient,
    node: Node,
    w: _Writes,
    ao: AgentOptions,
    opts: CollectOptions,
    entry: dict[str, Any],
    row: dict[str, Any] | None,
    done: Collected,
) -> dict[str, Any] | None:
    """Store the file's bytes after the row's offset; the row (made at the first bytes)."""
    offset = int(row["offset"]) if row else 0
    while offset < int(entry["size"]):  # what the listing saw; a later run gets the rest
        args: dict[str, Any] = {
            "file": entry["file"],
            "ino": int(entry["ino"]),
            "offset": offset,
            "max": opts.chunk,
        }
        if row is not None:
            args["head"] = [row["head_len"], row["head_sha"]]
        try:
            page = await client.call("logs.read", timeout=ao.call_timeout, **args)
        except AgentError as exc:
            if "is gone" in str(exc):
                return row  # rotated away by the budget, or freed: its row goes next run
            raise
        if page.get("mismatch"):
            if row is not None:
                await _mark_gone(w, node.name, row["id"])  # a new file on an old inode
            row, offset = None, 0
            continue
        raw = _verified(page, node.name, entry["file"])
        if not raw:
            break
        if row is None:
            row = await w.tx(node.name, partial(new_row, node=node.name, entry=entry, raw=raw))
        now = time.time()
        written = _written(page, now)
        stored = await w.segment(node.name, row, offset, page["data"])
        segment = (row["id"], offset, len(raw), stored, page["sha256"], now, written)
        moved = (offset + len(raw), int(bool(page["rotated"])), now, row["id"])
        await w.tx(node.name, partial(_advance, segment=segment, moved=moved))
        offset += len(raw)
        row["offset"] = offset
        done.segments += 1
        done.raw += len(raw)
        done.stored += stored
    return row


def _written(page: dict[str, Any], arrived: float) -> float | None:
    """When the range's bytes were last written, on the controller's clock (None: an
    agent that does not say)."""
    if not isinstance(page.get("written"), (int, float)) or not isinstance(
        page.get("now"), (int, float)
    ):
        return None
    return float(page["written"]) + (arrived - float(page["now"]))


def _verified(page: dict[str, Any], node: str, file: str) -> bytes:
    try:
        raw = gzip.decompress(base64.b64decode(page["data"]))
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise AgentError(f"log range of {file} arrived corrupt: {exc}", node=node) from None
    if len(raw) != page["length"] or hashlib.sha256(raw).hexdigest() != page["sha256"]:
        raise AgentError(f"log range of {file} failed its sha256 check", node=node)
    return raw


def _advance(db: sqlite3.Connection, segment: tuple[Any, ...], moved: tuple[Any, ...]) -> None:
    """Register a stored segment and move its file's offset past it (one transaction)."""
    db.execute("INSERT OR REPLACE INTO log_segments VALUES (?, ?, ?, ?, ?, ?, ?)", segment)
    db.execute("UPDATE log_files SET offset = ?, rotated = ?, last_seen = ? WHERE id = ?", moved)


def new_row(db: sqlite3.Connection, node: str, entry: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """A file's row, made at its first bytes ``raw`` (inside the caller's transaction)."""
    head = raw[:HEAD_BYTES]
    now = time.time()
    cur = db.execute(
        "INSERT INTO log_files (node, stream, ino, head_len, head_sha, rotated, first_seen,"
        " last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            node,
            entry["stream"],
            int(entry["ino"]),
            len(head),
            hashlib.sha256(head).hexdigest(),
            int(bool(entry["rotated"])),
            now,
            now,
        ),
    )
    found = db.execute("SELECT * FROM log_files WHERE id = ?", (cur.lastrowid,)).fetchone()
    return dict(found)


def _segment_dir(st: State, node: str, row: dict[str, Any]) -> Path:
    return store_dir(st) / _safe(node) / row["stream"] / str(row["id"])


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _write_segment(st: State, node: str, row: dict[str, Any], start: int, data: str) -> int:
    """The gzip bytes at ``<dir>/<start>.gz``, durable before the offset moves."""
    directory = _segment_dir(st, node, row)
    blob = base64.b64decode(data)
    final = directory / f"{start:016d}.gz"
    temp = directory / f".tmp-{start:016d}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(str(temp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(str(temp), str(final))
        dfd = os.open(str(directory), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(str(temp))
        except OSError:
            pass
        raise LocalError(
            f"cannot store logs in {directory}: {exc.strerror or exc};"
            " the node keeps every file not yet stored",
            node=node,
        ) from None
    return len(blob)


def stored_digest(st: State, node: str, row: dict[str, Any]) -> tuple[int, str]:
    """Length and sha256 of the file as the store holds it (read back, gaps refused)."""
    digest = hashlib.sha256()
    total = 0
    for raw, start in _segments(st, node, row):
        if start != total:
            raise LocalError(f"the store lacks bytes {total}..{start} of a log file", node=node)
        digest.update(raw)
        total += len(raw)
    return total, digest.hexdigest()


def _segments(st: State, node: str, row: dict[str, Any]) -> Iterator[tuple[bytes, int]]:
    for seg in st.db.execute(
        "SELECT start, sha256 FROM log_segments WHERE file_id = ? ORDER BY start",
        (row["id"],),
    ):
        yield _read_segment(st, node, row, seg), int(seg["start"])


def _read_segment(st: State, node: str, row: Any, seg: Any) -> bytes:
    """A segment's raw bytes, checked against its sha256."""
    path = _segment_dir(st, node, row) / f"{seg['start']:016d}.gz"
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise LocalError(f"log segment {path} unreadable: {exc}", node=node) from None
    if hashlib.sha256(raw).hexdigest() != seg["sha256"]:
        raise LocalError(f"log segment {path} fails its sha256 check", node=node)
    return raw


async def _acknowledge(
    client: AgentClient,
    node: Node,
    w: _Writes,
    ao: AgentOptions,
    opts: CollectOptions,
    entry: dict[str, Any],
    row: dict[str, Any],
    done: Collected,
) -> None:
    """Tell the node a whole rotated file is stored (and free it with ``--free``)."""
    if row["offset"] != int(entry["size"]) or (row["acked"] and not opts.free):
        return
    size, sha = stored_digest(w.st, node.name, row)
    if size != int(entry["size"]):
        return
    if not row["acked"]:  # written ahead: a file the node may free is one the store holds
        acked = "UPDATE log_files SET acked = 1 WHERE id = ?"
        await w.tx(node.name, lambda db: db.execute(acked, (row["id"],)))
        row["acked"] = 1
    args = {"file": entry["file"], "ino": int(entry["ino"]), "size": size, "sha256": sha}
    answer = await client.call("logs.ack", timeout=ao.call_timeout, free=opts.free, **args)
    done.acked += 1
    if not answer["freed"]:
        return
    done.freed.append(entry["file"])
    freed = f"{entry['file']} was freed on the node (the store holds it, verified)"
    gone = "UPDATE log_files SET freed = 1, gone = 1 WHERE id = ?"
    await w.tx(node.name, lambda db: db.execute(gone, (row["id"],)), freed)


# -- reading the store -----------------------------------------------------------


@dataclass
class Hit:
    node: str
    stream: str
    line: str


def streams(state: State, node: str | None = None) -> list[tuple[str, str]]:
    """The ``(node, stream)`` pairs the store holds."""
    ensure(state)
    sql = "SELECT DISTINCT node, stream FROM log_files"
    rows = state.db.execute(
        sql + (" WHERE node = ?" if node else "") + " ORDER BY node, stream",
        (node,) if node else (),
    )
    return [(r["node"], r["stream"]) for r in rows]


def lines(state: State, node: str, stream: str, since: float | None = None) -> Iterator[bytes]:
    """The stream's lines as collected, oldest file first (a line split by rotation
    joined); with ``since``, only lines whose segment was written at or after it (see
    the module docstring: write time). A segment older than ``since`` is read only when
    the next one is not (its last partial line starts one of those)."""
    ensure(state)
    segs = state.db.execute(
        "SELECT f.id, f.stream, s.start, s.sha256, COALESCE(s.written, s.t) AS written"
        " FROM log_files f JOIN log_segments s ON s.file_id = f.id"
        " WHERE f.node = ? AND f.stream = ? ORDER BY f.id, s.start",
        (node, stream),
    ).fetchall()
    old = [since is not None and seg["written"] < since for seg in segs] + [False]
    carry = b""
    for i, seg in enumerate(segs):
        if old[i] and old[i + 1]:
            carry = b""  # what it ends is older too
            continue
        parts = (carry + _read_segment(state, node, seg, seg)).split(b"\n")
        carry = parts.pop()
        if not old[i]:
            yield from parts
    if carry:
        yield carry


def grep(
    pattern: str,
    *,
    state: State | None = None,
    nodes: Sequence[str] | None = None,
    since: float | None = None,
) -> Iterator[Hit]:
    """Lines of the store matching the regular expression ``pattern``."""
    try:
        regex = re.compile(pattern.encode())
    except re.error as exc:
        raise LocalError(f"bad pattern {pattern!r}: {exc}") from None
    wanted = set(nodes) if nodes is not None else None
    with opened(state) as st:
        for node, stream in streams(st):
            if wanted is not None and node not in wanted:
                continue
            for line in lines(st, node, stream, since):
                if regex.search(line):
                    yield Hit(node, stream, line.decode("utf-8", "replace"))


@dataclass
class Pruned:
    """Files and bytes deleted; ``over``: bytes still past ``max_bytes``, all of files
    not yet acked (which retention never takes)."""

    files: int = 0
    bytes: int = 0
    over: int = 0


def prune(
    *,
    state: State | None = None,
    max_bytes: int | None = None,
    max_age: float | None = None,
    now: float | None = None,
) -> Pruned:
    """Delete whole collected files, least recently written first, past ``max_bytes``
    stored or written more than ``max_age`` seconds ago; only acked or gone ones."""
    result = Pruned()
    moment = time.time() if now is None else now
    with opened(state) as st:
        ensure(st)
        files = [
            dict(r)
            for r in st.db.execute(
                "SELECT f.id, f.node, f.stream, f.gone, f.acked,"
                " MAX(COALESCE(s.written, s.t)) AS last, SUM(s.stored) AS size"
                " FROM log_files f JOIN log_segments s ON s.file_id = f.id"
                " GROUP BY f.id ORDER BY last"
            )
        ]
        total = sum(int(f["size"]) for f in files)
        for f in files:
            if not (f["acked"] or f["gone"]):
                continue  # the node still needs the store whole for its ack
            old = max_age is not None and moment - f["last"] > max_age
            big = max_bytes is not None and total > max_bytes
            if not (old or big):
                continue
            directory = _segment_dir(st, f["node"], f)
            with st.transaction() as db:
                db.execute("DELETE FROM log_segments WHERE file_id = ?", (f["id"],))
                if f["gone"]:
                    db.execute("DELETE FROM log_files WHERE id = ?", (f["id"],))
            for path in directory.glob("*"):
                path.unlink(missing_ok=True)
            try:
                directory.rmdir()
            except OSError:
                pass
            total -= int(f["size"])
            result.files += 1
            result.bytes += int(f["size"])
    if max_bytes is not None:
        result.over = max(0, total - max_bytes)
    return result


def collect_scheduled(
    nodes: Sequence[Node],
    database: Path,
    *,
    max_age: float | None = None,
    max_bytes: int | None = None,
) -> str:
    """One scheduled round (the service's ``logs`` job, run in a worker thread): collect
    with a state connection and an event loop of its own, then retention by age and
    size; a summary line."""
    import asyncio

    with State(database) as st:
        results = asyncio.run(collect_async(nodes, state=st))
        pruned = prune(state=st, max_age=max_age, max_bytes=max_bytes)
    raw = sum(r.value.raw for r in results if r.ok and r.value)
    failed = f", {len(results.failed)} node(s) failed" if results.failed else ""
    over = f" ({pruned.over} bytes over the budget, not yet acked)" if pruned.over else ""
    return f"{raw} bytes from {len(results)} node(s){failed}, {pruned.files} file(s) pruned{over}"
