"""The audit's dirty set: inotify watches on audited directories between scans.

A scan lists a directory only after :meth:`DirWatch.add` has put a watch on it, so
every change after the listing is queued in the kernel. Before the next scan
:meth:`DirWatch.drain` reads the queue and names the directories that changed;
the scan lists those again and reuses its last listing of every other one.

What an unchanged directory's listing rests on (Linux inotify, ``inotify(7)``):
creating, removing or renaming an entry queues ``IN_CREATE``/``IN_DELETE``/
``IN_MOVED_*`` on the directory's watch; writing, truncating, ``chmod``,
``chown``, ``utime`` of a file in it through any descriptor opened by a path in
it queues ``IN_MODIFY``/``IN_ATTRIB``/``IN_CLOSE_WRITE`` there; an event on a
directory itself (no name) dirties it and its parent (whose listing holds its
mode). What it does not see, and how the caller stays right:

- a write through a hard link in another directory: files with more than one
  link are never trusted (their directory is listed every time);
- a queue overflow (``IN_Q_OVERFLOW``) or a watch the kernel dropped
  (``IN_IGNORED``): :attr:`DirWatch.overflowed`, every listing is dropped;
- writes through a shared writable ``mmap`` (no event at all), a file system
  mounted over a watched directory, changes a network file system's server
  makes: a listing is trusted for :data:`TRUST_SECONDS` at most, then the
  directory is stat-walked again (which sees a new mtime or inode);
- a watch that cannot be added (``max_user_watches``) or no inotify at all: that
  directory, or every one, is listed each time (the stat walk).

Directories a scan does not visit lose their watch (:meth:`DirWatch.keep_only`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

#: A directory's last listing is trusted for this long at most (mmap writes).
TRUST_SECONDS = 600.0

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")


class DirWatch:
    """One inotify instance over the directories audited (``open()``: None when the
    system has no inotify or no instance to spare)."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self.dirs: dict[int, str] = {}  # watch descriptor → directory
        self.watched: set[str] = set()

    @classmethod
    def open(cls) -> DirWatch | None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(fd, libc) if fd >= 0 else None

    def add(self, directory: str) -> bool:
        """Watch ``directory`` (before it is listed); False if it cannot be watched."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), ctypes.c_uint32(MASK))
        if wd < 0:
            return False
        self.dirs[wd] = directory
        self.watched.add(directory)
        return True

    def keep_only(self, directories: set[str]) -> None:
        """Remove the watches of every other directory."""
        for wd, directory in list(self.dirs.items()):
            if directory not in directories:
                self._libc.inotify_rm_watch(self.fd, wd)
                del self.dirs[wd]
                self.watched.discard(directory)

    def drain(self) -> tuple[set[str], bool]:
        """The directories changed since the last drain, and whether the kernel lost
        events (then no listing can be trusted)."""
        dirty: set[str] = set()
        overflowed = False
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                return dirty, True
            if not data:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    overflowed = True
                    continue
                directory = self.dirs.get(wd)
                if directory is None:
                    continue
                dirty.add(directory)
                if not length:  # the directory itself: its mode is in its parent's listing
                    dirty.add(os.path.dirname(directory))
                if mask & IN_IGNORED:
                    del self.dirs[wd]
                    self.watched.discard(directory)
                    overflowed = True  # a dropped watch: be safe, list everything again
        return dirty, overflowed

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a dropped FileAudit (tests) gives its instance back
        self.close()
