"""The agent's command line: ``serve`` (daemonize), ``ctl`` (relay), ``version``.

``python3 agent.pyz serve [--home DIR] [--foreground]`` takes the working
area's lock (``agent.pid``, flock: one agent per working area), double-forks,
calls setsid, sends stdio to ``agent.log`` and serves; the first process waits
until the socket listens (or the start failed) and exits 0 printing the
agent's pid, so a caller over SSH learns the outcome and the agent survives the
SSH session. Exit status 3 means an agent already runs in that working area.

``python3 agent.pyz ctl [--home DIR]`` relays stdin to the agent's socket and
the replies to stdout: a fallback for SSH servers that refuse streamlocal
forwarding, and a debugging aid.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import select
import socket
import sys
import threading
from pathlib import Path

from . import protocol
from .server import AGENT_VERSION, Agent, read_build

LOG_MAX_BYTES = 1 << 20


def default_home() -> Path:
    env = os.environ.get("SHOAL_AGENT_HOME")
    return Path(env) if env else Path.home() / ".shoal"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent.pyz", description="Shoal node agent")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    serve = sub.add_parser("serve", help="run the agent (daemonized unless --foreground)")
    serve.add_argument("--home", type=Path, default=None, help="working area (~/.shoal)")
    serve.add_argument("--foreground", action="store_true", help="do not daemonize")
    serve.add_argument("--handover", type=Path, default=None, help=argparse.SUPPRESS)
    ctl = sub.add_parser("ctl", help="relay stdin/stdout to the agent's socket")
    ctl.add_argument("--home", type=Path, default=None)
    sub.add_parser("version", help="print protocol version and build id as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(
            json.dumps(
                {
                    "protocol": protocol.PROTOCOL_VERSION,
                    "version": AGENT_VERSION,
                    "build": read_build(),
                }
            )
        )
        return 0
    home = (args.home or default_home()).expanduser().absolute()
    if args.command == "ctl":
        return ctl(home)
    if args.handover is not None:
        return serve_handed_over(home, args.handover)
    return serve(home, foreground=args.foreground)


def serve_handed_over(home: Path, path: Path) -> int:
    """Serve in the process a previous build exec'd (``agent.handover``): already
    detached, its lock fd and running programs passed in ``path``."""
    data = json.loads(path.read_text())
    path.unlink()
    lock_fd = int(data["lock_fd"])
    os.set_inheritable(lock_fd, False)
    asyncio.run(Agent(home, lock_fd=lock_fd, handed=data.get("programs") or {}).serve())
    return 0


def _lock(home: Path) -> int | None:
    """Open and lock the pidfile; None when another agent holds it."""
    fd = os.open(str(home / "agent.pid"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _write_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: the lock still holds
        print(f"agent: cannot write pidfile: {exc}", file=sys.stderr)


def _running_pid(home: Path) -> str:
    try:
        return (home / "agent.pid").read_text().strip() or "?"
    except OSError:
        return "?"


def serve(home: Path, foreground: bool = False) -> int:
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        print(f"agent: cannot create working area {home}: {exc}", file=sys.stderr)
        return 1
    lock_fd = _lock(home)
    if lock_fd is None:
        print(f"agent: already running in {home} (pid {_running_pid(home)})", file=sys.stderr)
        return protocol.EXIT_RUNNING
    if foreground:
        _write_pid(lock_fd)
        asyncio.run(Agent(home, lock_fd=lock_fd).serve())
        return 0
    read_end, write_end = os.pipe()
    child = os.fork()
    if child > 0:
        os.close(write_end)
        os.close(lock_fd)
        os.waitpid(child, 0)
        return _await_ready(read_end, home)
    # first child: new session, then fork again so the agent is no session leader
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    try:
        _detach(home)
        _write_pid(lock_fd)
        agent = Agent(home, lock_fd=lock_fd)

        def ready() -> None:
            os.write(write_end, f"ok {os.getpid()}\n".encode())
            os.close(write_end)

        asyncio.run(agent.serve(ready))
    except BaseException as exc:
        try:
            os.write(write_end, f"error {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
        print(f"agent: stopped by error: {exc!r}", file=sys.stderr)
        os._exit(1)
    os._exit(0)


def _detach(home: Path) -> None:
    """chdir to the working area, stdin from /dev/null, stdout/stderr to agent.log."""
    os.chdir(str(home))
    log = home / "agent.log"
    try:
        if log.stat().st_size > LOG_MAX_BYTES:
            os.replace(str(log), str(home / "agent.log.1"))
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        out = os.open(str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


def _await_ready(read_end: int, home: Path, timeout: float = 20.0) -> int:
    ready, _, _ = select.select([read_end], [], [], timeout)
    line = os.read(read_end, 4096).decode(errors="replace").strip() if ready else ""
    os.close(read_end)
    if line.startswith("ok "):
        print(f"agent started in {home} (pid {line[3:]})")
        return 0
    reason = line[6:] if line.startswith("error ") else "no sign of life within the timeout"
    if not ready:
        reason = f"did not start within {timeout:g}s"
    print(f"agent: failed to start in {home}: {reason} (see {home / 'agent.log'})", file=sys.stderr)
    return 1


def ctl(home: Path) -> int:
    """Relay stdin to the socket and the socket to stdout until either side ends."""
    path = home / "agent.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        print(f"agent: cannot connect to {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    def pump_in() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=pump_in, daemon=True).start()
    while True:
        data = sock.recv(65536)
        if not data:
            break
        os.write(1, data)
    return 0
