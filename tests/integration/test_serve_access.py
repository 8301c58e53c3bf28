"""``shoal serve --listen``: TCP behind tokens, the browser login, the cross-site check.

Each test starts ``shoal serve`` as a subprocess over a fresh state directory of its
own (no node managed) and stops it in ``finally``; requests are real HTTP on
loopback (``http.client``). Nothing listens on TCP without ``--listen``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import ServiceClient
from shoal.testing.serveproc import serving

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))
PROTO = {"Shoal-Protocol": "1"}


def _free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    return d


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "SHOAL_HOME": str(home)}


def token(home: Path, *args: str) -> str:
    done = subprocess.run(
        [SHOAL, "serve", "token", *args], env=_env(home), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def request(
    port: int,
    method: str,
    path: str,
    *,
    bearer: str | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        sent = {**PROTO, **(headers or {})}
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def tcp(home: Path) -> Iterator[int]:
    """A service listening on a free loopback port too; that port."""
    port = _free_port()
    with serving(home, "--listen", f"127.0.0.1:{port}"):
        yield port


def _listening_inodes() -> set[str]:
    """Inodes of every LISTEN socket in /proc/net/tcp and tcp6 of this namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_nothing_listens_on_tcp_without_listen(home: Path) -> None:
    with serving(home) as proc:
        assert ServiceClient.locate(home) is not None  # it serves (on the Unix socket)
        assert not _socket_inodes(proc.pid) & _listening_inodes()
    port = _free_port()
    with serving(home, "--listen", f"127.0.0.1:{port}") as proc:  # the check can see one
        assert _socket_inodes(proc.pid) & _listening_inodes()


def test_no_token_and_a_wrong_token_are_401(tcp: int, home: Path) -> None:
    status, headers, body = request(tcp, "GET", "/api/v1/status")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert "no token" in json.loads(body)["error"]
    status, _, body = request(tcp, "GET", "/api/v1/status", bearer="not-" + token(home))
    assert status == 401
    assert "wrong token" in json.loads(body)["error"]
    status, _, _ = request(tcp, "POST", "/api/v1/service/stop")  # refused before any route
    assert status == 401
    assert ServiceClient.locate(home) is not None


def test_admin_token_and_the_socket_without_one(tcp: int, home: Path) -> None:
    admin = token(home)
    status, _, body = request(tcp, "GET", "/api/v1/status", bearer=admin)
    assert status == 200
    assert json.loads(body)["listen"] == [f"http://127.0.0.1:{tcp}"]
    status, _, body = request(tcp, "POST", "/api/v1/sweep", bearer=admin)
    assert status == 200, body
    client = ServiceClient.locate(home)  # the Unix socket: the peer uid is the check
    assert client is not None and client.status()["listen"] == [f"http://127.0.0.1:{tcp}"]


def test_read_only_token_reads_but_changes_nothing(tcp: int, home: Path) -> None:
    read = token(home, "--read-only")
    assert read != token(home)
    status, _, _ = request(tcp, "GET", "/api/v1/status", bearer=read)
    assert status == 200
    for method, path, body in (
        ("POST", "/api/v1/sweep", None),
        ("POST", "/api/v1/runs", {"command": "true", "selection": "all"}),
        ("POST", "/api/v1/service/stop", None),
    ):
        status, _, answer = request(tcp, method, path, bearer=read, body=body)
        assert status == 403, (path, answer)
        assert "read-only" in json.loads(answer)["error"]
    assert ServiceClient.locate(home) is not None  # the stop was refused


def test_rotation_refuses_the_old_token_at_once(tcp: int, home: Path) -> None:
    old = token(home)
    assert request(tcp, "GET", "/api/v1/status", bearer=old)[0] == 200
    new = token(home, "--rotate")
    assert new != old and token(home) == new
    assert request(tcp, "GET", "/api/v1/status", bearer=old)[0] == 401
    assert request(tcp, "GET", "/api/v1/status", bearer=new)[0] == 200


def test_token_file_is_owner_only(tcp: int, home: Path) -> None:
    token(home, "--read-only")
    for name in ("tokens.json", ".tokens.lock"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    assert set(json.loads((home / "tokens.json").read_text())["tokens"]) == {"admin", "read"}


def _login(port: int, secret: str) -> str:
    """``GET /?token=`` as a browser opens it: the cookie it sets (``name=value``)."""
    status, headers, _ = request(port, "GET", f"/api/v1/status?token={secret}&after=3", headers={})
    assert status == 303
    assert headers["location"] == "/api/v1/status?after=3"  # the token left the URL
    cookie = headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
    assert secret not in cookie
    return attrs[0]


def test_token_in_the_url_logs_the_browser_in(tcp: int, home: Path) -> None:
    admin = token(home)
    assert request(tcp, "GET", "/api/v1/status?token=wrong")[0] == 401
    cookie = _login(tcp, admin)
    status, _, _ = request(tcp, "GET", "/api/v1/status", headers={"Cookie": cookie})
    assert status == 200
    token(home, "--rotate")  # a rotation ends the session too
    assert request(tcp, "GET", "/api/v1/status", headers={"Cookie": cookie})[0] == 401


def test_cookie_alone_needs_the_services_own_origin_to_change_anything(
    tcp: int, home: Path
) -> None:
    cookie = _login(tcp, token(home))
    own = f"http://127.0.0.1:{tcp}"
    for extra in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Referer": f"{own}.evil.example/"},
        {},
    ):
        status, _, body = request(tcp, "POST", "/api/v1/sweep", headers={"Cookie": cookie, **extra})
        assert status == 403, (extra, body)
        assert "session cookie alone" in json.loads(body)["error"]
    for extra in ({"Origin": own}, {"Referer": f"{own}/"}, {"X-Shoal-CSRF": "1"}):
        status, _, body = request(tcp, "POST", "/api/v1/sweep", headers={"Cookie": cookie, **extra})
        assert status == 200, (extra, body)


def test_ipv6_listener(home: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        port = _free_port(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with serving(home, "--listen", f"[::1]:{port}"):
        assert request(port, "GET", "/api/v1/status", host="::1")[0] == 401
        status, _, body = request(port, "GET", "/api/v1/status", host="::1", bearer=token(home))
        assert status == 200
        assert json.loads(body)["listen"] == [f"http://[::1]:{port}"]


def test_bad_listen_address_is_refused_in_one_line(home: Path) -> None:
    done = subprocess.run(
        [SHOAL, "serve", "--listen", "::1:80"], env=_env(home), capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shoal: error: --listen ::1:80: write an IPv6 address in brackets, [ADDR]:PORT"
    ]
