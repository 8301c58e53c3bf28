"""Run a command with stdout and stderr on a pseudo-terminal and read all it writes.

The CLI behaves differently on a terminal (progress bars, escaped output, colours),
so tests of what a user sees run it here. :func:`on_terminal` is bounded: past
``timeout`` the process is killed, and it is always waited for.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence


def on_terminal(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, bytes]:
    """``argv``'s exit status and every byte it wrote (stdout and stderr share the terminal)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        list(argv), stdout=follower, stderr=follower, env=None if env is None else dict(env)
    )
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        code = proc.wait(timeout=30)
    return code, out
