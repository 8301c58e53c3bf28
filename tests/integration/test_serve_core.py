"""``shoal serve`` as a real process: lock, socket, restart, events, peers, faults.

Every test starts the service with ``shoal serve`` as a subprocess and stops it
in ``finally``. Tests that need nodes serve the lab's state directory (the
session's ``SHOAL_HOME``, where the lab registered its nodes); the others a
fresh directory of their own, so they manage no node.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shoal.client import ServiceClient
from shoal.errors import ServiceError
from shoal.lab import Lab
from shoal.testing.serveproc import serving

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "SHOAL_HOME": str(home)}


def _shoal(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHOAL, *args], env=_env(home), capture_output=True, text=True, timeout=timeout
    )


def _raw(path: Path, request: bytes) -> bytes:
    """Send one raw HTTP request to the socket and read until the service closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_one_service_per_directory_status_and_stop(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serving(home) as proc:
        sock = home / "serve.sock"
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        status = _shoal(home, "serve", "status")
        assert status.returncode == 0 and f"pid {proc.pid}" in status.stdout
        second = _shoal(home, "serve")
        assert second.returncode == 1
        assert f"shoal serve already runs for {home} (pid {proc.pid})" in second.stderr
        stopped = _shoal(home, "serve", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert proc.poll() == 0  # stop waited until it was gone
        assert not sock.exists()
    after = _shoal(home, "serve", "status")
    assert after.returncode == 3 and "no shoal serve runs" in after.stdout
    kinds = [(e["topic"], e["kind"]) for e in _journal(home)]
    assert kinds == [("service", "started"), ("service", "stopped")]


def _journal(home: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(home / "state.db")
    try:
        rows = db.execute("SELECT id, topic, kind FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    return [{"seq": r[0], "topic": r[1], "kind": r[2]} for r in rows]


def test_sigkill_then_restart_resumes_events_exactly(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    seen: list[int] = []
    with serving(home) as proc:
        client = ServiceClient.locate(home)
        assert client is not None
        first = client.events(after=0)
        seen += [int(e["seq"]) for e in first]
        follower = client.follow(after=seen[-1])
        proc.kill()
        proc.wait(10)
        with pytest.raises(ServiceError):
            for _ in follower:  # heartbeats until the service dies under it
                pass
    assert (home / "serve.sock").exists()  # stale: a SIGKILL removes nothing
    t0 = time.monotonic()
    assert ServiceClient.locate(home) is None  # ECONNREFUSED: at once
    assert time.monotonic() - t0 < 0.5
    with serving(home):
        client = ServiceClient.locate(home)
        assert client is not None
        later = client.events(after=seen[-1])
        seen += [int(e["seq"]) for e in later]
        assert [e["kind"] for e in later] == ["started"]
    assert seen == list(range(1, len(seen) + 1))  # no gap, no duplicate


def test_two_clients_follow_the_same_events_while_the_sweep_runs(lab: Lab) -> None:
    home = Path(os.environ["SHOAL_HOME"])  # the lab's nodes are in this state
    with serving(home, "--sweep-interval", "1", "--heartbeat", "0.5"):
        client = ServiceClient.locate(home)
        assert client is not None
        start = int(client.status()["events"]["last"])
        got: dict[int, list[dict[str, object]]] = {0: [], 1: []}

        def follow(i: int) -> None:
            c = ServiceClient.locate(home)
            assert c is not None
            for e in c.follow(after=start, topic="sweep"):
                if "seq" in e:
                    got[i].append(e)
                if sum(1 for x in got[i] if x["kind"] == "swept") >= 2:
                    return

        threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in got]
        for t in threads:
            t.start()
        statuses = [client.status()["pid"] for _ in range(20)]  # a third client meanwhile
        for t in threads:
            t.join(90)
            assert not t.is_alive(), "no two sweeps within 90 s"
        assert len(set(statuses)) == 1
        upto = min(int(got[0][-1]["seq"]), int(got[1][-1]["seq"]))
        a = [e for e in got[0] if int(e["seq"]) <= upto]  # type: ignore[call-overload]
        b = [e for e in got[1] if int(e["seq"]) <= upto]  # type: ignore[call-overload]
        assert a == b and a
        swept = [e for e in a if e["kind"] == "swept"]
        counted = sum(int(part.split()[0]) for part in str(swept[0]["detail"]).split(", "))
        assert counted == len(lab.nodes())


def test_another_local_user_cannot_use_the_socket(lab: Lab, tmp_path: Path) -> None:
    name = f"shoal{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    try:
        user = pwd.getpwnam(name)
        base = Path(tempfile.mkdtemp(prefix="shoal-peer-", dir="/tmp"))
        os.chmod(base, 0o711)  # the other user may reach the state directory, no further
        home = base / "home"
        request = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nShoal-Protocol: 1\r\n\r\n"
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            "    s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()); s.settimeout(10)\n"
            "    print(repr(s.recv(100)))\n"
            "except OSError as e:\n"
            "    print(type(e).__name__)\n"
        )
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]

        def attempt() -> str:
            cmd = [*as_user, "/usr/bin/python3", "-c", probe, str(home / "serve.sock")]
            out = subprocess.run(
                [*cmd, request.decode()], capture_output=True, text=True, timeout=30
            )
            return out.stdout.strip()

        with serving(home):
            assert _raw(home / "serve.sock", request).startswith(b"HTTP/1.1 200")  # the owner
            assert attempt() == "PermissionError"  # 0700 directory, 0600 socket
            os.chmod(home, 0o711)  # the file modes opened by mistake: the peer check still holds
            os.chmod(home / "serve.sock", 0o666)
            try:
                # closed without a byte of answer: seen as EOF, a reset, or a broken pipe when
                # the close comes before the request is written (a loaded machine)
                assert attempt() in ("b''", "ConnectionResetError", "BrokenPipeError")
            finally:
                os.chmod(home / "serve.sock", 0o600)
                os.chmod(home, 0o700)
        shutil.rmtree(base)
    finally:
        subprocess.run(["userdel", name], check=False)


def test_another_protocol_version_is_refused_naming_both(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serving(home):
        sock = home / "serve.sock"
        for header, client in ((b"Shoal-Protocol: 2\r\n", "client 2"), (b"", "client none")):
            raw = _raw(sock, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400")
            answer = json.loads(body)
            assert answer["kind"] == "version"
            assert answer["error"].startswith(f"version mismatch: service 1, {client}")
        bad = ServiceClient(str(sock))
        with pytest.raises(Exception) as info:
            bad.request("GET", "/api/v1/events", query={"after": "x"})
        assert getattr(info.value, "kind", None) == "usage"


def test_a_full_disk_is_one_clear_error_and_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        home = mnt / "home"
        with serving(home):
            pass
        before = _journal(home)
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        full = _shoal(home, "serve", "--sweep-interval", "0")
        assert full.returncode == 1
        errors = [line for line in full.stderr.splitlines() if line.startswith("shoal:")]
        assert len(errors) == 1
        assert re.fullmatch(
            rf"shoal: error: cannot (open|write) the state database {re.escape(str(home))}"
            r"/state.db: the disk holding it is full( \(nothing was changed\))?",
            errors[0],
        ), errors
        assert not (home / "serve.sock").exists()
        filler.unlink()
        with serving(home):
            pass
        after = _journal(home)
        assert after[: len(before)] == before
        assert [e["kind"] for e in after[len(before) :]] == ["started", "stopped"]
        db = sqlite3.connect(home / "state.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_locked_database_is_one_clear_error_and_reads_go_on(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serving(home):
        pass
    before = _journal(home)
    holder = sqlite3.connect(home / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = _shoal(home, "serve", "--sweep-interval", "0", "--busy-timeout", "0.5")
        assert locked.returncode == 1
        assert "is busy or broken: database is locked" in locked.stderr or (
            "locked by another process" in locked.stderr
        )
        assert len([ln for ln in locked.stderr.splitlines() if ln.startswith("shoal:")]) == 1
        assert not (home / "serve.sock").exists()
    finally:
        holder.execute("ROLLBACK")
    with serving(home, "--busy-timeout", "0.5"):
        holder.execute("BEGIN EXCLUSIVE")  # held while the service runs: reads still answer
        try:
            client = ServiceClient.locate(home)
            assert client is not None
            assert client.status()["events"]["last"] == len(before) + 1
            assert [e["kind"] for e in client.events(after=len(before))] == ["started"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert _journal(home)[: len(before)] == before
