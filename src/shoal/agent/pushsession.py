"""The agent's ``content.*`` operations: one node's side of ``shoal push``.

Theory of operation. The controller is the coordinator; a node only does what
it is told, over its control socket (so only SSH can start anything):

``content.begin`` {dir, version, blob, blob_size, token, sources, probe?, tls?, waits?, ...}
    With ``probe`` [host, port] (the controller's chunk server), first checks
    that this node can connect to it; if not it answers only ``unreachable``
    (why) and opens nothing, and the controller tunnels the source through its
    SSH connection and asks again. Then opens a push session: starts this
    node's chunk server (TCP, read-only, token-checked: :mod:`.chunkserver`)
    if it is not running (over TLS with ``tls`` {cert, key}: the key and
    certificate the controller made for it, :mod:`.tlspin`; the answer's
    ``fingerprint`` is what peers pin it by, "" when plain; a plain server
    already serving refuses a TLS push), fetches the manifest (a zlib-compressed chunk
    named ``blob``) from the given sources,
    checks that it hashes to ``version`` and obeys every safety rule
    (:func:`manifest.parse`), and answers which chunks, by index in
    :meth:`Manifest.unique_chunks`, it lacks (``missing``) and which it holds
    in its store and can serve peers (``held``). Chunks found in the files of
    versions already deployed here are neither missing nor fetched.
``content.fetch`` {version, dir, source: [host, port, pin?], chunks: [index...], limit, waits?}
    Fetches those chunks from one source (a peer or the controller; over TLS
    to the certificate whose SHA-256 is ``pin``, when given), verifies
    each hash, stores it; answers ``got``, ``failed``, ``bytes`` and whether
    the source lied (sent bytes that do not match) or could not be connected to
    (``unreachable``: the controller stops choosing that peer for this node).
    ``waits`` {connect, handshake, stall} (seconds; and ``probe_seconds`` for
    begin's probe) are the waits the controller derived from the loss its SSH
    link to this node shows (:mod:`.linkwaits`); without them, a clean link's.
``content.commit`` {version, dir, switch?}
    Assembles the version beside the running one and switches ``dir`` to it
    atomically (:mod:`.activate`); answers ``need`` (indices) instead when a
    chunk expected in a local file no longer matches. ``switch: false`` stages
    it: assembled, verified and kept in ``versions``, ``dir`` left as it is.
``content.activate`` {dir, version}
    Switches ``dir`` to a version already here (staged or kept) with one
    rename: the fast step of a rollout, which moves no bytes.
``content.end`` {version, dir, keep?}
    Closes the session: its token stops working, the store drops chunks no
    other session wants (at once; their files are deleted on a worker thread
    after the answer; ``keep``: they stay, for a re-run of a failed push), and
    the chunk server stops when no session is left.
``content.versions`` {dir} / ``content.rollback`` {dir, to?}
    The kept versions and the current one / switch back (atomically).

A session is one push of one version to one ``dir``: two pushes of the same
tree to two directories are two sessions (they share the version's store
bucket, which goes when the last of them ends). ``version`` alone names the
session when only one push of it is here.

Nothing listens longer than the push that opened it. A ``content.begin`` that
fails takes its token back and closes the server if no session is left. A
session whose token has not been used (no content request, no chunk request
to this node) for :data:`LISTEN_SECONDS` stops serving: a controller that died
or gave up leaves no open port behind. Its store stays for a re-run (which
fetches only what it lacks) until the session has been idle for
:data:`IDLE_SECONDS`; then it ends and the store goes, and so do store buckets
no session owns (an agent restarted, an ended push's kept store) untouched for
as long. A full disk ends the session at once, store and all. A session ended
while one of its requests still runs (a fetch writing its batch) keeps its
bucket until that request is done; then the bucket goes, with what it wrote.
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
from .chunkfetch import Fetcher
from .chunkserver import ChunkServer, StoreBackend, chunk_sources
from .chunkstore import ChunkError, ChunkStore, Throttle, unlink_all
from .linkwaits import from_wire, seconds
from .tlspin import TEST_IMPOSTOR_FLAG, pem_fingerprint, server_context

#: A session unused this long ends and its store goes (the window to resume a push).
IDLE_SECONDS = 900.0
#: A session whose token nobody used for this long stops being served.
LISTEN_SECONDS = 120.0
#: How long ``content.begin`` waits for a request of an earlier session of the same push
#: (a killed controller's last fetch or commit) before refusing.
BUSY_WAIT_SECONDS = 60.0
#: How often sessions are checked for the two limits above.
REAP_SECONDS = 30.0
#: How long ``content.begin`` waits to connect to the controller (``probe``) before
#: saying it cannot, so the controller sends chunks through SSH instead.
PROBE_SECONDS = 3.0  # a clean link's: the controller sends ``probe_seconds`` for a lossy one
#: Attempts at the manifest per source before ``content.begin`` gives up.
MANIFEST_TRIES = 3

Record = Callable[[str, Optional[str], str], None]


@dataclass
class PushSession:
    version: str
    area: Area
    token: str
    manifest: mf.Manifest
    chunks: list[tuple[str, int]]
    index: dict[str, int] = field(default_factory=dict)
    keep: int = 3
    allow_setuid: bool = False
    durable: bool = True
    used: float = field(default_factory=time.monotonic)  # its last content request
    busy: int = 0  # content requests in progress
    serving: bool = True  # its token opens this node's chunk server
    broken: str = ""  # why it ended early (a full disk): refused from then on
    prune_after: bool = False  # ended while busy: its store goes when the last request does

    @property
    def key(self) -> tuple[str, str]:
        return self.version, str(self.area.target)


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


async def _unreachable(source: object, timeout: float = PROBE_SECONDS) -> str:
    """Why this node cannot open a TCP connection to ``source`` ([host, port]); "" if it can."""
    ((host, port, _),) = chunk_sources([source])
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return f"{host}:{port}: connect timed out"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    writer.close()
    return ""


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
        self.sessions: dict[tuple[str, str], PushSession] = {}  # (version, target) → session
        self.server: ChunkServer | None = None
        self.port = 0
        self.fetcher = Fetcher(self.store)
        self._reaper: asyncio.TimerHandle | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._committing: set[str] = set()  # versions whose commit reads the store
        # ended sessions whose requests are still running (a fetch still writing its
        # batch): their buckets stay until the last request is done, then go
        self._draining: dict[int, PushSession] = {}
        self._unlinking: set[asyncio.Future[None]] = set()

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        try:
            if op == "content.begin":
                return await self.begin(args)
            if op == "content.fetch":
                return await self._busy(self._session(args), self.fetch, args)
            if op == "content.commit":
                return await self._busy(self._session(args), self.commit, args)
            if op == "content.end":
                return self.end(self._find(args), prune=not args.get("keep"))
            if op == "content.versions":
                return self._area(args).describe()
            if op == "content.rollback":
                return self.rollback(_require(args, "dir", str), args.get("to"))
            if op == "content.activate":
                return self.activate(_require(args, "dir", str), _require(args, "version", str))
        except (AreaError, ChunkError, OSError) as exc:
            raise ValueError(str(exc)) from None
        raise ValueError(f"unknown operation {op!r}")

    # -- sessions --------------------------------------------------------------

    async def _serve(self, host: str, port: int, tls: object) -> None:
        """Start the chunk server unless it runs (TLS with ``tls`` {cert, key})."""
        if self.server is not None and self.server.listening:
            if tls and self.server.tls is None:
                raise ValueError(
                    "a --plain-data push is serving chunks here: cannot serve a TLS push "
                    "at once (wait for it to end, or push with --plain-data)"
                )
            return
        ctx, pin = None, ""
        if tls:
            if not isinstance(tls, dict):
                raise ValueError("tls must be {cert, key}")
            cert, key = _require(tls, "cert", str), _require(tls, "key", str)
            pin = pem_fingerprint(cert)
            impostor = self.home / TEST_IMPOSTOR_FLAG
            if impostor.exists():  # test hook: serve another certificate, claim this one
                cert = key = impostor.read_text()
            ctx = server_context(cert, key, self.home)
        _more_files()  # connections and placed files both take descriptors
        self.server = ChunkServer(StoreBackend(self.store, self.home), tls=ctx, fingerprint=pin)
        self.port = await self.server.start(host, port)
        kind = "TLS" if ctx is not None else "plain"
        self.record("content", None, f"chunk server listening on {host}:{self.port} ({kind})")

    def _arm_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(REAP_SECONDS, self._reap)

    def _reap(self) -> None:
        """End sessions idle too long, stop serving unused ones, drop stale store buckets."""
        self._reaper = None
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.busy:
                continue
            used = session.used
            if self.server is not None:
                used = max(used, self.server.used.get(session.token, 0.0))
            if now - used > IDLE_SECONDS:
                self.record("content", None, f"idle push of {session.version} dropped")
                self.end(session)
            elif session.serving and now - used > LISTEN_SECONDS:
                session.serving = False
                self._revoke(session.token)
        self._prune(stale=True)
        if self.sessions or self.server is not None or self.store.buckets:
            self._arm_reaper()

    def start(self) -> None:
        """Arm the reaper for store buckets an earlier agent left (they go once stale)."""
        self.store.load()
        if self.store.buckets:
            self._arm_reaper()

    def _revoke(self, token: str) -> None:
        """The token stops opening the server unless a serving session has it."""
        if self.server is not None and not any(
            s.token == token and s.serving for s in self.sessions.values()
        ):
            self.server.tokens.discard(token)
        self._close_unserved()

    def _close_unserved(self) -> None:
        """The chunk server closes when no session serves."""
        if self.server is not None and not any(s.serving for s in self.sessions.values()):
            self.server.close()
            self.server = None
            self.fetcher.close()
            self.record("content", None, "chunk server closed")

    def _prune(self, stale: bool = False) -> int:
        """Drop store buckets no session uses (``stale``: only those untouched for
        IDLE_SECONDS); their files go on a worker thread."""
        live = [*self.sessions.values(), *self._draining.values()]
        keep = {s.version for s in live} | self._committing
        if stale:
            keep |= set(self.store.buckets) - self.store.idle_buckets(IDLE_SECONDS)
        removed, doomed = self.store.detach(keep)
        if doomed:
            future = asyncio.get_running_loop().run_in_executor(None, unlink_all, doomed)
            self._unlinking.add(future)
            future.add_done_callback(self._unlinking.discard)
        return removed

    async def _busy(
        self, session: PushSession, op: Callable[..., Any], args: dict[str, Any]
    ) -> Any:
        """Run a request of ``session``: it never expires meanwhile, and a full disk ends it."""
        session.busy += 1
        session.used = time.monotonic()
        try:
            return await op(session, args)
        except (AreaError, ChunkError) as exc:  # a full disk: the deployment's or the store's
            if str(exc).startswith("disk full"):
                session.broken = str(exc)
            raise
        finally:
            session.busy -= 1
            session.used = time.monotonic()
            if session.broken and self.sessions.get(session.key) is session:
                self.record("content", None, f"push of {session.version} ended: {session.broken}")
                self.end(session)
            drained = not session.busy and self._draining.pop(id(session), None) is not None
            if drained and session.prune_after:
                self._prune()

    async def begin(self, args: dict[str, Any]) -> dict[str, Any]:
        version = _require(args, "version", str)
        if not mf.is_version(version):
            raise ValueError(f"bad version id {version!r}")
        token = _require(args, "token", str)
        if len(token) < 16:
            raise ValueError("token too short")
        area = self._area(args)
        current = area.current()  # refuses a REMOTE_DIR that Shoal did not make
        key = (version, str(area.target))
        old = self.sessions.get(key)
        # a controller killed mid-push leaves its last fetch or commit running here for a
        # while: a re-run waits for it to end rather than being refused
        waited = time.monotonic() + BUSY_WAIT_SECONDS
        while old is not None and old.busy and time.monotonic() < waited:
            await asyncio.sleep(0.2)
            old = self.sessions.get(key)
        if old is not None and old.busy:
            raise ValueError(f"a push of {version} to {area.target} is still running here")
        if args.get("probe") is not None:  # can we reach the controller's chunk server?
            probe = seconds(args.get("probe_seconds"), PROBE_SECONDS)
            unreachable = await _unreachable(args["probe"], probe)
            if unreachable:
                return {"unreachable": unreachable}  # nothing opened: it tunnels, asks again
        await self._serve(
            str(args.get("bind") or "0.0.0.0"), int(args.get("port") or 0), args.get("tls")
        )
        assert self.server is not None
        self._arm_reaper()
        self.server.tokens.add(token)
        try:
            return await self._open(args, version, token, area, current, old)
        except BaseException:
            self._revoke(token)  # nothing it opened outlives a begin that failed
            raise

    async def _open(
        self,
        args: dict[str, Any],
        version: str,
        token: str,
        area: Area,
        current: str | None,
        old: PushSession | None,
    ) -> dict[str, Any]:
        assert self.server is not None
        rate = args.get("rate")
        self.server.throttle = Throttle(float(rate) if rate else None)
        self.fetcher.throttle = Throttle(float(rate) if rate else None)
        manifest = area.manifest(version)
        if manifest is None:
            manifest, data = await self._fetch_manifest(args, version, token)
            area.save_manifest(version, data, manifest)  # canonical: the bytes as fetched
        chunks = manifest.unique_chunks()
        session = PushSession(
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
        ready = area.has_version(version)
        if not ready and _same_device(self.store.root, area.target.parent):
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
        self.sessions[session.key] = session  # a re-run replaces its own stale session
        if old is not None and old.token != token:
            self._revoke(old.token)
        return {
            "port": self.port,
            "fingerprint": self.server.fingerprint,
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
            # each source up to MANIFEST_TRIES times: on a lossy link a connection can be
            # cut (the server's AUTH_SECONDS, a timeout) though the source is fine; a peer
            # it cannot connect to at all is not tried again (a firewall, not a cut), the
            # last source, the controller's, is
            waits = from_wire(args.get("waits"), self.fetcher.waits())
            sources = chunk_sources(args.get("sources", []))
            given_up: set[int] = set()
            for k in (k for k in range(len(sources)) for _ in range(MANIFEST_TRIES)):
                if k in given_up:
                    continue
                host, port, pin = sources[k]
                got = await self.fetcher.fetch(
                    host, port, token, [(blob, size)], bucket=version, pin=pin, waits=waits
                )
                if got.got:
                    break
                errors.append(f"{host}:{port}: {got.error or 'not there'}")
                if got.unreachable and k < len(sources) - 1:
                    given_up.add(k)
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

    def _area(self, args: dict[str, Any]) -> Area:
        """The deployment ``args["dir"]`` names (never the agent's own working area)."""
        target = resolve_target(_require(args, "dir", str), agent_home=self.home)
        return Area(target, replace_empty_dir=bool(args.get("replace_empty_dir", False)))

    def _find(self, args: dict[str, Any]) -> PushSession | None:
        """The session named by ``version`` and ``dir`` (or ``version`` alone, if one)."""
        version = _require(args, "version", str)
        target = args.get("dir")
        if isinstance(target, str):
            return self.sessions.get((version, str(self._area(args).target)))
        found = [s for s in self.sessions.values() if s.version == version]
        return found[0] if len(found) == 1 else None

    def _session(self, args: dict[str, Any]) -> PushSession:
        session = self._find(args)
        if session is None:
            target = args.get("dir")
            where = f" to {target}" if isinstance(target, str) else ""
            raise ValueError(f"no push of version {args['version']}{where} in progress here")
        if session.broken:
            raise ValueError(f"push of {session.version} ended here: {session.broken}")
        return session

    async def fetch(self, session: PushSession, args: dict[str, Any]) -> dict[str, Any]:
        ((host, port, pin),) = chunk_sources([args.get("source")])
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
            pin=pin,
            waits=from_wire(args.get("waits"), self.fetcher.waits()),
        )
        if result.lying:
            self.record("content", None, f"rejected chunks from {host}:{port}: {result.error}")
        if result.local:
            session.broken = result.error  # our own disk: what it holds goes with it
        return {
            "got": [session.index[h] for h in result.got],
            "failed": [session.index[h] for h in result.failed],
            "bytes": result.nbytes,
            "error": result.error,
            "lying": result.lying,
            "local": result.local,
            "unreachable": result.unreachable,
            "seconds": round(result.seconds, 4),
        }

    async def commit(self, session: PushSession, args: dict[str, Any]) -> dict[str, Any]:
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
            switch = args.get("switch", True) is not False
            if switch and previous != session.version:
                previous = area.switch(session.version)
            removed = area.gc(session.keep, protect=session.version)
        if not switch:
            self.record("content", None, f"{area.target}: {session.version} staged")
            return {
                "previous": previous,
                "current": previous,
                "staged": session.version,
                "reused": counts["reused"],
                "stored": counts["stored"],
                "removed": removed,
            }
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

    def end(self, session: PushSession | None, prune: bool = True) -> dict[str, Any]:
        if session is not None and session.broken:
            prune = True  # a full disk: its store goes, even when the controller asks to keep it
        if session is not None and self.sessions.get(session.key) is session:
            del self.sessions[session.key]
            self._revoke(session.token)
            if session.busy:  # a fetch still running would write into a pruned store
                session.prune_after = prune
                self._draining[id(session)] = session
        self._close_unserved()
        # forget the buckets now, delete their bytes after answering: the controller
        # does not wait for 200 MB of unlinking. Buckets of live sessions, of ended
        # ones still running a request and of commits still reading the store stay.
        removed = self._prune() if prune else 0
        return {"ended": session is not None, "pruned": removed}

    def rollback(self, target: str, to: Any) -> dict[str, Any]:
        area = self._area({"dir": target})
        version = area.pick(str(to) if to else None)
        previous = area.switch(version, "rollback")
        self.record("content", None, f"{area.target} rolled back to {version}")
        return {"previous": previous, "current": version}

    def activate(self, target: str, version: str) -> dict[str, Any]:
        area = self._area({"dir": target})
        previous = area.current()
        if previous != version:
            area.switch(version, "activate")
            self.record("content", None, f"{area.target} now at {version} (was {previous})")
        return {"previous": previous, "current": version}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.fetcher.close()
        self.store.close()
