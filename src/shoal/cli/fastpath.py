"""The fast path of ``shoal run`` through ``shoal serve``: the entry point's first step.

A warm run spent ~75 ms of CPU in the CLI before its request left (argparse,
the CLI's imports, building the parser, the settings). :func:`answer` runs
before any of that (:func:`shoal.cli.main.main` calls it first): for ``shoal
run ...`` with a service answering on the state directory's socket, it sends
the command line as typed, the environment that decides the settings and
whether stdout and stderr are terminals, to ``POST /api/v1/cli/run``, and
writes what the service sends back. The service parses it with the CLI's own
parser and settings, runs it over its held connections and renders it with
the CLI's own code (:mod:`shoal.service.fastpathroute`), so stdout, stderr
and the exit status are those of ``shoal --no-service run ...``. This module
imports only ``os``, ``sys``, ``_socket`` and ``_signal`` (no ``json``, ``re``
or ``enum``: each costs milliseconds).

Every doubt falls through (``answer`` returns None and the CLI runs as
before): the first word is not ``run``; ``SHOAL_NO_SERVICE``, ``MQ_NODES`` or
``CLUSTERSHELL_CFGDIR`` is set (this process's environment decides those);
stdout or stderr is not UTF-8; an argument or variable that is not text; no
socket answers; anything but the fast path's frames comes back (an older
service, another protocol version, a refused body); or the service declines
(a usage error or ``--help``, logging flags, what only the direct path does,
``--stream``, ``--out-dir``), which it says before it runs anything.

The answer is HTTP/1.1 (chunked, or with a length); its body is frames of
one tag byte, eight hex digits of length and the payload: ``o`` bytes for
stdout, ``e`` for stderr (in the order the CLI writes them), ``x`` the exit
status, ``f`` fall through. Frames are written as they come (a progress line on a terminal is
drawn as the nodes finish, as wide as ``shutil.get_terminal_size`` says here:
its width is sent with the request). Ctrl-C (or SIGTERM) closes the socket,
which makes the service end the commands on the nodes, and exits as the CLI
does (130, 143); a closed stdout or stderr ends it quietly with 141.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Variables sent with the request: the settings' (``SHOAL_*``, the config paths).
SETTINGS_PREFIX = "SHOAL_"
#: Variables that keep ``run`` off the fast path (see the module docstring).
DIRECT_ENV = ("MQ_NODES", "CLUSTERSHELL_CFGDIR")
NO_SERVICE_ENV = "SHOAL_NO_SERVICE"
#: The route, its answer's content type, the protocol header (shoal.client's values).
ROUTE = "/api/v1/cli/run"
FRAMES = "application/x-shoal-frames"
PROTOCOL = 1
SOCKET_NAME = "serve.sock"
#: Exit statuses of shoal.cli.exitcodes (importing it costs ``signal``, ``enum``).
INTERRUPTED, BROKEN_PIPE, TERMINATED = 130, 141, 143

_JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", **{c: f"\\u{c:04x}" for c in range(0x20)}}


#: set by the SIGTERM handler, which then raises KeyboardInterrupt (as main.py delivers it);
#: a flag, not an exception class of our own: every exception lives in shoal.errors, which
#: this path does not import
_TERMINATED: list[bool] = []


def answer(argv: Sequence[str]) -> int | None:
    """The exit status of ``shoal run ...`` answered by the service; None: fall through."""
    if not argv or argv[0] != "run" or not _eligible():
        return None
    env = _settings_env()
    request = _request(argv, env)
    if request is None:
        return None
    import _signal
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    previous = _signal.signal(_signal.SIGTERM, _on_term)
    try:
        try:
            sock.settimeout(2.0)
            sock.connect(os.path.join(env["SHOAL_HOME"], SOCKET_NAME))
        except OSError:
            return None  # no service: the CLI goes direct
        return _exchange(sock, request, env["SHOAL_HOME"], as_json="--json" in argv)
    except KeyboardInterrupt:
        if _TERMINATED:
            return _told("shoal: terminated", TERMINATED)
        return _told("shoal: interrupted", INTERRUPTED)
    finally:
        sock.close()  # the service ends what still runs on the nodes
        _signal.signal(_signal.SIGTERM, previous)


def _eligible() -> bool:
    env = os.environ
    if env.get(NO_SERVICE_ENV, "").strip().lower() in ("1", "yes", "true", "on"):
        return False
    if any(env.get(name) for name in DIRECT_ENV):
        return False
    return all(
        (getattr(s, "encoding", None) or "").lower().replace("-", "") == "utf8"
        for s in (sys.stdout, sys.stderr)
    )


def _settings_env() -> dict[str, str]:
    """What the settings read of the environment, the paths as this process sees them."""
    env = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIX)}
    home = os.path.expanduser("~")
    env["SHOAL_HOME"] = env.get("SHOAL_HOME") or os.path.join(home, ".local", "state", "shoal")
    env["XDG_CONFIG_HOME"] = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return env


def _text(value: str) -> str:
    value.encode()  # not text (undecodable bytes in argv): UnicodeEncodeError
    return '"' + value.translate(_JSON_ESCAPES) + '"'


def _request(argv: Sequence[str], env: dict[str, str]) -> bytes | None:
    """The HTTP request (JSON written here: ``json`` imports ``re``); None if not text."""
    try:
        body = (
            '{"argv":[' + ",".join(map(_text, argv)) + '],"env":{'
            + ",".join(f"{_text(k)}:{_text(v)}" for k, v in env.items())
            + f'}},"tty":[{_tty(1)},{_tty(2)}],"columns":{_columns()}}}'
        ).encode()  # fmt: skip
    except UnicodeEncodeError:
        return None
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: shoal\r\nShoal-Protocol: {PROTOCOL}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _tty(fd: int) -> str:
    try:
        return "true" if os.isatty(fd) else "false"
    except OSError:
        return "false"


def _columns() -> int:
    """The terminal's width as the CLI's progress line reads it (shutil.get_terminal_size)."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(1).columns or 80
        except (OSError, ValueError):
            columns = 80
    return columns


def _on_term(signum: int, frame: object) -> None:
    _TERMINATED.append(True)
    raise KeyboardInterrupt


def _exchange(sock: object, request: bytes, home: str, *, as_json: bool) -> int | None:
    """Send, then write each frame as it comes; None if the service declined."""
    sock.settimeout(3600.0)  # type: ignore[attr-defined]
    try:
        sock.sendall(request)  # type: ignore[attr-defined]
        answer = _Answer(sock)
        if not answer.ours():
            return None  # not our answer (an older service, a refused request): the CLI decides
        for tag, payload in answer.frames():
            if tag == b"f":
                return None
            if tag == b"x":
                return int(payload)
            try:
                _write_all(1 if tag == b"o" else 2, payload)
            except BrokenPipeError:
                return BROKEN_PIPE  # a reader that went away, as the CLI ends then
    except OSError as exc:
        return _service_error(home, exc.strerror or str(exc) or type(exc).__name__, as_json)
    return _service_error(home, "answer cut short", as_json)


class _Answer:
    """The HTTP answer on ``sock``, read as it comes: its head, then its frames."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.pending = b""  # read, not yet taken
        while b"\r\n\r\n" not in self.pending and self._more():
            pass
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        self.lines = [line.lower() for line in head.split(b"\r\n")]
        self.chunked = b"transfer-encoding: chunked" in self.lines

    def _more(self) -> bool:
        data = self.sock.recv(262144)  # type: ignore[attr-defined]
        self.pending += data
        return bool(data)

    def ours(self) -> bool:
        return self.lines[0][9:12] == b"200" and f"content-type: {FRAMES}".encode() in self.lines

    def _body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (chunked, or until the service closes)."""
        if not self.chunked:
            while self.pending or self._more():
                data, self.pending = self.pending, b""
                yield data
            return
        while True:
            while b"\r\n" not in self.pending:
                if not self._more():
                    raise ConnectionError("stream cut in the middle")
            size_line, _, self.pending = self.pending.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return
            while len(self.pending) < size + 2:
                if not self._more():
                    raise ConnectionError("stream cut in the middle")
            yield self.pending[:size]
            self.pending = self.pending[size + 2 :]

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(tag, payload) of each frame, as soon as it is whole."""
        buf = b""
        for data in self._body():
            buf += data
            while len(buf) >= 9 and len(buf) >= 9 + int(buf[1:9], 16):
                size = int(buf[1:9], 16)
                yield buf[:1], buf[9 : 9 + size]
                buf = buf[9 + size :]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _told(line: str, code: int) -> int:
    try:
        _write_all(2, line.encode() + b"\n")
    except OSError:
        pass  # no terminal left to tell
    return code


def _service_error(home: str, why: str, as_json: bool) -> int:
    """The service went away mid-answer: the CLI's own error line for it."""
    from shoal.errors import ServiceError

    from .main import report

    path = os.path.join(home, SOCKET_NAME)
    return report(ServiceError(f"the service on {path} stopped answering: {why}"), as_json=as_json)
