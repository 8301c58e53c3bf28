"""File transfer over SFTP with no partial file ever under its final name.

Every file is written to a hidden temporary name beside its destination
(``.NAME.shoal-XXXX.tmp``), given its mode and times, then renamed over the
final name in one step (``posix-rename@openssh.com``). A failure, a full disk
or a killed connection leaves at most a temporary file, which is removed when
the connection still allows it. Downloads do the same on the local side.
Directories are copied recursively; symlinks are recreated as symlinks.
Remote glob patterns are expanded on the node.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import stat
from pathlib import Path

import asyncssh

from shoal.errors import OperationError

# Block sizes are left to asyncssh, which reads the server's limits@openssh.com:
# OpenSSH's sftp-server drops the session on a write larger than 256 KiB.


def _tmp_name(final: str) -> str:
    head, tail = posixpath.split(final)
    return posixpath.join(head, f".{tail}.shoal-{secrets.token_hex(4)}.tmp")


class SFTPCopier:
    """Uploads and downloads for one node over one SFTP session."""

    def __init__(self, sftp: asyncssh.SFTPClient, node: str) -> None:
        self.sftp = sftp
        self.node = node

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
        st = src.lstat()
        if stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self.sftp.remove(target)
            try:
                await self.sftp.symlink(os.readlink(src), target)
            except (asyncssh.Error, OSError) as exc:
                raise await self._explain(exc, "creating symlink", target) from exc
            return 0
        if stat.S_ISDIR(st.st_mode):
            await self._makedirs(target)
            sent = 0
            for child in sorted(src.iterdir()):
                sent += await self._upload_any(child, posixpath.join(target, child.name))
            await self._set_attrs(target, st)
            return sent
        if not stat.S_ISREG(st.st_mode):
            raise OperationError(f"{src} is not a regular file, directory or symlink", self.node)
        return await self._upload_file(src, target, st)

    async def _upload_file(self, src: Path, target: str, st: os.stat_result) -> int:
        tmp = _tmp_name(target)
        try:
            await self.sftp.put(str(src), tmp)
            await self._set_attrs(tmp, st)
            await self.sftp.posix_rename(tmp, target)
        except (asyncssh.Error, OSError) as exc:
            error = await self._explain(exc, "writing", target)
            with contextlib.suppress(asyncssh.Error, OSError):
                await self.sftp.remove(tmp)
            raise error from exc
        return st.st_size

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
        """Copy remote files matching ``pattern`` (glob, expanded on the node) to ``local``."""
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
        if into_dir:
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
        got = 0
        for raw in matches:
            match = raw.decode() if isinstance(raw, bytes) else raw
            name = posixpath.basename(match.rstrip("/")) or "root"
            got += await self._download_any(match, dest / name if into_dir else dest)
        return got

    async def _download_any(self, remote: str, dest: Path) -> int:
        try:
            attrs = await self.sftp.lstat(remote)
        except (asyncssh.Error, OSError) as exc:
            raise await self._explain(exc, "reading", remote) from exc
        mode = attrs.permissions or 0
        if stat.S_ISLNK(mode):
            target = await self.sftp.readlink(remote)
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            dest.symlink_to(target)
            return 0
        if stat.S_ISDIR(mode):
            dest.mkdir(parents=True, exist_ok=True)
            got = 0
            for name in sorted(await self.sftp.listdir(remote)):
                if name in (".", ".."):
                    continue
                got += await self._download_any(posixpath.join(remote, name), dest / name)
            os.chmod(dest, stat.S_IMODE(mode) & 0o777)
            if attrs.mtime is not None:
                os.utime(dest, (attrs.atime or attrs.mtime, attrs.mtime))
            return got
        tmp = dest.with_name(f".{dest.name}.shoal-{secrets.token_hex(4)}.tmp")
        try:
            await self.sftp.get(remote, str(tmp))
            os.chmod(tmp, stat.S_IMODE(mode) & 0o777)
            if attrs.mtime is not None:
                os.utime(tmp, (attrs.atime or attrs.mtime, attrs.mtime))
            os.replace(tmp, dest)
        except (asyncssh.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError) and not isinstance(exc, asyncssh.Error):
                raise OperationError(f"writing {dest} locally failed: {exc}", self.node) from exc
            raise await self._explain(exc, "reading", remote) from exc
        return attrs.size or 0
