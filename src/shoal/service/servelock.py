"""The lock that makes ``shoal serve`` one process per state directory.

``serve.lock`` in the state directory is ``flock``-ed exclusively for the life
of the service, with its pid written inside. The kernel drops the lock when
the process ends however it ends (SIGKILL included), so a stale lock file is
harmless; :func:`lock_holder` asks the kernel, never trusts the pid alone.
Light on purpose (``shoal serve status|stop`` import it without FastAPI).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from shoal.errors import ServiceError

LOCK_NAME = "serve.lock"


class ServiceLock:
    """The flock on ``serve.lock``: held while one service runs for a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServiceError(
                f"shoal serve already runs for {self.path.parent} (pid {pid})"
            ) from None
        try:  # fixed width: later starts rewrite the same bytes (no new space on a full disk)
            os.pwrite(fd, f"{os.getpid():<15}\n".encode(), 0)
            os.ftruncate(fd, 16)
        except OSError as exc:
            os.close(fd)
            raise ServiceError(f"cannot write {self.path}: {exc.strerror}") from exc
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:  # the pid stays: lock_holder asks the kernel, not the file
            os.close(self.fd)
            self.fd = -1


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the service holding ``state_dir``'s lock, or None when none holds it."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
