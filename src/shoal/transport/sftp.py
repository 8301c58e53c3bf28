"""File transfer over SFTP with no partial file ever under its final name.

Every file is written to a hidden temporary name beside its destination
(``.NAME.shoal-XXXX.tmp``), given its mode and times, then renamed over the
final name in one step (``posix-rename@openssh.com``). A failure, a full disk
or a killed connection leaves at most a temporary file, which is removed when
the connection still allows it; so does an interrupt (the copy's task
cancelled: Ctrl-C, SIGTERM, a per-node timeout), within
:data:`CLEANUP_TIMEOUT`. Downloads do the same on the local side.
Directories are copied recursively; symlinks are recreated as symlinks (made
under a temporary name and renamed over, like files).
Remote glob patterns are expanded on the node.

Downloads treat the node as hostile. The remote trees are read in full and
checked before anything is written: every name is one plain component, no two
matches land on one local name, and a symlink is recreated only when its
target, resolved inside its own pulled tree (through the tree's other links),
stays in it; anything else is refused with its path named (:class:`LocalError`,
never counted against the node). Everything below the destination the user
named is then made through directory fds with ``O_NOFOLLOW``/``O_EXCL``, so a
pull never creates, follows or chmods anything outside it: an existing symlink
where a directory goes is refused, files and links replace what is there by
``rename``. Only what the pull created gets the node's mode, without
setuid/setgid/sticky and masked by the controller's umask (as scp without
``-p``, hence pssh's pslurp, does), and its times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from shoal.agent.manifest import ManifestError, check_link
from shoal.errors import LocalError, OperationError

#: Deepest remote tree a pull descends into (each level holds a local fd while written).
MAX_DEPTH = 256
#: Longest an interrupted or failed upload waits for the node to remove its temporary file.
CLEANUP_TIMEOUT = 3.0

# Block sizes are left to asyncssh, which reads the server's limits@openssh.com:
# OpenSSH's sftp-server drops the session on a write larger than 256 KiB.


def _tmp_name(final: str) -> str:
    head, tail = posixpath.split(final)
    return posixpath.join(head, f".{tail}.shoal-{secrets.token_hex(4)}.tmp")


def _shown(path: object) -> str:
    """A local ``path`` for a one-line message: bytes that are not UTF-8 escaped."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _umask() -> int:
    mask = os.umask(0o077)  # the stricter value for the instant it is in place
    os.umask(mask)
    return mask


@dataclass
class RemoteEntry:
    """One entry of a remote tree as the node described it, before anything is written."""

    name: str  # the local name it gets
    path: str  # on the node
    raw_mode: int
    size: int = 0
    times: tuple[int, int] | None = None
    target: str = ""  # of a symlink
    children: list[RemoteEntry] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """f, d or l (file, directory, symlink), or ? for anything else (fifo, device...)."""
        fmt = stat.S_IFMT(self.raw_mode)
        return {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}.get(fmt, "?")

    @property
    def mode(self) -> int:
        return stat.S_IMODE(self.raw_mode) & 0o777  # no setuid/setgid/sticky


def plain_name(name: str) -> bool:
    """One path component that names an entry in its directory and nothing else."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _has_control(name: str) -> bool:
    """A name a terminal or a shell line would not show as it is (ESC, newline, DEL...)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in name)


def local_name(match: str, node: str | None = None) -> str:
    """The local name of a glob match copied into a directory ("." merges into it)."""
    stripped = match.rstrip("/")
    if not stripped:
        return "root"
    name = posixpath.basename(stripped)
    if name != "." and not plain_name(name):
        raise LocalError(f"refusing to name a local copy of {match!r} {name!r}", node)
    return name


def check_trees(trees: list[RemoteEntry], node: str | None = None) -> None:
    """LocalError unless the trees land on distinct names and keep their symlinks inside."""
    claimed: dict[str, str] = {}
    for tree in trees:
        for top in tree.children if tree.name == "." else [tree]:
            if top.name in claimed:
                raise LocalError(
                    f"refusing {claimed[top.name]} and {top.path}: both would be written "
                    f"to the same local name {top.name!r}",
                    node,
                )
            claimed[top.name] = top.path
    for tree in trees:
        if tree.kind == "l":
            raise LocalError(
                f"refusing symlink {tree.path} -> {tree.target}: it leads out of the pulled "
                f"tree (pull {tree.path.rstrip('/')}/ to copy what it points to)",
                node,
            )
        kinds: dict[str, str] = {}
        targets: dict[str, str] = {}
        links: list[tuple[str, RemoteEntry]] = []
        pending = [("", c) for c in tree.children]
        while pending:
            parent, entry = pending.pop()
            rel = f"{parent}/{entry.name}" if parent else entry.name
            kinds[rel] = entry.kind
            if entry.kind == "l":
                targets[rel] = entry.target
                links.append((rel, entry))
            pending.extend((rel, c) for c in entry.children)
        for rel, entry in links:
            try:
                check_link(rel, entry.target, kinds, targets)
            except ManifestError:
                raise LocalError(
                    f"refusing symlink {entry.path} -> {entry.target}: "
                    "it leads out of the pulled tree",
                    node,
                ) from None


async def _finish_bounded(cleanup: Awaitable[object]) -> None:
    """Run ``cleanup`` to its end or :data:`CLEANUP_TIMEOUT`, even through another cancel.

    An interrupt can cancel the task twice (a second signal, a worker told to stop while
    it is already stopping); the cleanup is bounded, so it is finished first and the
    cancellation re-raised after it. Its own failure is ignored: it is a last effort.
    """
    task = asyncio.ensure_future(asyncio.wait_for(cleanup, CLEANUP_TIMEOUT))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except (asyncssh.Error, OSError, asyncio.TimeoutError):
            break
    if not task.cancelled():
        task.exception()  # retrieved: a failed last effort is not an error of its own
    if cancelled:
        raise asyncio.CancelledError


class SFTPCopier:
    """Uploads and downloads for one node over one SFTP session."""

    def __init__(
        self,
        sftp: asyncssh.SFTPClient,
        node: str,
        discard: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.sftp = sftp
        self.node = node
        # Removes a temporary name when the copy was cancelled: the SFTP channel may
        # still hold megabytes of queued writes ahead of a remove sent on it (on a
        # 5 MB/s link the remove came too late on 1 node in 8), so the connection
        # offers a path around them (a fresh channel); without one, SFTP's remove.
        self.discard = discard or sftp.remove

    # -- errors -------------------------------------------------------------------------
    async def _explain(self, exc: Exception, action: str, path: str) -> OperationError:
        if isinstance(exc, asyncssh.SFTPError) and exc.code == asyncssh.FX_FAILURE:
            with contextlib.suppress(asyncssh.Error, OSError):
                vfs = await self.sftp.statvfs(posixpath.dirname(path) or ".")
                if vfs.bavail * vfs.frsize < 64 * 1024 or vfs.favail == 0:
                    return OperationError(
                        f"no space left on device while {action} {path}", self.node
                    )
        reason = exc.reason if isinstance(exc, asyncssh.SFTPError) else str(exc)
        return OperationError(f"{action} {path} failed: {reason}", self.node)

    # -- upload -------------------------------------------------------------------------
    async def _remote_is_dir(self, path: str) -> bool:
        try:
            return await self.sftp.isdir(path)
        except (asyncssh.Error, OSError):
            return False

    async def upload(self, local: str, remote: str) -> int:
        """Copy a local file or tree to ``remote``; returns bytes sent."""
        src = Path(local)
        self._check_utf8(src, remote, "the destination")
        if not src.exists() and not src.is_symlink():
            raise OperationError(f"local path {local} does not exist", self.node)
        target = remote
        if remote.endswith("/") or await self._remote_is_dir(remote or "."):
            target = posixpath.join(remote, src.name)
        target = target or src.name
        parent = posixpath.dirname(target)
        if parent:
            await self._makedirs(parent)
        return await self._upload_any(src, target)

    async def _makedirs(self, path: str) -> None:
        try:
            await self.sftp.makedirs(path, exist_ok=True)
        except (asyncssh.Error, OSError) as exc:
            raise await self._explain(exc, "creating directory", path) from exc

    async def _upload_any(self, src: Path, target: str) -> int:
        self._check_utf8(src, target, "the name")
        try:
            st = src.lstat()
            link = os.readlink(src) if stat.S_ISLNK(st.st_mode) else ""
            children = sorted(src.iterdir()) if stat.S_ISDIR(st.st_mode) else []
        except OSError as exc:  # the local tree changed under the copy
            raise LocalError(
                f"reading {_shown(src)} locally failed: {exc.strerror or exc}", self.node
            ) from None
        if stat.S_ISLNK(st.st_mode):
            self._check_utf8(src, link, "the symlink's target")
            await self._renamed_over(
                target, "creating symlink", lambda tmp: self.sftp.symlink(link, tmp)
            )
            return 0
        if stat.S_ISDIR(st.st_mode):
            await self._makedirs(target)
            sent = 0
            for child in children:
                sent += await self._upload_any(child, posixpath.join(target, child.name))
            await self._set_attrs(target, st)
            return sent
        if not stat.S_ISREG(st.st_mode):  # never opened: a FIFO would block the copy
            raise LocalError(
                f"{_shown(src)} is not a regular file, directory or symlink", self.node
            )
        return await self._upload_file(src, target, st)

    def _check_utf8(self, src: Path, text: str, what: str) -> None:
        """SFTP names are sent as UTF-8: one that is not is refused, never sent mangled."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalError(
                f"refusing to copy {_shown(src)}: {what} is not valid UTF-8 (rename it)",
                self.node,
            ) from None

    async def _upload_file(self, src: Path, target: str, st: os.stat_result) -> int:
        async def write(tmp: str) -> None:
            await self.sftp.put(str(src), tmp)
            await self._set_attrs(tmp, st)

        await self._renamed_over(target, "writing", write)
        return st.st_size

    async def _renamed_over(
        self, target: str, action: str, make: Callable[[str], Awaitable[object]]
    ) -> None:
        """``make`` a temporary name beside ``target``, then rename it over ``target``.

        Whatever stops it (an error, the task cancelled) removes the temporary name
        first, waiting at most :data:`CLEANUP_TIMEOUT` for the node.
        """
        tmp = _tmp_name(target)
        try:
            await make(tmp)
            await self.sftp.posix_rename(tmp, target)
        except BaseException as exc:
            error = None
            if isinstance(exc, (asyncssh.Error, OSError)):
                error = await self._explain(exc, action, target)  # before space is freed
            remove = self.discard if isinstance(exc, asyncio.CancelledError) else self.sftp.remove
            await _finish_bounded(remove(tmp))
            if error is None:
                raise
            raise error from exc

    async def _set_attrs(self, path: str, st: os.stat_result) -> None:
        attrs = asyncssh.SFTPAttrs(
            permissions=stat.S_IMODE(st.st_mode) & 0o777,  # no setuid/setgid/sticky
            atime=int(st.st_atime),
            mtime=int(st.st_mtime),
        )
        try:
            await self.sftp.setstat(path, attrs)
        except (asyncssh.Error, OSError) as exc:
            raise await self._explain(exc, "setting mode and times of", path) from exc

    # -- download -----------------------------------------------------------------------
    async def download(self, pattern: str, local: str) -> int:
        """Copy remote files matching ``pattern`` (glob, expanded on the node) to ``local``.

        The remote trees are read and checked first (plain names, no two matches on
        one local name, symlinks only to their own tree); nothing is written until
        all of them pass. Then everything below the destination is created through
        directory fds, never through a symlink (see the module docstring).
        """
        try:
            matches = await self.sftp.glob(pattern or ".")
        except asyncssh.SFTPNoSuchFile:
            matches = []
        except (asyncssh.Error, OSError) as exc:
            raise await self._explain(exc, "listing", pattern) from exc
        if not matches:
            raise OperationError(f"no remote file matches {pattern}", self.node)
        dest = Path(local)
        into_dir = local.endswith("/") or dest.is_dir() or len(matches) > 1
        trees = []
        for raw in matches:
            match = raw.decode() if isinstance(raw, bytes) else raw
            name = local_name(match, self.node) if into_dir else dest.name
            trees.append(await self._walk(match, name, None, 0))
        check_trees(trees, self.node)
        root = dest if into_dir else dest.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._local_error(exc, root) from exc
        umask = _umask()
        try:
            got = 0
            for tree in trees:
                got += await self._write(tree, root_fd, root, umask)
            return got
        finally:
            os.close(root_fd)

    def _local_error(self, exc: OSError, path: Path) -> LocalError:
        return LocalError(f"writing {path} locally failed: {exc.strerror or exc}", self.node)

    async def _walk(
        self, path: str, name: str, attrs: asyncssh.SFTPAttrs | None, depth: int
    ) -> RemoteEntry:
        """The remote tree at ``path`` (never following its symlinks), read in full."""
        if depth > MAX_DEPTH:
            raise LocalError(f"refusing {path}: deeper than {MAX_DEPTH} levels", self.node)
        try:
            if attrs is None or attrs.permissions is None:
                attrs = await self.sftp.lstat(path)
            entry = RemoteEntry(name, path, attrs.permissions or 0, attrs.size or 0)
            if attrs.mtime is not None:
                entry.times = (attrs.atime or attrs.mtime, attrs.mtime)
            if entry.kind == "l":
                entry.target = await self.sftp.readlink(path)
            elif entry.kind == "d":
                listing = await self.sftp.readdir(path)
        except (asyncssh.Error, OSError) as exc:
            raise await self._explain(exc, "reading", path) from exc
        if entry.kind == "d":
            seen: set[str] = set()
            for item in sorted(listing, key=lambda i: str(i.filename)):
                child = str(item.filename)
                if child in (".", ".."):
                    continue
                if not plain_name(child) or child in seen or _has_control(child):
                    raise LocalError(
                        f"refusing remote name {child!r} in {path}: not one plain, unique name"
                        " without control characters",
                        self.node,
                    )
                seen.add(child)
                entry.children.append(
                    await self._walk(posixpath.join(path, child), child, item.attrs, depth + 1)
                )
        elif entry.kind == "?":
            raise LocalError(
                f"refusing {path}: not a regular file, directory or symlink", self.node
            )
        return entry

    async def _write(self, entry: RemoteEntry, dir_fd: int, parent: Path, umask: int) -> int:
        """Create ``entry`` under the directory ``dir_fd`` (shown as ``parent``)."""
        if entry.name == ".":  # the pattern named a directory itself: merge into the root
            return sum([await self._write(c, dir_fd, parent, umask) for c in entry.children])
        local = parent / entry.name
        if entry.kind == "l":
            tmp = _tmp_name(entry.name)
            try:
                os.symlink(entry.target, tmp, dir_fd=dir_fd)
                try:
                    os.rename(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dir_fd)
                    raise
            except OSError as exc:
                raise self._local_error(exc, local) from exc
            return 0
        if entry.kind == "f":
            return await self._write_file(entry, dir_fd, local, umask)
        fd, created = self._open_dir(dir_fd, entry.name, local)
        try:
            got = 0
            for child in entry.children:
                got += await self._write(child, fd, local, umask)
            if created:  # never the mode or times of a directory this pull did not make
                os.fchmod(fd, entry.mode & ~umask)
                if entry.times:
                    os.utime(fd, entry.times)
        except OSError as exc:
            raise self._local_error(exc, local) from exc
        finally:
            os.close(fd)
        return got

    def _open_dir(self, dir_fd: int, name: str, local: Path) -> tuple[int, bool]:
        """An fd of the directory ``name`` (made 0700 if absent) and whether it was made."""
        created = False
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._local_error(exc, local) from exc
        try:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(name, flags, dir_fd=dir_fd), created
        except OSError as exc:
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                raise LocalError(
                    f"refusing to write through {local}: it is a symlink", self.node
                ) from exc
            raise self._local_error(exc, local) from exc

    async def _write_file(self, entry: RemoteEntry, dir_fd: int, local: Path, umask: int) -> int:
        """The file's bytes into a new temporary file beside it, renamed over ``local``."""
        tmp = _tmp_name(entry.name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise self._local_error(exc, local) from exc
        got = 0
        try:
            try:
                async with self.sftp.open(entry.path, "rb") as remote:
                    # one byte past the size it reported: a file that is longer (or shorter)
                    # than the node said, a lying server's or one changing, is refused
                    async for offset, data in await remote.read_parallel(entry.size + 1):
                        os.pwrite(fd, data, offset)
                        got += len(data)
                if got != entry.size:
                    more = "more" if got > entry.size else "fewer"
                    raise OperationError(
                        f"refusing {entry.path}: the node reported {entry.size} bytes and sent "
                        f"{more} (changed while read, or its SFTP server lies)",
                        self.node,
                    )
            except asyncssh.Error as exc:
                raise await self._explain(exc, "reading", entry.path) from exc
            except OSError as exc:
                raise self._local_error(exc, local) from exc
            try:
                os.fchmod(fd, entry.mode & ~umask)
                if entry.times:
                    os.utime(fd, entry.times)
                os.close(fd)
                fd = -1
                os.rename(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                raise self._local_error(exc, local) from exc
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        return got
