"""A deployed directory on the node: versions side by side, one atomic switch.

Layout for a push to ``REMOTE_DIR`` (say ``~/site``)::

    ~/site                      symlink → .site.shoal/versions/<id>  (what apps use)
    ~/.site.shoal/versions/<id>/    complete, verified trees (the last K kept)
    ~/.site.shoal/manifests/<id>.json
    ~/.site.shoal/staging/<id>/     a version being assembled (never seen by apps)
    ~/.site.shoal/history.json      activations, newest last

Theory of operation. :meth:`Area.assemble` builds the new tree in ``staging``
from verified chunks: those in the chunk store (fetched for this push) and
those already sitting in the files of the versions kept here (read at the
offsets their manifests give and hashed again, since a running application
may have changed them). A big file whose chunks the fetcher wrote in place
(the store's ``<version>.f<N>``) is completed there and hard-linked into
staging, not copied; where linking is impossible (another file system, or
the store's file is deployed already) it is copied as before. Entries are
created in manifest order with ``O_EXCL | O_NOFOLLOW`` (links with
``link(2)``, which never follows the new name) in a directory this code made,
and a manifest whose entries would write through a symlink never gets this far
(:func:`manifest.validate`), so nothing outside the tree is ever written.
Modes are applied last (setuid/setgid dropped unless asked; the top
directory's own mode, from the manifest, once it is in ``versions``), and the file
system is flushed once (``syncfs``, when ``durable``) so a power cut cannot
expose a switched-to version with missing data. Only then is the
tree renamed into ``versions`` and ``REMOTE_DIR`` switched with one
``rename(2)`` of a fresh symlink over the old one: applications see the whole
old version or the whole new one, never a mix. A failure (a full disk, a chunk
that no longer matches) removes the staging tree and leaves the running
version as it was. Old versions beyond the last K are deleted after a switch.

Nothing that exists is replaced but Shoal's own symlink: a real directory
at ``REMOTE_DIR``, even an empty one (unless the push says
``replace_empty_dir``), or a foreign symlink is refused, and so are ``/``,
the home directory and the agent's own working area (:func:`resolve_target`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
import zlib
from pathlib import Path
from typing import Any

from . import manifest as mf
from .chunkstore import ChunkStore, sha256
from .persist import read_json, write_atomic

#: Parsed manifests by (file, size, mtime): a big tree's manifest is parsed once.
_PARSED: dict[tuple[str, int, int], mf.Manifest] = {}


def _remember(path: str, size: int, mtime_ns: int, parsed: mf.Manifest) -> None:
    if len(_PARSED) >= 8:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[(path, size, mtime_ns)] = parsed


class AreaError(Exception):
    """The deployed directory cannot be changed; the message says what and where."""


class NeedChunks(AreaError):
    """Chunks expected in local files did not verify; they must be fetched."""

    def __init__(self, chunks: list[str]) -> None:
        super().__init__(f"{len(chunks)} local chunks changed on disk; fetch them")
        self.chunks = chunks


#: Where applications keep their software inside the agent's working area
#: (``<home>/apps/<app>/sw/<name>``, :func:`shoal.app.naming.app_dir`): the only
#: part of that area a push may deploy to.
APPS_DIR = "apps"


def resolve_target(
    remote_dir: str, home: Path | None = None, agent_home: Path | None = None
) -> Path:
    """``REMOTE_DIR`` as an absolute path (relative ones are under the user's home).

    AreaError for ``/``, the home directory or any directory holding it, and
    the agent's working area ``agent_home`` (or a directory holding it, or
    anything inside it but applications' software under :data:`APPS_DIR`):
    a push there would replace what the node needs with a symlink.
    """
    if not remote_dir or "\0" in remote_dir:
        raise AreaError("empty remote directory")
    user_home = home or Path.home()
    path = Path(os.path.expanduser(remote_dir))
    if not path.is_absolute():
        path = user_home / path
    path = Path(os.path.normpath(str(path)))
    if path.parent == path:
        raise AreaError(f"cannot deploy to {path}")
    real = Path(os.path.realpath(str(path.parent))) / path.name
    if _within(Path(os.path.realpath(str(user_home))), real):
        raise AreaError(f"cannot deploy to {path}: it is the home directory or holds it")
    if agent_home is not None:
        own = Path(os.path.realpath(str(agent_home)))
        apps = own / APPS_DIR
        for place in (real, real.parent / f".{real.name}.shoal"):
            if _within(own, place) or (_within(place, own) and not _within(place.parent, apps)):
                raise AreaError(f"cannot deploy to {path}: it is the agent's working area {own}")
    return path


def _within(path: Path, top: Path) -> bool:
    """``path`` is ``top`` or under it."""
    return path == top or top in path.parents


def _oserror(exc: OSError, where: object) -> AreaError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return AreaError(f"disk full writing {where}: {exc.strerror}")
    return AreaError(f"{where}: {exc.strerror or exc}")


class Area:
    def __init__(self, target: Path, *, replace_empty_dir: bool = False) -> None:
        self.target = target
        self.replace_empty_dir = replace_empty_dir  # an empty directory at target may go
        self.root = target.parent / f".{target.name}.shoal"
        self.versions = self.root / "versions"
        self.manifests = self.root / "manifests"
        self.staging = self.root / "staging"

    # -- inspection ------------------------------------------------------------

    def link_for(self, version: str) -> str:
        return f".{self.target.name}.shoal/versions/{version}"

    def current(self) -> str | None:
        """The version ``REMOTE_DIR`` points at; None before the first push.

        AreaError when ``REMOTE_DIR`` is something Shoal did not make (a real
        directory or a foreign symlink), so it is never clobbered; an empty
        directory is replaced only when :attr:`replace_empty_dir` says so.
        """
        try:
            st = os.lstat(str(self.target))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _oserror(exc, self.target) from None
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(str(self.target))
            prefix = f".{self.target.name}.shoal/versions/"
            if link.startswith(prefix) and mf.is_version(link[len(prefix) :]):
                return link[len(prefix) :]
            raise AreaError(f"{self.target} is a symlink Shoal did not make (to {link})")
        if stat.S_ISDIR(st.st_mode) and not os.listdir(str(self.target)):
            if self.replace_empty_dir:
                return None
            raise AreaError(
                f"{self.target} is an empty directory, not a Shoal deployment;"
                " remove it or push with --replace-empty-dir"
            )
        raise AreaError(f"{self.target} exists and is not a Shoal deployment; move it away")

    def check_root(self) -> None:
        """The area must be a real directory (never a symlink someone planted)."""
        try:
            st = os.lstat(str(self.root))
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise AreaError(f"{self.root} is not a directory")

    def has_version(self, version: str) -> bool:
        return (self.versions / version).is_dir() and (self.manifests / f"{version}.json").is_file()

    def manifest(self, version: str) -> mf.Manifest | None:
        """A kept version's manifest (parsed once: files named by version never change)."""
        path = self.manifests / f"{version}.json"
        try:
            st = os.stat(str(path))
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        cached = _PARSED.get(key)
        if cached is not None:
            return cached
        try:
            data = path.read_bytes()
            if mf.version_of(data) != version:
                return None  # torn or altered (saved without fsync): fetched again
            parsed = mf.parse(data)
        except (OSError, mf.ManifestError):
            return None
        _remember(*key, parsed)
        return parsed

    def save_manifest(self, version: str, data: bytes, parsed: mf.Manifest | None = None) -> None:
        """Record a version's manifest (and remember it parsed, when given).

        Written to a temporary file and renamed, without an fsync of its own
        (a push's begin should not wait for the disk): the ``syncfs`` before
        the version is switched to flushes it, and a torn copy left by a crash
        does not hash to its version, so :meth:`manifest` ignores it.
        """
        path = self.manifests / f"{version}.json"
        try:
            self.check_root()
            self.manifests.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(path, data, 0o600, durable=False)
            if parsed is not None:
                st = os.stat(str(path))
                _remember(str(path), st.st_size, st.st_mtime_ns, parsed)
        except OSError as exc:
            raise _oserror(exc, self.manifests) from None

    def history(self) -> list[dict[str, Any]]:
        value = read_json(self.root / "history.json", [])
        return value if isinstance(value, list) else []

    def kept(self) -> list[str]:
        """Versions present here, oldest activation first."""
        try:
            present = {p.name for p in self.versions.iterdir() if mf.is_version(p.name)}
        except OSError:
            return []
        order: list[str] = []
        for item in self.history():
            v = item.get("version")
            if v in present and v not in order:
                order.append(v)
            elif v in order:
                order.remove(v)
                order.append(v)
        return order + sorted(present - set(order))

    def describe(self) -> dict[str, Any]:
        current = self.current()
        history = self.history()
        when = {h.get("version"): h.get("time") for h in history}
        versions = []
        for v in self.kept():
            m = self.manifest(v)
            versions.append(
                {
                    "version": v,
                    "activated": when.get(v),
                    "files": sum(1 for e in m.entries if e.kind == "f") if m else None,
                    "bytes": m.total_bytes if m else None,
                }
            )
        return {"dir": str(self.target), "current": current, "versions": versions}

    # -- reuse ---------------------------------------------------------------------

    def local_chunks(self) -> dict[str, tuple[str, int, int]]:
        """chunk → (file, offset, size) in the kept versions, the current one first."""
        order = self.kept()
        current = self.current()
        if current in order:
            order.remove(current)
            order.append(current)
        where: dict[str, tuple[str, int, int]] = {}
        for version in order:  # later (current) versions overwrite older locations
            m = self.manifest(version)
            if m is None:
                continue
            base = f"{self.versions}/{version}/"
            for digest, (path, offset, size) in m.chunk_locations().items():
                where[digest] = (base + path, offset, size)
        return where

    # -- assembly and switch -------------------------------------------------------

    def assemble(
        self,
        m: mf.Manifest,
        version: str,
        store: ChunkStore,
        *,
        allow_setuid: bool = False,
        durable: bool = True,
    ) -> dict[str, int]:
        """Build ``versions/<version>`` from verified chunks (see the module docstring)."""
        if self.has_version(version):
            return {"reused": 0, "stored": 0, "linked": 0}
        self.check_root()
        if not (self.manifests / f"{version}.json").is_file():
            self.save_manifest(version, m.to_bytes(), m)
        stage = self.staging / version
        local = self.local_chunks()
        reader = _LocalReader(local)
        counts = {"reused": 0, "stored": 0, "linked": 0}
        need: list[str] = []
        packs: dict[int, bytes] = {}
        same_files = self._unchanged_files()
        try:
            if stage.exists() or stage.is_symlink():
                _remove_tree(stage)
            self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.mkdir(str(stage), 0o700)
            dirs: list[tuple[str, int]] = []
            for number, e in enumerate(m.entries):
                path = os.path.join(str(stage), e.path)
                if e.kind == "d":
                    os.mkdir(path, 0o700)
                    dirs.append((path, mf.file_mode(e.mode, allow_setuid)))
                elif e.kind == "l":
                    os.symlink(e.target, path)
                else:
                    mode = mf.file_mode(e.mode, allow_setuid)
                    same = (
                        same_files.get((tuple(h for h, _ in e.chunks), mode)) if e.chunks else None
                    )
                    if same is not None:
                        os.link(same, path)  # unchanged since the running version: share it
                        counts["reused"] += e.size
                        counts["linked"] += e.size
                        continue
                    if not self._link_placed(e, number, path, version, store, reader, counts, need):
                        self._write_file(e, path, m, store, reader, packs, counts, need)
                    os.chmod(path, mode, follow_symlinks=False)
            if need:
                raise NeedChunks(sorted(set(need)))
            for path, mode in reversed(dirs):
                os.chmod(path, mode)
            self._save_stamps(version, m, stage)
            if durable:
                _sync_fs(stage)  # every file on disk before anyone can switch to it
            self.versions.mkdir(parents=True, exist_ok=True, mode=0o755)
            os.replace(str(stage), str(self.versions / version))
            # the top's own mode only now: renaming a directory needs write access to it
            os.chmod(str(self.versions / version), mf.file_mode(m.root_mode, allow_setuid))
            _fsync_dir(self.versions)
        except NeedChunks:
            _remove_tree(stage)
            raise
        except OSError as exc:
            _remove_tree(stage)
            where = exc.filename or stage
            raise _oserror(exc, where) from None
        finally:
            reader.close()
        return counts

    # -- unchanged files ---------------------------------------------------------
    #
    # Files identical (same chunks, same mode) to one of the running version are
    # hard-linked, not copied: an update that changes 1% of a tree writes about 1%.
    # Whether a deployed file is still what its manifest says is decided like git's
    # index does: its size, mtime and inode are recorded at assembly
    # (``manifests/<id>.stat.json``); a file whose stat differs is not linked and its
    # chunks are read and hashed instead. Deployed trees are meant to be read-only
    # (like OSTree's); an application that writes into one changes every version
    # that shares the file.

    def _save_stamps(self, version: str, m: mf.Manifest, root: Path) -> None:
        stamps: dict[str, list[int]] = {}
        for e in m.entries:
            if e.kind == "f":
                st = os.lstat(os.path.join(str(root), e.path))
                stamps[e.path] = [st.st_size, st.st_mtime_ns, st.st_ino]
        write_atomic(self.manifests / f"{version}.stat.json", json.dumps(stamps).encode(), 0o600)

    def _unchanged_files(self) -> dict[tuple[tuple[str, ...], int], str]:
        """(chunk ids, mode) → path of an untouched file of the running version."""
        current = self.current()
        m = self.manifest(current) if current else None
        if current is None or m is None:
            return {}
        stamps = read_json(self.manifests / f"{current}.stat.json", {})
        if not isinstance(stamps, dict):
            return {}
        base = self.versions / current
        out: dict[tuple[tuple[str, ...], int], str] = {}
        for e in m.entries:
            stamp = stamps.get(e.path)
            if e.kind != "f" or not e.chunks or not isinstance(stamp, list):
                continue
            path = os.path.join(str(base), e.path)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if [st.st_size, st.st_mtime_ns, st.st_ino] == stamp and stat.S_ISREG(st.st_mode):
                out[(tuple(h for h, _ in e.chunks), stat.S_IMODE(st.st_mode))] = path
        return out

    def _link_placed(
        self,
        e: mf.Entry,
        number: int,
        path: str,
        version: str,
        store: ChunkStore,
        reader: _LocalReader,
        counts: dict[str, int],
        need: list[str],
    ) -> bool:
        """Complete the store's placed copy of file ``number`` and hard-link it at ``path``.

        The fetcher wrote each chunk of this push at its first place in the
        file (:meth:`ChunkStore.plan`); what is missing there (later copies of
        a chunk, chunks reused from old versions or other pushes) is written
        now, each verified. False when there is no such file or it cannot be
        linked here (another file system): the caller then copies as before.
        """
        if e.pack is not None or not e.chunks:
            return False
        placed = store.placed_file(version, number)
        if placed is None:
            return False
        source, fd = placed
        stored = reused = offset = 0
        for digest, size in e.chunks:
            if store.verify_at(digest, version, number, offset):
                stored += size
            else:
                data: bytes | None
                try:
                    data = store.read(digest)
                    stored += size
                except OSError:
                    data = reader.read(digest)
                    if data is None:
                        need.append(digest)
                        offset += size
                        continue
                    reused += size
                view = memoryview(data)
                done = 0
                while done < size:
                    done += os.pwrite(fd, view[done:], offset + done)
            offset += size
        if os.fstat(fd).st_size != e.size:
            os.ftruncate(fd, e.size)  # never longer in practice; short only if need
        try:
            os.link(source, path, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                return False
            raise
        counts["stored"] += stored
        counts["reused"] += reused
        return True

    def _write_file(
        self,
        e: mf.Entry,
        path: str,
        m: mf.Manifest,
        store: ChunkStore,
        reader: _LocalReader,
        packs: dict[int, bytes],
        counts: dict[str, int],
        need: list[str],
    ) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if e.pack is not None:
                index, offset = e.pack
                if index not in packs:
                    packs.clear()  # packs are used in order: keep one in memory
                    packs[index] = _unpack(m.packs[index], store, need)
                _write_all(fd, packs[index][offset : offset + e.size])
            else:
                for digest, size in e.chunks:
                    if store.copy_to(digest, fd):
                        counts["stored"] += size
                        continue
                    data = reader.read(digest)
                    if data is None:
                        need.append(digest)
                        continue
                    counts["reused"] += size
                    _write_all(fd, data)
        finally:
            os.close(fd)

    def switch(self, version: str, action: str = "push") -> str | None:
        """Point ``REMOTE_DIR`` at ``version`` with one rename; returns the previous one."""
        previous = self.current()
        if not self.has_version(version):
            raise AreaError(f"version {version} is not on this node in {self.root}")
        tmp = self.target.parent / f".{self.target.name}.shoal-link.{os.getpid()}"
        try:
            if os.path.lexists(str(tmp)):
                os.unlink(str(tmp))
            os.symlink(self.link_for(version), str(tmp))
            if (
                previous is None
                and os.path.isdir(str(self.target))
                and not os.path.islink(str(self.target))
            ):
                os.rmdir(str(self.target))  # an empty directory stood there
            os.replace(str(tmp), str(self.target))
            _fsync_dir(self.target.parent)
        except OSError as exc:
            try:
                os.unlink(str(tmp))
            except OSError:
                pass
            raise _oserror(exc, self.target) from None
        entry = {"version": version, "time": time.time(), "action": action, "previous": previous}
        history = ([*self.history(), entry])[-200:]
        try:
            write_atomic(self.root / "history.json", json.dumps(history).encode(), 0o600)
        except OSError:
            pass  # the switch happened; history is advisory
        return previous

    def gc(self, keep: int, protect: str | None = None) -> list[str]:
        """Delete versions beyond the newest ``keep`` (never the current one, nor
        ``protect``: a version just staged beside it)."""
        current = self.current()
        kept = self.kept()
        removable = [v for v in kept if v not in (current, protect)]
        excess = len(kept) - max(1, keep)
        removed: list[str] = []
        for version in removable[: max(0, excess)]:
            _remove_tree(self.versions / version)
            for suffix in (".json", ".stat.json"):
                try:
                    os.unlink(str(self.manifests / f"{version}{suffix}"))
                except OSError:
                    pass
            removed.append(version)
        for leftover in _listdir(self.staging):
            _remove_tree(self.staging / leftover)
        return removed

    def pick(self, to: str | None) -> str:
        """The version a rollback goes to: ``to`` (an id or unique prefix) or the previous."""
        kept = self.kept()
        current = self.current()
        if to:
            matches = [v for v in kept if v.startswith(to)]
            if len(matches) != 1:
                raise AreaError(
                    f"no kept version matches {to!r} in {self.root}"
                    if not matches
                    else f"{to!r} matches several versions: {', '.join(matches)}"
                )
            return matches[0]
        for item in reversed(self.history()):
            v = item.get("previous")
            if item.get("version") == current and v in kept and v != current:
                return str(v)
        older = [v for v in kept if v != current]
        if not older:
            raise AreaError(f"no earlier version is kept in {self.root}")
        return older[-1]


class _LocalReader:
    """Reads chunks out of deployed files, verifying each; keeps a few files open."""

    def __init__(self, where: dict[str, tuple[str, int, int]]) -> None:
        self.where = where
        self.files: dict[str, int] = {}

    def read(self, digest: str) -> bytes | None:
        spot = self.where.get(digest)
        if spot is None:
            return None
        path, offset, size = spot
        try:
            fd = self.files.get(path)
            if fd is None:
                if len(self.files) >= 32:
                    self.close()
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                self.files[path] = fd
            data = os.pread(fd, size, offset)
        except OSError:
            return None
        return data if len(data) == size and sha256(data) == digest else None

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()


def _unpack(pack: mf.Pack, store: ChunkStore, need: list[str]) -> bytes:
    try:
        blob = store.read(pack.hash)
    except OSError:
        need.append(pack.hash)
        return b""
    if sha256(blob) != pack.hash:
        need.append(pack.hash)
        return b""
    raw = zlib.decompress(blob)
    if len(raw) != pack.raw:
        raise AreaError(f"pack {pack.hash[:12]} unpacks to {len(raw)} bytes, not {pack.raw}")
    return raw


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_fs(path: Path) -> None:
    """Flush the file system holding ``path``: one syncfs(2), not one fsync per file."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(str(path), os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(str(path))
    except OSError:
        return []


def _remove_tree(path: Path) -> None:
    """Remove a tree we made, even where its modes forbid writing."""
    if os.path.islink(str(path)):
        os.unlink(str(path))
        return
    if not path.exists():
        return

    def fix(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(str(path), onerror=fix)
