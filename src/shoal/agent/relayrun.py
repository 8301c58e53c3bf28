"""The relay gateway's side of ``run``: a subtree's commands run from the gateway.

Theory of operation (issue 18 item 3, ClusterShell's tree mode). The controller
opens one SSH connection to a gateway with agent forwarding on and runs this
file, self-contained and stdlib-only (``python3 -c``: nothing is installed), in
one session of it. Its stdin's first line is the request (JSON)::

    {"nodes": [{"name", "host", "port", "user", "line", "stop"}],  # exact shell lines
     "known_hosts": "...",  # the controller's entries for these nodes, nothing else
     "connect_timeout": s, "keepalive": s, "timeout": s|null, "hard": s|null,
     "parallel": n, "max_output": bytes,  # of each stream sent up (0: all)
     "stream": bool}  # each output line sent up as it comes (``--stream``)

Each node gets the gateway's OpenSSH client with the forwarded agent
(``SSH_AUTH_SOCK`` of this session; no key file is ever written here), the
controller's known_hosts in a private temporary file, strict checking (never
accept-new: a key the controller did not send is refused), no user or system
ssh_config, and the client's own messages sent to a log file (``-E``) so a
node's stderr is the command's alone. Results are merged before they go up:
one JSON line per distinct outcome, ``{"nodes": [names], "exit", "stdout",
"stderr", "dropped"}`` (base64; ``dropped``: bytes beyond ``max_output``) or
``{"nodes": [...], "error": {"kind", "message"}}`` with the controller's wording
for connection failures, then ``{"done": n}``. With ``stream``, each line of
output goes up first as it comes: ``{"node", "stream", "line"}`` (base64).

The controller's end closing this session's stdin (an interrupt) first ends
every command still running on its node, as the direct path does: each
client is the master of a control socket in the temporary directory, and the
node's ``stop`` line (TERM, then KILL, to the sessions carrying the command's
token) runs over that connection, with no new login (the agent signs once per
node). Then the clients' process groups are stopped, and the temporary
directory goes with them.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

NodeReq = dict[str, Any]

#: Seconds a killed client may take before KILL.
KILL_GRACE = 2.0

#: Seconds a node may take to confirm it signalled an interrupted command.
END_TIMEOUT = 3.0
#: Seconds a client's pipes may stay open after it exited (a child holding them).
PUMP_DRAIN = 1.0
#: A line longer than this goes up in pieces of this size (as the controller's capture).
LINE_PIECE = 1 << 20

_out_lock = threading.Lock()

_lock = threading.Lock()
#: running clients -> (their node, their connection's control socket)
_clients: dict[subprocess.Popen[bytes], tuple[NodeReq, str]] = {}
_stopping = threading.Event()
_numbers = itertools.count()

#: OpenSSH client log lines -> (kind, message) in the controller's words; {where} is
#: ``host:port``, {t} the connect timeout.
_FAILURES = (
    (r"Connection refused", "unreachable", "connection refused by {where}"),
    (r"No route to host", "unreachable", "no route to host {where}"),
    (r"Network is unreachable", "unreachable", "network unreachable for {where}"),
    (r"Connection timed out|Operation timed out", "unreachable", "connect timed out after {t}s"),
    (r"Connection reset", "unreachable", "connection reset by {where}"),
    (r"Could not resolve hostname", "unreachable", "cannot resolve host name {host!r}"),
    (
        r"REMOTE HOST IDENTIFICATION HAS CHANGED",
        "hostkey",
        "HOST KEY CHANGED: the key offered differs from the one the controller sent; refusing",
    ),
    (
        r"Host key verification failed|host key is known",
        "hostkey",
        "host key not in known_hosts; refusing (verify it, add it with ssh-keyscan, "
        "or use --host-keys accept-new to trust on first use)",
    ),
    (
        r"Permission denied",
        "auth",
        "auth failed for {user}@{where}: tried publickey (the "
        "controller's agent, forwarded to the gateway)",
    ),
    (r"Timeout, server .* not responding", "unreachable", "connection lost while the command ran"),
)


def classify(log_text: str, node: NodeReq, connect_timeout: float) -> tuple[str, str] | None:
    """(kind, message) for a client that exited 255 having logged ``log_text``; None when
    it logged nothing (the command itself exited 255)."""
    text = log_text.strip()
    if not text:
        return None
    where = f"{node['host']}:{node['port']}"
    fields = {"where": where, "t": f"{connect_timeout:g}", "host": node["host"],
              "user": node["user"]}  # fmt: skip
    for pattern, kind, message in _FAILURES:
        if re.search(pattern, text):
            return kind, message.format(**fields)
    return "transport", "SSH error: " + text.splitlines()[-1][:300]


#: The only ``-o`` keywords a request may set (as the controller resolved them).
ALGORITHMS = ("KexAlgorithms", "HostKeyAlgorithms", "Ciphers", "MACs")


def algorithms(node: NodeReq) -> list[str]:
    """``-o Keyword=list`` for the node's algorithm lists (others are ignored)."""
    out = []
    for key, value in sorted((node.get("algorithms") or {}).items()):
        if key in ALGORITHMS and re.fullmatch(r"[\^+-]?[A-Za-z0-9@.,_-]+", str(value)):
            out += ["-o", f"{key}={value}"]
    return out


def _client_argv(node: NodeReq, known_hosts: str, log: str) -> list[str]:
    """What every OpenSSH client of a node's is started with."""
    return [
        "ssh", "-F", "/dev/null", "-E", log, "-T", "-x", "-a",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=" + known_hosts,
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "CheckHostIP=no",
        "-o", "UpdateHostKeys=no",
        "-o", "IdentityFile=none",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def ssh_argv(
    node: NodeReq, known_hosts: str, log: str, req: dict[str, Any], control: str = ""
) -> list[str]:
    """The OpenSSH client's command line for one node (pure; unit-tested). With
    ``control``, the client is also the master of that socket, so the command can be
    ended over its connection (:func:`stop_argv`) without another login."""
    mux = ["ControlMaster=yes", f"ControlPath={control}"] if control else ["ControlPath=none"]
    return [
        *_client_argv(node, known_hosts, log),
        *(word for opt in mux for word in ("-o", opt)),
        "-o", f"ConnectTimeout={max(1, round(req['connect_timeout']))}",
        "-o", f"ServerAliveInterval={max(1, round(req.get('keepalive') or 5))}",
        "-o", "ServerAliveCountMax=3",
        *algorithms(node),
        "-p", str(node["port"]), "-l", node["user"], node["host"], "--", node["line"],
    ]  # fmt: skip


def stop_argv(node: NodeReq, known_hosts: str, log: str, control: str) -> list[str]:
    """The client that runs the node's ``stop`` line over the running command's own
    connection (its master's ``control`` socket: no new login, the agent's one
    signature per node is spent already)."""
    return [
        *_client_argv(node, known_hosts, log),
        "-o", "ControlMaster=no", "-o", f"ControlPath={control}",
        "-o", "ConnectTimeout=1",
        "-p", str(node["port"]), "-l", node["user"], node["host"], "--", node["stop"],
    ]  # fmt: skip


def _end(node: NodeReq, control: str, known_hosts: str, log: str) -> None:
    """Run the node's ``stop`` line over the client's connection, bounded in time."""
    if not node.get("stop") or not os.path.exists(control):
        return
    try:
        subprocess.run(
            stop_argv(node, known_hosts, log, control),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=END_TIMEOUT,
            check=False,
            # its own session: the stop line ends the sessions of every process whose
            # command line names the token, and this client's does (where nodes share
            # the gateway's process table, as the lab's do, it would end the relay)
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(KILL_GRACE)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def run_one(node: NodeReq, known_hosts: str, workdir: str, req: dict[str, Any]) -> dict[str, Any]:
    """One node's outcome: a dict without ``nodes`` (the merge key is its JSON)."""
    if _stopping.is_set():
        return {"error": {"kind": "unreachable", "message": "relay stopped"}}
    log = os.path.join(workdir, f"log-{threading.get_ident()}")
    with open(log, "w"):
        pass
    started = time.monotonic()
    control = os.path.join(workdir, f"cm-{next(_numbers)}")
    proc = subprocess.Popen(
        ssh_argv(node, known_hosts, log, req, control),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with _lock:
        _clients[proc] = (node, control)
    cap, live = int(req.get("max_output") or 0), bool(req.get("stream"))
    out, err = _Kept(cap), _Kept(cap)
    pumps = [
        threading.Thread(target=_pump, args=(pipe, node["name"], name, kept, live), daemon=True)
        for pipe, name, kept in ((proc.stdout, "stdout", out), (proc.stderr, "stderr", err))
    ]
    for pump in pumps:
        pump.start()
    try:
        proc.wait(timeout=req.get("hard"))
    except subprocess.TimeoutExpired:
        _stop(proc)
        t = req.get("timeout") or 0
        msg = f"command timed out after {t:g}s (node stopped answering)"
        return {"error": {"kind": "timeout", "message": msg}}
    finally:
        with _lock:
            _clients.pop(proc, None)
        for pump in pumps:
            pump.join(PUMP_DRAIN)
    elapsed = time.monotonic() - started
    status = proc.returncode
    if status == 255:
        with open(log, errors="replace") as f:
            failure = classify(f.read(), node, req["connect_timeout"])
        if failure is not None:
            return {"error": {"kind": failure[0], "message": failure[1]}}
    timeout = req.get("timeout")
    if timeout is not None and status in (124, 137) and elapsed >= timeout * 0.98:
        msg = f"command timed out after {timeout:g}s and was killed on the node"
        return {"error": {"kind": "timeout", "message": msg}}
    if status < 0:  # the client itself was killed (the relay is stopping)
        return {"error": {"kind": "unreachable", "message": "relay stopped"}}
    return {
        "exit": status,
        "stdout": base64.b64encode(out.data).decode("ascii"),
        "stderr": base64.b64encode(err.data).decode("ascii"),
        "dropped": out.dropped + err.dropped,
    }


class _Kept:
    """One stream of one node's command: its first ``cap`` bytes (0: all), the rest
    counted (the controller's ``--max-output``: the gateway holds no more either)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def add(self, piece: bytes) -> None:
        room = len(piece) if self.cap <= 0 else self.cap - len(self.data)
        if room >= len(piece):
            self.data += piece
        else:
            self.data += piece[: max(room, 0)]
            self.dropped += len(piece) - max(room, 0)


def _pump(pipe: Any, node: str, stream: str, kept: _Kept, live: bool) -> None:
    """Read one of a client's pipes to its end; ``live`` (``--stream``): each line (a
    line longer than :data:`LINE_PIECE` in pieces) goes up at once as a record."""
    while True:
        piece = pipe.readline(LINE_PIECE) if live else pipe.read1(1 << 16)
        if not piece:
            return
        kept.add(piece)
        if live:
            line = piece[:-1] if piece.endswith(b"\n") else piece
            _emit({"node": node, "stream": stream, "line": base64.b64encode(line).decode()})


def _emit(record: dict[str, Any]) -> None:
    """One record up to the controller (whole lines: the pumps and main share stdout)."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    with _out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def merge(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``[(name, outcome)]`` -> one record per distinct outcome, its nodes in order."""
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for name, outcome in pairs:
        key = json.dumps(outcome, sort_keys=True)
        groups.setdefault(key, (outcome, []))[1].append(name)
    return [dict(outcome, nodes=names) for outcome, names in groups.values()]


def _watch_stdin(known_hosts: str, workdir: str) -> None:
    """The controller's end went away (an interrupt): end every command still running
    on its node, as the direct path does, then stop every client."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except OSError:
        pass
    _stopping.set()
    with _lock:
        running = list(_clients.items())
    log = os.path.join(workdir, "log-stop")
    enders = [
        threading.Thread(target=_end, args=(node, control, known_hosts, log), daemon=True)
        for _, (node, control) in running
    ]
    for t in enders:
        t.start()
    for t in enders:
        t.join(END_TIMEOUT + 1)
    for proc, _ in running:
        _stop(proc)


def main() -> int:
    req = json.loads(sys.stdin.buffer.readline())
    workdir = tempfile.mkdtemp(prefix="shoal-relay-")
    try:
        known_hosts = os.path.join(workdir, "known_hosts")
        fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(req["known_hosts"])
        threading.Thread(target=_watch_stdin, args=(known_hosts, workdir), daemon=True).start()
        nodes = req["nodes"]
        workers = max(1, min(int(req.get("parallel") or 64), len(nodes) or 1))
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(run_one, n, known_hosts, workdir, req) for n in nodes]
            pairs = [(n["name"], fut.result()) for n, fut in zip(nodes, futures)]
        for record in merge(pairs):
            _emit(record)
        _emit({"done": len(pairs)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
