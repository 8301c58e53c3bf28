"""The agent's ``content.*`` operations: one node's side of ``shoal push``.

Theory of operation. The controller is the coordinator; a node only does what
it is told, over its control socket (so only SSH can start anything):

``content.begin`` {dir, version, blob, blob_size, token, sources, ...}
    Opens a push session: starts this node's chunk server (TCP, read-only,
    token-checked: :mod:`.chunkserver`) if it is not running, fetches the
    manifest (a zlib-compressed chunk named ``blob``) from the given sources,
    checks that it hashes to ``version`` and obeys every safety rule
    (:func:`manifest.parse`), and answers which chunks, by index in
    :meth:`Manifest.unique_chunks`, it lacks (``missing``) and which it holds
    in its store and can serve peers (``held``). Chunks found in the files of
    versions already deployed here are neither missing nor fetched.
``content.fetch`` {version, source: [host, port], chunks: [index...], limit}
    Fetches those chunks from one source (a peer or the controller), verifies
    each hash, stores it; answers ``got``, ``failed``, ``bytes`` and whether
    the source lied (sent bytes that do not match).
``content.commit`` {version}
    Assembles the version beside the running one and switches ``dir`` to it
    atomically (:mod:`.activate`); answers ``need`` (indices) instead when a
    chunk expected in a local file no longer matches.
``content.end`` {version}
    Closes the session: its token stops working, the store drops chunks no
    other session wants (at once; their files are deleted on a worker thread
    after the answer), and the chunk server stops when no session is left.
``content.versions`` {dir} / ``content.rollback`` {dir, to?}
    The kept versions and the current one / switch back (atomically).

Sessions outlive a controller that dies mid-push (so a re-run resumes from
the store), but not forever: after :data:`IDLE_SECONDS` without a content
request their tokens are dropped and the chunk server closes.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import manifest as mf
from .activate import Area, AreaError, NeedChunks, resolve_target
from .chunkserver import ChunkServer, Fetcher, StoreBackend, chunk_sources
from .chunkstore import ChunkError, ChunkStore, Throttle, unlink_all

IDLE_SECONDS = 900.0

Record = Callable[[str, Optional[str], str], None]


@dataclass
class Session:
    version: str
    area: Area
    token: str
    manifest: mf.Manifest
    chunks: list[tuple[str, int]]
    index: dict[str, int] = field(default_factory=dict)
    keep: int = 3
    allow_setuid: bool = False
    durable: bool = True


#: Files at least this big get their fetched chunks written in place (see ``placements``).
PLACE_MIN = 1 << 20


def placements(m: mf.Manifest, minimum: int = PLACE_MIN) -> dict[str, tuple[int, int]]:
    """chunk → (entry number, offset) of its first place in a file of at least PLACE_MIN.

    The fetcher writes those chunks there (the store's ``<version>.f<N>``),
    so commit hard-links the finished file instead of copying every byte;
    smaller files are not worth a file descriptor each.
    """
    places: dict[str, tuple[int, int]] = {}
    for number, e in enumerate(m.entries):
        if e.kind != "f" or e.pack is not None or e.size < minimum:
            continue
        offset = 0
        for digest, size in e.chunks:
            places.setdefault(digest, (number, offset))
            offset += size
    return places


def _more_files() -> None:
    """Raise the soft limit on open files to the hard one (at most 65536)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, OSError, ValueError):
        pass


def _same_device(store: Path, target_parent: Path) -> bool:
    """Hard links work between the store and the deployed tree (else placing buys nothing)."""

    def device(path: Path) -> int:
        while not path.exists() and path.parent != path:
            path = path.parent  # not made yet: it will be made on its nearest ancestor's
        return os.stat(str(path)).st_dev

    try:
        return device(store) == device(target_parent)
    except OSError:
        return False


def _require(args: dict[str, Any], name: str, kind: type) -> Any:
    value = args.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"missing or bad argument {name!r}")
    return value


class ContentService:
    def __init__(self, home: Path, record: Record) -> None:
        self.home = home
        self.record = record
        self.store = ChunkStore(home / "chunks")
        self.sessions: dict[str, Session] = {}
        self.server: ChunkServer | None = None
        self.port = 0
        self.fetcher = Fetcher(self.store)
        self.last_used = time.monotonic()
        self._reaper: asyncio.TimerHandle | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._committing: set[str] = set()  # versions whose commit reads the store
        self._unlinking: set[asyncio.Future[None]] = set()

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        self.last_used = time.monotonic()
        try:
            if op == "content.begin":
                return await self.begin(args)
            if op == "content.fetch":
                return await self.fetch(args)
            if op == "content.commit":
                return await self.commit(args)
            if op == "content.end":
                return self.end(_require(args, "version", str))
            if op == "content.versions":
                return self._area(args).describe()
            if op == "content.rollback":
                return self.rollback(_require(args, "dir", str), args.get("to"))
        except (AreaError, ChunkError, OSError) as exc:
            raise ValueError(str(exc)) from None
        raise ValueError(f"unknown operation {op!r}")

    # -- sessions --------------------------------------------------------------

    async def _serve(self, host: str, port: int) -> None:
        if self.server is not None and self.server.listening:
            return
        self.server = ChunkServer(StoreBackend(self.store, self.home))
        self.port = await self.server.start(host, port)
        self.record("content", None, f"chunk server listening on {host}:{self.port}")
        self._arm_reaper()

    def _arm_reaper(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reaper is not None:
            self._reaper.cancel()
        self._reaper = loop.call_later(60.0, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        if not self.sessions and self.server is None:
            return
        if time.monotonic() - self.last_used > IDLE_SECONDS:
            for version in list(self.sessions):
                self.end(version, prune=False)
            self.record("content", None, "idle push sessions dropped")
            return
        self._arm_reaper()

    async def begin(self, args: dict[str, Any]) -> dict[str, Any]:
        version = _require(args, "version", str)
        if not mf.is_version(version):
            raise ValueError(f"bad version id {version!r}")
        token = _require(args, "token", str)
        if len(token) < 16:
            raise ValueError("token too short")
        area = self._area(args)
        current = area.current()  # refuses a REMOTE_DIR that Shoal did not make
        await self._serve(str(args.get("bind") or "0.0.0.0"), int(args.get("port") or 0))
        assert self.server is not None
        rate = args.get("rate")
        self.server.throttle = Throttle(float(rate) if rate else None)
        self.fetcher.throttle = Throttle(float(rate) if rate else None)
        self.server.tokens.add(token)
        manifest = area.manifest(version)
        if manifest is None:
            manifest, data = await self._fetch_manifest(args, version, token)
            area.save_manifest(version, data, manifest)  # canonical: the bytes as fetched
        chunks = manifest.unique_chunks()
        session = Session(
            version,
            area,
            token,
            manifest,
            chunks,
            {h: i for i, (h, _) in enumerate(chunks)},
            keep=max(1, int(args.get("keep", 3))),
            allow_setuid=bool(args.get("allow_setuid", False)),
            durable=bool(args.get("durable", True)),
        )
        self.sessions[version] = session
        ready = area.has_version(version)
        if not ready and _same_device(self.store.root, area.target.parent):
            _more_files()  # a placed file stays open per big file while its push lasts
            self.store.plan(version, placements(manifest))
        local = {} if ready else area.local_chunks()
        missing: list[int] = []
        held: list[int] = []
        reuse = 0
        stored = self.store.index()
        for i, (digest, size) in enumerate(chunks):
            if digest in stored:
                held.append(i)
            elif digest in local:
                reuse += size
            elif not ready:
                missing.append(i)
        return {
            "port": self.port,
            "current": current,
            "ready": ready,
            "missing": missing,
            "held": held,
            "reuse_bytes": reuse,
            "total_bytes": manifest.total_bytes,
        }

    async def _fetch_manifest(
        self, args: dict[str, Any], version: str, token: str
    ) -> tuple[mf.Manifest, bytes]:
        blob = _require(args, "blob", str)
        size = int(args.get("blob_size", 0))
        errors = []
        if not self.store.has(blob):
            for host, port in chunk_sources(args.get("sources", [])):
                got = await self.fetcher.fetch(host, port, token, [(blob, size)], bucket=version)
                if got.got:
                    break
                errors.append(f"{host}:{port}: {got.error or 'not there'}")
            else:
                raise ValueError(f"cannot fetch the manifest: {'; '.join(errors) or 'no source'}")
        try:
            data = zlib.decompress(self.store.read(blob))
        except (OSError, zlib.error) as exc:
            raise ValueError(f"manifest {blob[:12]} unreadable: {exc}") from None
        if mf.version_of(data) != version:
            raise ValueError(f"manifest does not match version {version}")
        try:
            return mf.parse(data), data
        except mf.ManifestError as exc:
            raise ValueError(f"manifest rejected: {exc}") from None

    def _session(self, args: dict[str, Any]) -> Session:
        version = _require(args, "version", str)
        session = self.sessions.get(version)
        if session is None:
            raise ValueError(f"no push of version {version} in progress here")
        return session

    async def fetch(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._session(args)
        ((host, port),) = chunk_sources([args.get("source")])
        wanted = []
        for i in _require(args, "chunks", list):
            if not isinstance(i, int) or not 0 <= i < len(session.chunks):
                raise ValueError(f"bad chunk index {i!r}")
            wanted.append(session.chunks[i])
        timeout = float(args.get("limit", 60.0))
        result = await self.fetcher.fetch(
            host,
            port,
            session.token,
            wanted,
            deadline=time.monotonic() + timeout,
            bucket=session.version,
        )
        if result.lying:
            self.record("content", None, f"rejected chunks from {host}:{port}: {result.error}")
        return {
            "got": [session.index[h] for h in result.got],
            "failed": [session.index[h] for h in result.failed],
            "bytes": result.nbytes,
            "error": result.error,
            "lying": result.lying,
            "local": result.local,
            "seconds": round(result.seconds, 4),
        }

    async def commit(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._session(args)
        area = session.area
        lock = self._locks.setdefault(str(area.target), asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            self._committing.add(session.version)
            self.store.seal(session.version)  # its placed files may become deployed files
            try:
                counts = await loop.run_in_executor(
                    None,
                    lambda: area.assemble(
                        session.manifest,
                        session.version,
                        self.store,
                        allow_setuid=session.allow_setuid,
                        durable=session.durable,
                    ),
                )
            except NeedChunks as exc:
                return {"need": [session.index[h] for h in exc.chunks if h in session.index]}
            finally:
                self._committing.discard(session.version)
            previous = area.current()
            if previous != session.version:
                previous = area.switch(session.version)
            removed = area.gc(session.keep)
        self.record(
            "content", None, f"{area.target} now at {session.version} (was {previous or 'none'})"
        )
        return {
            "previous": previous,
            "current": session.version,
            "reused": counts["reused"],
            "stored": counts["stored"],
            "removed": removed,
        }

    def end(self, version: str, prune: bool = True) -> dict[str, Any]:
        session = self.sessions.pop(version, None)
        if (
            session is not None
            and self.server is not None
            and not any(s.token == session.token for s in self.sessions.values())
        ):
            self.server.tokens.discard(session.token)
        removed = 0
        if prune:
            # forget the buckets now, delete their bytes after answering: the controller
            # does not wait for 200 MB of unlinking. Buckets of live sessions and of
            # commits still reading the store stay.
            removed, doomed = self.store.detach(set(self.sessions) | self._committing)
            if doomed:
                future = asyncio.get_running_loop().run_in_executor(None, unlink_all, doomed)
                self._unlinking.add(future)
                future.add_done_callback(self._unlinking.discard)
        if not self.sessions and self.server is not None:
            self.server.close()
            self.server = None
            self.fetcher.close()
        return {"ended": session is not None, "pruned": removed}

    def _area(self, args: dict[str, Any]) -> Area:
        """The deployment ``args["dir"]`` names (never the agent's own working area)."""
        target = resolve_target(_require(args, "dir", str), agent_home=self.home)
        return Area(target, replace_empty_dir=bool(args.get("replace_empty_dir", False)))

    def rollback(self, target: str, to: Any) -> dict[str, Any]:
        area = self._area({"dir": target})
        version = area.pick(str(to) if to else None)
        previous = area.switch(version, "rollback")
        self.record("content", None, f"{area.target} rolled back to {version}")
        return {"previous": previous, "current": version}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.fetcher.close()
        self.store.close()
