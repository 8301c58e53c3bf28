"""The ``audit.*`` operations: this node's files hashed for a fleet audit.

``audit.scan {paths, page?}`` walks each path (a file, a directory, or a glob;
relative paths are relative to ``$HOME``) and lists every entry under it:
``{"g": index of the path asked, "p": path, "t": type, "m": mode, "s": size,
"d": sha256 (files) or target (symlinks)}``. Types: ``f`` file, ``d``
directory, ``l`` symlink (reported, never followed: the walk never leaves the
root; only a root that is itself a symlink, such as a pushed directory, is
resolved, not a glob's match), ``s`` special (device, FIFO, socket: reported with its mode, never
opened). Names containing ``.shoal-audit-`` (what a repair keeps aside) are
left out. A path that matches nothing is listed in ``absent``.

Hashing runs on a worker thread. A stat cache in ``<home>/audit-cache.marshal``
(:mod:`marshal`: 100,000 entries written in 16 ms against 185 ms as JSON; only
this agent writes it, in its own home; a file that does not load, or not as a
dict, is an empty cache; real path → size, mtime_ns, ctime_ns, inode, sha256;
kept in memory between scans, written after the reply once the files hashed
since the last write reach 1/:data:`SAVE_SHARE` of it: a stale file is safe, an
entry is trusted only if the stat is the same, so after a restart at most that
share is hashed again) lets a re-scan hash only
files whose stat changed; ``hashed`` and ``cached`` in the reply count
both. A file changed less than :data:`RACY_NS` before it was hashed is not
cached (file times come from the kernel's coarse clock, a tick behind at most):
a write in the same tick would otherwise go unseen next time. Files up to
1 MiB are hashed from one bounded ``read(2)`` (a FIFO or device swapped in
after the listing can neither block nor run on: the ``fstat`` after the read
must still show the listed regular file for the digest to be cached).

A re-scan does not even stat what inotify says did not change: every directory
listed is watched first (:mod:`.auditwatch`), and a directory no event named
since is not listed again, its last listing reused (``listed`` and ``reused``
count directories); the rules for trusting one are in that module (a file with
several links, a lost event, a listing older than ``TRUST_SECONDS``: listed
again). Bucket digests of buckets holding the same entries as the last scan's
are kept too. ``seconds`` is the walk's time on the node.

Replies are paged so that 100,000 files never make one message (the protocol's
line limit is 4 MiB): the scan's reply holds the first :data:`PAGE` entries,
``next`` is the offset of the rest, fetched with ``audit.page {scan, offset}``;
a scan's listing is kept for :data:`KEEP_SECONDS` (at most :data:`MAX_SCANS`).
With ``buckets: B`` the scan's reply holds no entries but one digest per bucket
(an entry's bucket: crc32 of its path mod B; the digest: of the bucket's
entries in path order), so nodes that agree send a few bytes per bucket;
``audit.page {scan, buckets: [...], offset}`` then pages out only the entries
of the buckets asked (those the nodes disagree on).

``audit.replace {path, action, staged?, digest?, mode?, target?}`` repairs one
entry: ``write`` copies ``staged`` (a file of the deployment the controller
pushed to :data:`STAGING` under the user's home: refused anywhere else) beside
``path``, checks its sha256 is ``digest``, moves the old file aside to
``PATH.shoal-audit-<unix time>`` and renames the new one in; ``link`` does the
same with a symlink to ``target``; ``chmod`` sets the mode; ``aside`` only
moves the entry aside (an extra file). The staged deployment is the
controller's to remove.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import marshal
import os
import stat
import time
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from .auditwatch import TRUST_SECONDS, DirWatch
from .persist import write_atomic

#: Entries per reply (each ~150 bytes of JSON: well under the 4 MiB line limit).
PAGE = 5000
#: Listings kept for paging, and for how long.
MAX_SCANS = 4
KEEP_SECONDS = 600.0
#: A file whose mtime or ctime is this close to its hashing is hashed again next time.
RACY_NS = 100_000_000
#: Marker of what a repair keeps aside (never listed).
ASIDE = ".shoal-audit-"
#: Where a repair's bytes are pushed (``<user home>/STAGING/<repair id>``), and the
#: only place ``audit.replace`` takes a staged file from.
STAGING = ".shoal-audit-repair"
#: The cache file is written once the files hashed since it was reach 1/SAVE_SHARE of it.
SAVE_SHARE = 100
#: Most paths one scan may ask for.
MAX_PATHS = 1000
#: Most buckets a scan may digest its listing into.
MAX_BUCKETS = 1 << 16

_READ = 1 << 20
#: Files up to this size are read in one ``read(2)`` (no buffer kept, one allocation).
_SMALL = 1 << 20
#: An entry as the walk keeps it: (path index, path, type, mode, size or None, digest or
#: link target or None); a dict on the wire (:func:`_wire`).
Row = tuple  # (int, str, str, int, "int | None", "str | None")


def sha256_file(fd: int, buf: bytearray | None = None) -> str:
    """The sha256 of an open file, read from its start (into ``buf`` if given)."""
    digest = hashlib.sha256()
    buf = buf if buf is not None else bytearray(_READ)
    view = memoryview(buf)
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        n = os.readv(fd, [buf])
        if not n:
            return digest.hexdigest()
        digest.update(view[:n])


def _wire(row: Row) -> dict[str, Any]:
    entry: dict[str, Any] = {"g": row[0], "p": row[1], "t": row[2], "m": row[3]}
    if row[4] is not None:
        entry["s"] = row[4]
    if row[5] is not None:
        entry["d"] = row[5]
    return entry


class _Buckets:
    """The last scan's buckets: each bucket's rows and digest."""

    def __init__(self) -> None:
        self.count = 0
        self.groups: list[list[Row]] = []
        self.digests: list[str] = []


class _Scan:
    """One listing being paged out (all of it, or the entries of some buckets)."""

    def __init__(self, entries: list[Row]) -> None:
        self.entries = entries
        self.view = entries
        self.buckets: list[int] = []
        self.made = time.monotonic()

    def bucket(self, count: int, last: _Buckets) -> list[str]:
        """Each entry's bucket (crc32 of its path mod ``count``); per bucket the first 16
        hex of the sha256 of its entries, in path order. A bucket holding the same
        entries as in ``last`` scan (the rows of unchanged directories are the same
        objects) keeps its digest; ``last`` becomes this scan."""
        crc = zlib.crc32
        groups: list[list[Row]] = [[] for _ in range(count)]
        self.buckets = [crc(e[1].encode("utf-8", "surrogateescape")) % count for e in self.entries]
        for e, b in zip(self.entries, self.buckets):
            groups[b].append(e)
        old = last.groups if last.count == count else []
        digests = []
        for i, group in enumerate(groups):
            if i < len(old) and old[i] == group:
                digests.append(last.digests[i])
                continue
            digest = hashlib.sha256()
            for _g, p, t, m, s, d in sorted(group, key=lambda e: e[1]):
                line = f"{p}\0{t}\0{m}\0{'' if s is None else s}\0{'' if d is None else d}\n"
                digest.update(line.encode("utf-8", "surrogateescape"))
            digests.append(digest.hexdigest()[:16])
        last.count, last.groups, last.digests = count, groups, digests
        return digests

    def select(self, chosen: Any) -> None:
        if not isinstance(chosen, list) or not self.buckets:
            raise ValueError("audit.page: 'buckets' needs a scan made with buckets")
        wanted = {int(b) for b in chosen}
        self.view = [e for e, b in zip(self.entries, self.buckets) if b in wanted]


class FileAudit:
    """The agent's ``audit.*`` operations over its stat cache (kept in memory between
    scans, read from ``audit-cache.marshal`` once, written back only when it changed)."""

    def __init__(self, home: Path, record: Callable[[str, str | None, str], None]) -> None:
        self.cache_path = home / "audit-cache.marshal"
        self.record = record
        self._lock = asyncio.Lock()
        self._scans: OrderedDict[str, _Scan] = OrderedDict()
        self._cache: dict[str, list[Any]] | None = None
        self._unsaved = 0  # files hashed since the cache file was last written
        self._saving: asyncio.Future[None] | None = None
        self._memos = _Memos()
        self._buckets = _Buckets()

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if op == "audit.scan":
            paths = args.get("paths")
            if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
                raise ValueError(f"audit.scan: 'paths' must be a list of 1 to {MAX_PATHS} paths")
            if not all(isinstance(p, str) and p for p in paths):
                raise ValueError("audit.scan: every path must be a non-empty string")
            page = int(args.get("page", PAGE))
            buckets = int(args.get("buckets") or 0)
            if not 0 <= buckets <= MAX_BUCKETS:
                raise ValueError(f"audit.scan: 'buckets' must be 0 to {MAX_BUCKETS}")
            loop = asyncio.get_running_loop()
            async with self._lock:
                result, fresh = await loop.run_in_executor(None, self._scan, paths)
                scan = _Scan(result.pop("entries"))
                if buckets:
                    result["buckets"] = await loop.run_in_executor(
                        None, scan.bucket, buckets, self._buckets
                    )
            if fresh is not None:  # written after the reply, before the next scan
                self._saving = asyncio.ensure_future(self._save(fresh))
            scan_id = uuid.uuid4().hex[:12]
            self._keep(scan_id, scan)
            if buckets:
                result.update({"scan": scan_id, "entries": [], "next": 0})
                return result
            result.update(self._page(scan_id, 0, page))
            return result
        if op == "audit.page":
            page = int(args.get("page", PAGE))
            offset = int(args.get("offset", 0))
            scan_id = str(args.get("scan"))
            chosen = args.get("buckets")
            if chosen is not None and offset == 0 and scan_id in self._scans:
                self._scans[scan_id].select(chosen)
            return self._page(scan_id, offset, page)
        if op == "audit.replace":
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, replace, args, self.record)
        raise ValueError(f"unknown operation {op!r}")

    # -- paging ----------------------------------------------------------

    def _keep(self, scan_id: str, scan: _Scan) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._scans.items() if now - s.made > KEEP_SECONDS]:
            del self._scans[key]
        self._scans[scan_id] = scan
        while len(self._scans) > MAX_SCANS:
            self._scans.popitem(last=False)

    def _page(self, scan_id: str, offset: int, page: int) -> dict[str, Any]:
        scan = self._scans.get(scan_id)
        if scan is None:
            raise ValueError(f"audit scan {scan_id} is not kept any more: scan again")
        page = max(1, min(page, PAGE))
        chunk = [_wire(e) for e in scan.view[offset : offset + page]]
        end = offset + len(chunk)
        done = end >= len(scan.view)
        if done:
            self._scans.pop(scan_id, None)
        return {"scan": scan_id, "entries": chunk, "next": None if done else end}

    # -- the walk (worker thread) ------------------------------------------

    def _scan(self, paths: list[str]) -> tuple[dict[str, Any], dict[str, list[Any]] | None]:
        """The listing, and the new cache if it changed (None: unchanged)."""
        started = time.monotonic()
        if self._cache is None:
            old = _load_cache(self.cache_path)
            self._cache = old if isinstance(old, dict) else {}
        cache = self._cache
        self._memos.refresh()
        walk = _Walk(cache, self._memos)
        home = os.path.expanduser("~")
        absent: list[str] = []
        for index, pattern in enumerate(paths):
            full = os.path.join(home, os.path.expanduser(pattern))
            matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
            found = False
            for match in matches:
                shown = match if os.path.isabs(pattern) else os.path.relpath(match, home)
                if walk.root(index, match, shown, follow=match == full):
                    found = True
            if not found:
                absent.append(pattern)
        self._memos.prune()
        fresh: dict[str, list[Any]] | None = None
        if walk.changed or len(walk.new_cache) != len(cache):  # not every entry reused
            roots = set(walk.roots)
            below = tuple(r.rstrip("/") + "/" for r in roots)  # str.startswith: in C
            fresh = {k: v for k, v in cache.items() if not (k in roots or k.startswith(below))}
            fresh.update(walk.new_cache)
            if len(fresh) == len(cache) and not walk.changed:
                fresh = None  # entries outside the roots only: the same cache
            else:
                self._cache = fresh
                self._unsaved += walk.hashed + 1
                if self._unsaved * SAVE_SHARE < len(fresh):
                    fresh = None  # the file stays a little stale (safe: see the docstring)
                else:
                    self._unsaved = 0
        result = {
            "entries": walk.entries,
            "total": len(walk.entries),
            "hashed": walk.hashed,
            "cached": walk.cached,
            "hashed_bytes": walk.hashed_bytes,
            "listed": walk.listed,
            "reused": walk.reused,
            "seconds": round(time.monotonic() - started, 4),
            "errors": walk.errors[:100],
            "absent": absent,
        }
        return result, fresh

    async def _save(self, fresh: dict[str, list[Any]]) -> None:
        async with self._lock:
            if fresh is not self._cache:  # a later scan has a newer one to write
                return
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, _save_cache, self.cache_path, fresh
                )
            except OSError as exc:
                self.record("io_error", None, f"{exc.strerror or exc}: {self.cache_path}")


class _DirMemo:
    """A directory's last listing: the rows of what is in it but its subdirectories,
    its files' cache entries, its subdirectories (path, shown, stat) to walk."""

    __slots__ = ("cache", "made", "rows", "subdirs")

    def __init__(self, rows: list[Row], cache: dict[str, list[Any]], subdirs: list[Any]) -> None:
        self.rows = rows
        self.cache = cache
        self.subdirs = subdirs
        self.made = time.monotonic()


class _Memos:
    """The last listing of each watched directory, dropped when it changes (the dirty
    set of :mod:`.auditwatch`) or after :data:`~.auditwatch.TRUST_SECONDS`."""

    def __init__(self) -> None:
        self.dirwatch: DirWatch | None = None
        self.tried = False
        self.by_dir: dict[str, dict[tuple[str, int], _DirMemo]] = {}
        self.visited: set[str] = set()

    def refresh(self) -> None:
        """Drop what changed since the last scan (every listing if events were lost)."""
        if self.dirwatch is None:
            return
        dirty, overflowed = self.dirwatch.drain()
        if overflowed:
            self.by_dir.clear()
        for directory in dirty:
            self.by_dir.pop(directory, None)

    def prune(self) -> None:
        """Forget the listings and watches of directories this scan did not visit."""
        for directory in [d for d in self.by_dir if d not in self.visited]:
            del self.by_dir[directory]
        if self.dirwatch is not None:
            self.dirwatch.keep_only(self.visited)
        self.visited = set()

    def watch(self, directory: str) -> bool:
        self.visited.add(directory)
        if not self.tried:
            self.tried = True
            self.dirwatch = DirWatch.open()
        return self.dirwatch is not None and self.dirwatch.add(directory)

    def reuse(self, directory: str, shown: str, index: int) -> _DirMemo | None:
        self.visited.add(directory)
        memo = self.by_dir.get(directory, {}).get((shown, index))
        if memo is None or time.monotonic() - memo.made > TRUST_SECONDS:
            return None
        return memo

    def keep(self, directory: str, shown: str, index: int, memo: _DirMemo) -> None:
        self.by_dir.setdefault(directory, {})[(shown, index)] = memo


class _Walk:
    """One scan's walk: entries, the cache it builds, counts."""

    def __init__(self, cache: dict[str, list[Any]], memos: _Memos) -> None:
        self.cache = cache
        self.memos = memos
        self.new_cache: dict[str, list[Any]] = {}
        self.roots: list[str] = []
        self.entries: list[Row] = []
        self.errors: list[str] = []
        self.hashed = self.cached = self.hashed_bytes = 0
        self.listed = self.reused = 0  # directories listed, and reused unchanged
        self.changed = False
        self.buf: bytearray | None = None  # for files larger than _SMALL

    def root(self, index: int, path: str, shown: str, follow: bool) -> bool:
        """List ``path`` (shown as ``shown``; a symlink resolved if ``follow``, which
        a glob's matches are not); False when it does not exist."""
        try:
            real = os.path.realpath(path) if follow else path
            st = os.stat(real) if follow else os.lstat(real)
        except OSError:
            return False
        self.roots.append(real)
        if stat.S_ISDIR(st.st_mode):
            self._dir(index, real, shown, st)
        else:
            self._entry(index, real, shown, st)
        return True

    def _dir(self, index: int, real: str, shown: str, st: os.stat_result) -> None:
        todo = [(real, shown, st)]
        entries = self.entries
        cache_get = self.cache.get
        new_cache = self.new_cache
        while todo:
            here, name, info = todo.pop()
            entries.append((index, name, "d", info.st_mode & 0o7777, None, None))
            memo = self.memos.reuse(here, name, index)
            if memo is not None:  # watched and unchanged since its last listing
                entries.extend(memo.rows)
                new_cache.update(memo.cache)
                self.cached += len(memo.cache)
                todo.extend(memo.subdirs)
                self.reused += 1
                continue
            self.listed += 1
            trusted = self.memos.watch(here)  # before the listing: no change falls between
            first, errors = len(entries), len(self.errors)
            files: dict[str, list[Any]] = {}
            subdirs = []
            try:
                with os.scandir(here) as it:
                    children = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.errors.append(f"{name}: {exc.strerror or exc}")
                continue
            for child in children:
                if ASIDE in child.name:
                    continue
                try:
                    cst = child.stat(follow_symlinks=False)
                except OSError as exc:
                    self.errors.append(f"{name}/{child.name}: {exc.strerror or exc}")
                    continue
                mode = cst.st_mode
                if mode & 0o170000 == 0o100000:  # a regular file: the common case, inline
                    path = child.path
                    if cst.st_nlink > 1:  # written through another link: no event here
                        trusted = False
                    known = cache_get(path)
                    if (
                        known is not None
                        and len(known) == 5
                        and known[0] == cst.st_size
                        and known[1] == cst.st_mtime_ns
                        and known[2] == cst.st_ctime_ns
                        and known[3] == cst.st_ino
                    ):
                        self.cached += 1
                        new_cache[path] = files[path] = known
                        entries.append(
                            (index, f"{name}/{child.name}", "f", mode & 0o7777, known[0], known[4])
                        )
                        continue
                    self._entry(index, path, f"{name}/{child.name}", cst)
                    if path in new_cache:
                        files[path] = new_cache[path]
                    else:  # not cached (changed while hashed, racy, unreadable)
                        trusted = False
                    continue
                cname = f"{name}/{child.name}"
                if stat.S_ISDIR(mode):
                    subdirs.append((child.path, cname, cst))
                else:
                    self._entry(index, child.path, cname, cst)
            todo.extend(subdirs)
            if trusted and len(self.errors) == errors:
                self.memos.keep(here, name, index, _DirMemo(entries[first:], files, subdirs))

    def _entry(self, index: int, real: str, shown: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(real)
            except OSError as exc:
                self.errors.append(f"{shown}: {exc.strerror or exc}")
                return
            self.entries.append((index, shown, "l", mode & 0o7777, None, target))
        elif stat.S_ISREG(mode):
            known = self.cache.get(real)
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            if isinstance(known, list) and len(known) == 5 and known[:4] == key:
                self.cached += 1
                self.new_cache[real] = known
                self.entries.append((index, shown, "f", mode & 0o7777, st.st_size, known[4]))
                return
            got = self._digest(real, shown, st)
            if got is not None:
                self.entries.append((index, shown, "f", mode & 0o7777, got[0], got[1]))
        else:
            self.entries.append((index, shown, "s", mode & 0o7777, None, None))

    def _digest(self, real: str, shown: str, st: os.stat_result) -> tuple[int, str] | None:
        """Hash a file the cache cannot answer for: (size, sha256), cached if it held
        still; None (an error noted) if it cannot be read as a regular file."""
        self.changed = True
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            self.errors.append(f"{shown}: {exc.strerror or exc}")
            return None
        try:
            if st.st_size <= _SMALL:
                # one bounded read (a FIFO or device swapped in cannot make it hang or run
                # on); the fstat after it says whether this was still the file listed
                data = os.read(fd, st.st_size + 1)
                after = os.fstat(fd)
                before = st
                digest = hashlib.sha256(data).hexdigest()
            else:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    self.errors.append(f"{shown}: not a regular file any more")
                    return None
                if self.buf is None:
                    self.buf = bytearray(_READ)
                digest = sha256_file(fd, self.buf)
                after = os.fstat(fd)
            if not stat.S_ISREG(after.st_mode):
                self.errors.append(f"{shown}: not a regular file any more")
                return None
        except OSError as exc:
            self.errors.append(f"{shown}: {exc.strerror or exc}")
            return None
        finally:
            os.close(fd)
        self.hashed += 1
        self.hashed_bytes += after.st_size
        now = time.time_ns()
        stable = (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        )
        racy = now - max(after.st_mtime_ns, after.st_ctime_ns) < RACY_NS
        if stable and not racy:
            self.new_cache[real] = [
                after.st_size,
                after.st_mtime_ns,
                after.st_ctime_ns,
                after.st_ino,
                digest,
            ]
        return after.st_size, digest


def _save_cache(path: Path, cache: dict[str, list[Any]]) -> None:
    # not durable: a torn or empty file does not load, and an empty cache only costs a
    # full re-hash
    write_atomic(path, marshal.dumps(cache, 4), durable=False)


def _load_cache(path: Path) -> dict[str, list[Any]]:
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    try:
        cache = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return {}
    return cache if isinstance(cache, dict) else {}


def replace(args: dict[str, Any], record: Callable[[str, str | None, str], None]) -> Any:
    """Repair one entry (see the module docstring); what was done."""
    path = args.get("path")
    action = args.get("action")
    if not isinstance(path, str) or not path:
        raise ValueError("audit.replace: missing path")
    if action not in ("write", "link", "chmod", "aside"):
        raise ValueError(f"audit.replace: unknown action {action!r}")
    full = os.path.join(os.path.expanduser("~"), os.path.expanduser(path))
    mode = args.get("mode")
    if action == "chmod":
        if not isinstance(mode, int):
            raise ValueError("audit.replace: chmod needs a mode")
        if os.path.islink(full):
            raise ValueError(f"audit.replace: {path} is a symlink (no mode to set)")
        os.chmod(full, mode)
        record("audit_repair", None, f"{path}: mode {mode:o}")
        return {"path": path, "action": action}
    aside = f"{full}{ASIDE}{int(time.time())}"
    if action == "aside":
        os.rename(full, aside)
        record("audit_repair", None, f"{path}: moved aside to {aside}")
        return {"path": path, "action": action, "aside": aside}
    parent = os.path.dirname(full) or "."
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(full)}{ASIDE}new-{uuid.uuid4().hex[:8]}")
    try:
        if action == "link":
            os.symlink(str(args.get("target")), temp)
        else:
            _copy_checked(_staged(args.get("staged")), temp, str(args.get("digest")), mode)
        kept = None
        if os.path.lexists(full):
            os.rename(full, aside)
            kept = aside
        os.rename(temp, full)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    record("audit_repair", None, f"{path}: replaced" + (f", old kept at {kept}" if kept else ""))
    return {"path": path, "action": action, "aside": kept}


def _staged(staged: Any) -> str:
    """``staged`` (relative to the user's home) resolved, if inside :data:`STAGING`."""
    if not isinstance(staged, str) or not staged:
        raise ValueError("audit.replace: write needs a staged file")
    top = os.path.realpath(os.path.join(os.path.expanduser("~"), STAGING))
    real = os.path.realpath(os.path.join(os.path.expanduser("~"), staged))
    if not real.startswith(top + os.sep):
        raise ValueError(f"audit.replace: staged file {staged} is not inside ~/{STAGING}")
    return real


def _copy_checked(staged: str, temp: str, digest: str, mode: Any) -> None:
    """Copy ``staged`` to ``temp`` (created here) and check its sha256 is ``digest``."""
    want = int(mode) if mode is not None else 0o644
    src = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                data = os.read(src, _READ)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view) :]
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    fd = os.open(temp, os.O_RDONLY)
    try:
        got = sha256_file(fd)
    finally:
        os.close(fd)
    if got != digest:
        raise ValueError(f"audit.replace: the copy's sha256 is {got[:12]}, not {digest[:12]}")
    os.chmod(temp, want)
