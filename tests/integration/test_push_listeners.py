"""The push's listeners and the nodes' push sessions under attack (issue 11 items 2, 4, 6, 7).

An attacker without the token floods a node's chunk port and the controller's
during a push; a ``content.begin`` fails; two pushes of one tree go to two
directories of one node at once; a node's store fills its disk. Every
connection a test opens it closes, every mount it makes it unmounts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import chunkserver as cs
from shoal.agentlink import fleet as agents
from shoal.content.push import PushOptions, push_async
from shoal.nodes.model import Node

from .conftest import remote, unmount

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make_tree(root: Path, size: int, seed: int) -> Path:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "data.bin").write_bytes(random.Random(seed).randbytes(size))
    (root / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    run(agents.stop_async(nodes, agents.AgentOptions()))


def opts(**kw: Any) -> PushOptions:
    kw.setdefault("durable", False)
    return PushOptions(**kw)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def listeners(addr: str) -> set[int]:
    """TCP ports listening on ``addr`` in this (the controller's) namespace."""
    want = socket.inet_aton(addr)[::-1].hex().upper()
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, port = local.split(":")
        if state == "0A" and host == want:
            ports.add(int(port, 16))
    return ports


def node_listeners(node: Node) -> set[int]:
    """TCP ports the node listens on, sshd's excepted."""
    text = remote(node, "cat /proc/net/tcp")
    ports = set()
    for line in text.splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        port = int(local.split(":")[1], 16)
        if state == "0A" and port != (node.port or 22):
            ports.add(port)
    return ports


class Attacker:
    """Connections without the token: some flood 1 MB without a newline, some stay silent."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.silent: list[socket.socket] = []

    def flood(self, host: str, port: int, count: int) -> None:
        junk = b"x" * (1 << 20)
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            self.socks.append(s)
        time.sleep(0.2)
        for s in self.socks:
            try:
                s.send(junk)
            except OSError:
                pass

    def hold(self, host: str, port: int) -> socket.socket:
        s = socket.create_connection((host, port), timeout=10)
        self.silent.append(s)
        return s

    def close(self) -> None:
        for s in self.socks + self.silent:
            s.close()


def closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_push_completes_at_speed_while_both_chunk_ports_are_flooded(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    base = run(push_async(fleet, make_tree(tmp_path / "base", 4_000_000, 21), "l1/base", opts()))
    assert base.ok, [(n.node, n.reason) for n in base.failed]
    src = make_tree(tmp_path / "src", size=4_000_000, seed=22)
    target = fleet[3]
    pid = int(run(agents.call_async([target], "hello", {}))[target.name].value["pid"])
    node_before, own_before = rss_kb(pid), rss_kb(os.getpid())
    attacker = Attacker()
    seen: dict[str, Any] = {}

    async def attack() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(400):  # the source's port appears once the first node connects
            ports = listeners(lab.controller_addr)
            node_ports = set()
            if ports:
                node_ports = await loop.run_in_executor(None, node_listeners, target)
            if ports and node_ports:
                break
            await asyncio.sleep(0.05)
        assert ports and node_ports
        for port in ports:
            seen["controller_idle"] = attacker.hold(lab.controller_addr, port)
            await loop.run_in_executor(None, attacker.flood, lab.controller_addr, port, 300)
        for port in node_ports:
            seen["node_idle"] = attacker.hold(target.host, port)
            await loop.run_in_executor(None, attacker.flood, target.host, port, 300)
        seen["held_at"] = time.monotonic()
        seen["rss"] = rss_kb(pid), rss_kb(os.getpid())

    async def go() -> Any:
        hit = asyncio.ensure_future(attack())
        # a slow source, so the attack lands while chunks still move
        result = await push_async(fleet, src, "l1/site", opts(source_rate=2e6))
        await hit
        return result

    try:
        began = time.monotonic()
        result = run(go())
        took = time.monotonic() - began
        assert result.ok, [(n.node, n.reason) for n in result.failed]
        assert remote(target, "sha256sum l1/site/data.bin").split()[0] == sha(src / "data.bin")
        node_rss, own_rss = seen["rss"]
        assert node_rss - node_before < 60_000, (node_before, node_rss)  # KiB
        assert own_rss - own_before < 100_000, (own_before, own_rss)
        waited = max(0.0, cs.AUTH_SECONDS + 3 - (time.monotonic() - seen["held_at"]))
        for name in ("controller_idle", "node_idle"):
            assert closed_by_peer(seen[name], waited + 0.5), f"{name} still open"
    finally:
        attacker.close()
    calm = run(
        push_async(
            fleet, make_tree(tmp_path / "calm", 4_000_000, 23), "l1/calm", opts(source_rate=2e6)
        )
    )
    assert calm.ok
    assert took < 1.5 * calm.duration + 3, (took, calm.duration)
    assert rss_kb(pid) - node_before < 60_000


def test_a_failed_begin_leaves_no_port_open_on_the_node(fleet: list[Node], tmp_path: Path) -> None:
    node = fleet[6]
    before = node_listeners(node)
    args = {
        "dir": "l2/site",
        "version": "0123456789abcdef",
        "blob": "0" * 64,
        "blob_size": 10,
        "token": "t" * 32,
        "sources": [["127.0.0.1", 1]],  # nothing there: the manifest fetch fails
        "bind": node.host,
    }
    begin = run(agents.call_async([node], "content.begin", args))
    assert not begin.ok and "cannot fetch the manifest" in begin[node.name].reason
    assert node_listeners(node) == before


def test_two_pushes_of_one_tree_to_two_directories_both_land(
    fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", size=1_500_000, seed=31)
    pair = fleet[:2]
    for attempt in range(2):

        async def both(n: int = attempt) -> list[Any]:
            return list(
                await asyncio.gather(
                    push_async(pair, src, f"l3/a{n}", opts()),
                    push_async(pair, src, f"l3/b{n}", opts()),
                )
            )

        for result in run(both()):
            assert result.ok, [(n.node, n.reason) for n in result.failed]
        for node in pair:
            for name in (f"a{attempt}", f"b{attempt}"):
                out = remote(node, f"sha256sum l3/{name}/data.bin").split()[0]
                assert out == sha(src / "data.bin"), (node.name, name)
    assert not node_listeners(pair[0])  # both pushes ended: nothing left listening


def test_a_store_that_fills_the_disk_is_removed_when_the_push_fails(
    fleet: list[Node], tmp_path: Path
) -> None:
    node = fleet[5]
    remote(node, "mkdir -p .shoal/chunks && mount -t tmpfs -o size=1m tmpfs .shoal/chunks")
    try:
        src = make_tree(tmp_path / "src", size=3_000_000, seed=41)
        result = run(push_async([node], src, "l4/site", opts()))
        assert not result.ok and "space" in result[node.name].reason, result[node.name].reason
        used = ""
        for _ in range(50):
            used = remote(node, "du -sk .shoal/chunks | cut -f1").strip()
            if int(used) < 100:
                break
            time.sleep(0.1)
        assert int(used) < 100, f"{used} KiB left in the store"
        assert not node_listeners(node)
    finally:
        unmount(node, ".shoal/chunks")
