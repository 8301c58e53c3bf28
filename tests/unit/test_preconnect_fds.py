"""Pre-connecting stays within the open-file limit (issue 18: 1,000 nodes at ulimit -n 512)."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator

import pytest

from shoal.nodes.model import Node
from shoal.transport import preconnect


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def test_start_connects_spends_at_most_half_the_free_descriptors(listener: int) -> None:
    nodes = [Node(f"n{i}", host="127.0.0.1", port=listener) for i in range(1, 301)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 100, hard))
    try:
        started = preconnect.start_connects(nodes, limit=1000)
        try:
            assert 0 < len(started) <= 50  # half of the 100 free, never EMFILE
            socket.socket().close()  # descriptors are left for the SSH work (no EMFILE)
        finally:
            for sock in started.values():
                sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_start_connects_stops_quietly_when_descriptors_run_out(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preconnect, "fd_budget", lambda: 10**6)  # as if the limit were lied about
    nodes = [Node(f"n{i}", host="127.0.0.1", port=listener) for i in range(1, 301)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 40, hard))
    try:
        started = preconnect.start_connects(nodes, limit=1000)  # no OSError raised
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert 0 < len(started) < 60  # as many as the limit allowed, then it stopped
    finally:
        for sock in started.values():
            sock.close()
