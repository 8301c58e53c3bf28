"""Size-rotated log files that keep what was never collected, within a budget.

``NAME.log`` grows up to ``max_bytes``; then it becomes ``NAME.log.1`` and the
older backups shift up (renames: a file keeps its inode, which is how the
controller's log collection (:mod:`.logship`) knows it whatever its name).
A rotated file the controller has *collected* (stored and verified, see
:meth:`RotatingLog.mark_collected`) is dropped once ``backups`` newer ones
exist; one never collected is kept until the log's files would exceed
``budget`` bytes (default ``max_bytes * (backups + 1)``, the old bound), and
then the oldest is dropped and reported through ``on_drop(file, bytes)`` (the
agent records a ``log_budget`` event naming it), so the bound on disk use is
exact either way. Writes are split at the boundary. Offsets handed to
followers are absolute byte counts since the log was opened by this agent.
A write that fails (full disk) is dropped and reported through ``on_error``;
the writer keeps going. The first write that succeeds again starts with one
line saying how many bytes were lost and why (:data:`GAP_NOTE`), after a newline
if the loss cut a line, so a half line is never joined to a later one and the
gap is visible in the log and in what is collected from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

ErrorHook = Callable[[str, Optional[OSError]], None]
#: Called with the file name and byte count of data dropped before it was collected.
DropHook = Callable[[str, int], None]
#: The line written where output was lost ({lost}: how many bytes; {why}: the error).
GAP_NOTE = "[shoal agent: {lost} bytes of output lost here: {why}]\n"


class RotatingLog:
    """One program's output log. Not thread-safe; the agent writes from its event loop."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 1 << 20,
        backups: int = 3,
        on_error: ErrorHook | None = None,
        budget: int | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if backups < 0:
            raise ValueError("backups must be 0 or more")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_error = on_error
        self.budget = max_bytes * (backups + 1) if budget is None else budget
        if self.budget < max_bytes:
            raise ValueError("the log budget must be at least max_bytes")
        self.on_drop = on_drop
        self.collected: set[int] = set()  # inodes of rotated files the controller holds
        self._fd: int | None = None
        self.size = 0
        self.base = 0  # bytes that went to rotated files since this object was made
        self.dropped = 0  # bytes lost to write errors
        self._lost = 0  # of which since the last write that succeeded
        self._why = ""
        self._line_open = False  # the last byte written was not a newline

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            st = os.fstat(self._fd)
            self.size = st.st_size
            self.collected.discard(st.st_ino)  # a freed file's inode, reused
        return self._fd

    def backup_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def rotated(self) -> list[tuple[int, Path]]:
        """The rotated files present as ``(index, path)``, newest (index 1) first."""
        prefix = self.path.name + "."
        found = []
        try:
            names = os.listdir(str(self.path.parent))
        except OSError:
            return []
        for name in names:
            suffix = name[len(prefix) :] if name.startswith(prefix) else ""
            if suffix.isdigit():
                found.append((int(suffix), self.path.with_name(name)))
        return sorted(found)

    def mark_collected(self, inode: int) -> None:
        """The controller stored and verified the whole rotated file ``inode``."""
        self.collected.add(inode)

    def rotate(self) -> None:
        """Shift backups up by one, start an empty log, drop what the policy says."""
        self.close()
        if self.budget <= self.max_bytes:
            if self.on_drop is not None and self.size:
                self.on_drop(self.path.name, self.size)
            os.truncate(str(self.path), 0)
        else:
            for index, older in reversed(self.rotated()):
                os.replace(str(older), str(self.backup_path(index + 1)))
            if self.path.exists():
                os.replace(str(self.path), str(self.backup_path(1)))
            self._prune()
        self.base += self.size
        self.size = 0

    def _prune(self) -> None:
        """Drop collected files past ``backups``, then the oldest past the budget."""
        files = []
        for index, path in self.rotated():
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((index, path, st.st_ino, st.st_size))
        total = sum(size for _, _, _, size in files)
        kept = []
        for rank, (_index, path, ino, size) in enumerate(files):
            if rank >= self.backups and ino in self.collected:
                self._unlink(path, ino)
                total -= size
            else:
                kept.append((path, ino, size))
        while kept and total > self.budget - self.max_bytes:
            path, ino, size = kept.pop()  # the oldest
            self._unlink(path, ino)
            total -= size
            if ino not in self.collected and self.on_drop is not None:
                self.on_drop(path.name, size)

    def _unlink(self, path: Path, ino: int) -> None:
        try:
            os.unlink(str(path))
        except OSError:
            pass
        self.collected.discard(ino)

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating as needed; errors are reported, never raised."""
        if self._lost and data:
            note = GAP_NOTE.format(lost=self._lost, why=self._why).encode()
            failed = self._append(b"\n" + note if self._line_open else note)
            if failed is not None:
                self._drop(len(data), failed[1])
                return
            self._lost = 0
        failed = self._append(data)
        if failed is not None:
            self._drop(len(failed[0]), failed[1])
        elif self.on_error is not None:
            self.on_error(str(self.path), None)

    def _append(self, data: bytes) -> tuple[memoryview, OSError] | None:
        """Write all of ``data``; on an error, what was left unwritten and the error."""
        view = memoryview(data)
        try:
            while view:
                fd = self._open()
                room = self.max_bytes - self.size
                if room <= 0:
                    self.rotate()
                    continue
                written = os.write(fd, view[:room])
                if written:
                    self._line_open = view[written - 1] != 0x0A  # not a newline
                self.size += written
                view = view[written:]
        except OSError as exc:
            self.close()
            return view, exc
        return None

    def _drop(self, lost: int, exc: OSError) -> None:
        self.dropped += lost
        self._lost += lost
        self._why = exc.strerror or str(exc)
        if self.on_error is not None:
            self.on_error(str(self.path), exc)

    @property
    def failing(self) -> tuple[str, int] | None:
        """While writes fail: the error's text and the bytes lost since the last good one."""
        return (self._why, self._lost) if self._lost else None

    @property
    def offset(self) -> int:
        """Absolute offset of the end of the log."""
        return self.base + self.size

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        found = [path for _, path in reversed(self.rotated())]
        return found + ([self.path] if self.path.exists() else [])

    def disk_usage(self) -> int:
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def tail(self, lines: int, limit: int = 1 << 20) -> bytes:
        """The last ``lines`` lines (at most ``limit`` bytes), across backups if needed."""
        chunks: list[bytes] = []
        count = 0
        total = 0
        for path in reversed(self.files()):
            try:
                with open(str(path), "rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    size = handle.tell()
                    start = max(0, size - (limit - total))
                    handle.seek(start)
                    data = handle.read()
            except OSError:
                continue
            chunks.insert(0, data)
            count += data.count(b"\n")
            total += len(data)
            if count > lines or total >= limit:
                break
        blob = b"".join(chunks)
        if lines <= 0:
            return b""
        parts = blob.split(b"\n")
        trailing = parts[-1] == b""
        if trailing:
            parts = parts[:-1]
        kept = parts[-lines:]
        return b"\n".join(kept) + (b"\n" if trailing and kept else b"")

    def read_from(self, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Bytes after absolute ``offset`` (from the current file) and the new offset."""
        start = offset - self.base
        if start < 0 or offset > self.offset:
            start = 0  # rotated away, or an offset from before this agent started
        try:
            with open(str(self.path), "rb") as handle:
                handle.seek(start)
                data = handle.read(limit)
        except OSError:
            return b"", self.offset
        return data, self.base + start + len(data)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
