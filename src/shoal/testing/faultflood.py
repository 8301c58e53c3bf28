"""Connection floods during a push (issue 17 part 2), a row of the fault suite
(see :mod:`.faultsuite` for the row type).

While a push runs, this process opens :data:`FLOOD` TCP connections to the
controller's chunk server and as many to one node's chunk server, holds them,
sends a byte now and then and never authenticates; on another node a local
process holds :data:`FLOOD` connections to the agent's socket. The push must
complete on every node and the flooded processes' open files stay bounded::

    row = connection_flood(lab, fleet, work)
    assert row.ok, row
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shlex
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from shoal.content.push import PushOptions, push_async
from shoal.lab.labctl import Lab
from shoal.nodes.model import Node

from .faultsuite import AGENT_AREA, FaultRow, deployed, failures, make_tree, sh

#: Connections each flooder holds.
FLOOD = 1500
#: A flooded process may hold at most this many open files (its caps plus its own).
FD_BOUND = 600


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets process ``pid`` listens on (IPv4, from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            if m:
                inodes.add(m.group(1))
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                ip, port = cols[1].split(":")
                addr = socket.inet_ntoa(bytes.fromhex(ip)[::-1])
                found.add(("127.0.0.1" if addr == "0.0.0.0" else addr, int(port, 16)))
    return found


async def _hold(host: str, port: int, n: int, stop: asyncio.Event) -> int:
    """Open up to ``n`` connections to host:port, trickle a byte each second, never send a
    request line; close them all when ``stop`` is set. How many were opened."""
    writers = []
    for _ in range(n):
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, asyncio.TimeoutError):
            continue
        writers.append(w)
    while not stop.is_set():
        for w in writers:
            with contextlib.suppress(OSError, RuntimeError):
                w.write(b"x")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for w in writers:
        w.transport.abort()
    return len(writers)


def _unix_flood_script(n: int, seconds: int) -> str:
    """Shell that leaves a process on the node holding ``n`` connections to the agent's
    socket (each sent half a request), writing how many it opened to ``flood.count``."""
    code = (
        "import socket,time\n"
        "s=[]\n"
        f"for _ in range({n}):\n"
        "  c=socket.socket(socket.AF_UNIX); c.settimeout(2)\n"
        "  try:\n"
        f"    c.connect('{AGENT_AREA}/agent.sock'); c.send(b'{{'); s.append(c)\n"
        "  except OSError:\n"
        "    c.close()\n"
        "open('flood.count','w').write(str(len(s)))\n"
        f"time.sleep({seconds})\n"
    )
    return (
        f"cd; rm -f flood.count; ulimit -n 4096; nohup timeout {seconds + 5} python3 -c "
        f"{shlex.quote(code)} >/dev/null 2>&1 & echo $! > flood.pid"
    )


def _agent_fds(node: Node) -> int:
    out = sh([node], f"cd; ls /proc/$(cat {AGENT_AREA}/agent.pid)/fd | wc -l")[node.name]
    return int(out or -1)


def connection_flood(lab: Lab, fleet: Sequence[Node], work: Path) -> FaultRow:
    """A push to 4 nodes under floods of idle, slow, never-authenticating connections."""
    row = FaultRow(
        "connection floods",
        f"{FLOOD} idle connections (a byte a second, no token) each to the controller's "
        f"and one node's chunk server, {FLOOD} to another node's agent socket, mid-push",
        "the push completes on every node; flooded processes' open files bounded",
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * FLOOD + 1024)), hard))
    nodes, peer, local = list(fleet[:4]), fleet[1], fleet[2]
    src = work / "flood-src"
    want = make_tree(src, 4_000_000, 41)
    began = time.monotonic()
    before = _listening(os.getpid())
    sh([local], _unix_flood_script(FLOOD, 20))
    peak = {"controller": 0, peer.name: 0, local.name: 0}

    async def go() -> tuple[object, dict[str, int]]:
        push = asyncio.ensure_future(
            push_async(nodes, src, "ff/site", PushOptions(durable=False, source_rate=1e6))
        )
        stop = asyncio.Event()
        floods: list[asyncio.Task[int]] = []
        opened: dict[str, int] = {}
        try:
            ours: set[tuple[str, int]] = set()
            for _ in range(100):  # the controller's chunk server is up once nodes begin
                ours = _listening(os.getpid()) - before
                if ours or push.done():
                    break
                await asyncio.sleep(0.1)
            listed = await asyncio.to_thread(sh, [peer], "ss -Htln | awk '{print $4}'")
            ports = [p for p in (listed[peer.name] or "").split() if not p.endswith(":22")]
            theirs = [int(p.rsplit(":", 1)[1]) for p in ports if ":" in p]
            for addr, port in ours:
                floods.append(asyncio.ensure_future(_hold(addr, port, FLOOD, stop)))
            for port in theirs:
                floods.append(asyncio.ensure_future(_hold(peer.address, port, FLOOD, stop)))
            while not push.done():
                peak["controller"] = max(peak["controller"], len(os.listdir("/proc/self/fd")))
                for n in (peer, local):
                    peak[n.name] = max(peak[n.name], await asyncio.to_thread(_agent_fds, n))
                await asyncio.wait([push], timeout=1.0)
            result = await push
        finally:
            stop.set()
            counts = await asyncio.gather(*floods, return_exceptions=True)
            opened = {"tcp": sum(c for c in counts if isinstance(c, int))}
            push.cancel()
        return result, opened

    try:
        result, opened = asyncio.run(go())
    finally:
        sh([local], "cd; kill $(cat flood.pid) 2>/dev/null; rm -f flood.pid")
    unix = sh([local], "cd; cat flood.count 2>/dev/null; rm -f flood.count")[local.name]
    got = deployed(nodes, "ff/site")
    wrong = [f"{n}: {g}" for n, g in got.items() if g is None or g[1] != want]
    row.details += failures(result) + wrong
    flooded = {k: v for k, v in peak.items() if k != "controller"}
    if any(v > FD_BOUND or v < 0 for v in flooded.values()):
        row.details.append(f"agent open files {flooded} (bound {FD_BOUND})")
    opened["unix"] = int((unix or "0").strip() or 0)
    if opened.get("tcp", 0) == 0 or opened["unix"] == 0:
        row.details.append(f"flood connections opened {opened}: nothing tested")
    row.seconds = time.monotonic() - began
    row.ok = not row.details
    row.observed = (
        f"{len(nodes) - len(wrong)}/{len(nodes)} nodes whole; flood connections opened "
        f"{opened.get('tcp', 0)} TCP, {opened['unix']} unix; peak open files: controller "
        f"{peak['controller']}, "
        f"agents {flooded}"
    )
    row.lost = "nothing" if row.ok else "; ".join(row.details)[:120]
    return row
