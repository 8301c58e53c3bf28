"""The gateway pool and the site layout (pure parts of issue 18 item 3)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest

from shoal.errors import ConnectError, UsageError
from shoal.lab import site
from shoal.lab.labspec import LabSpec, validate_site
from shoal.lab.labstate import LabNode
from shoal.nodes.model import Node
from shoal.transport.gateways import GatewayPool, connect_behind


class FakeConn:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.closed = False
        self.on_close: Callable[[], object] | None = None

    def is_closed(self) -> bool:
        return self.closed

    async def close(self) -> None:
        self.closed = True


class Opener:
    """Opens FakeConns after a pause; fails the nodes in ``down``."""

    def __init__(self, down: set[str] | None = None) -> None:
        self.opened: list[str] = []
        self.down = down or set()

    async def __call__(self, node: Node, timeout: float | None) -> FakeConn:
        assert timeout == 10.0 or timeout == 5.0
        self.opened.append(node.name)
        await asyncio.sleep(0.01)
        if node.name in self.down:
            raise ConnectError("connection refused by 10.0.0.3:22", node.name)
        return FakeConn(node)


def lookup(name: str, behind: Node) -> Node:
    return Node(name=name, host="10.0.0.3")


def behind(name: str, gateway: str = "gw") -> Node:
    return Node(name=name, host="10.0.1.2", attrs={"gateway": gateway})


def test_gateway_attribute() -> None:
    assert behind("a").gateway == "gw"
    assert Node(name="a").gateway is None
    assert Node(name="a", attrs={"gateway": ""}).gateway is None


def test_one_connection_shared_by_the_subtree_closed_by_the_last() -> None:
    async def go() -> None:
        opener = Opener()
        pool: GatewayPool[FakeConn] = GatewayPool(opener, lookup)
        conns = await asyncio.gather(*(pool.acquire(behind(f"n{i}")) for i in range(5)))
        assert opener.opened == ["gw"]
        assert len({id(c) for c in conns}) == 1
        for _ in range(4):
            await pool.release("gw")
        assert not conns[0].closed
        await pool.release("gw")
        assert conns[0].closed
        await pool.acquire(behind("n9"))  # used again: opened again
        assert opener.opened == ["gw", "gw"]

    asyncio.run(go())


def test_dropped_connection_is_opened_again() -> None:
    async def go() -> None:
        opener = Opener()
        pool: GatewayPool[FakeConn] = GatewayPool(opener, lookup)
        first = await pool.acquire(behind("n1"))
        first.closed = True  # the gateway went away
        second = await pool.acquire(behind("n2"))
        assert second is not first and opener.opened == ["gw", "gw"]

    asyncio.run(go())


def test_dead_gateway_fails_each_node_naming_it_then_is_tried_again() -> None:
    async def go() -> None:
        opener = Opener(down={"gw"})
        pool: GatewayPool[FakeConn] = GatewayPool(opener, lookup)
        got = await asyncio.gather(
            *(pool.acquire(behind(f"n{i}")) for i in range(3)), return_exceptions=True
        )
        assert opener.opened == ["gw"]  # one attempt for the whole subtree
        for i, exc in enumerate(got):
            assert isinstance(exc, ConnectError) and exc.node == f"n{i}"
            assert str(exc) == (
                "unreachable through gateway gw (gw: connection refused by 10.0.0.3:22)"
            )
        opener.down.clear()
        await pool.acquire(behind("n1"))
        assert opener.opened == ["gw", "gw"]

    asyncio.run(go())


def test_gateway_of_a_gateway_is_refused() -> None:
    async def go() -> None:
        pool: GatewayPool[FakeConn] = GatewayPool(Opener(), lambda n, b: behind(n, "other"))
        with pytest.raises(ConnectError, match="gw is itself behind gateway other"):
            await pool.acquire(behind("n1"))

    asyncio.run(go())


def test_connect_behind_falls_back_to_direct_and_says_both() -> None:
    tried: list[tuple[str, bool, object]] = []

    async def connect(node: Node, *, timeout: float | None, tunnel: object = None) -> FakeConn:
        tried.append((node.name, node.gateway is None, tunnel))
        if tunnel is None and node.name == "n2":
            raise ConnectError("no route to host 10.0.1.2:22", node.name)
        return FakeConn(node)

    async def go() -> None:
        pool: GatewayPool[FakeConn] = GatewayPool(Opener(down={"gw"}), lookup)
        direct = await connect_behind(pool, connect, behind("n1"), 5.0)
        assert direct.node.gateway is None  # reached directly, as the inventory allows
        with pytest.raises(ConnectError) as err:
            await connect_behind(pool, connect, behind("n2"), 5.0)
        assert str(err.value) == (
            "unreachable through gateway gw (gw: connection refused by 10.0.0.3:22); "
            "directly: no route to host 10.0.1.2:22"
        )
        assert err.value.node == "n2"

    asyncio.run(go())


def test_connect_behind_releases_on_close_and_on_failure() -> None:
    async def connect(node: Node, *, timeout: float | None, tunnel: object = None) -> FakeConn:
        if node.name == "bad":
            raise ConnectError("gateway gw cannot reach it: Connection refused", node.name)
        return FakeConn(node)

    async def go() -> None:
        opener = Opener()
        pool: GatewayPool[FakeConn] = GatewayPool(opener, lookup)
        conn = await connect_behind(pool, connect, behind("n1"), 5.0)
        with pytest.raises(ConnectError, match="cannot reach it"):
            await connect_behind(pool, connect, behind("bad"), 5.0)
        gateway = await pool.acquire(behind("n3"))
        await pool.release("gw")
        assert conn.on_close is not None
        await conn.on_close()  # type: ignore[misc]
        assert gateway.closed  # the failed one was released too: n1 was the last user

    asyncio.run(go())


def test_site_layout() -> None:
    blk = ipaddress.IPv4Network("10.213.12.0/22")
    nodes = [LabNode(name=f"n{i}", addr=f"10.213.12.{i + 1}", port=22) for i in range(1, 7)]
    subnet = site.place(nodes, 3, blk)
    assert subnet == "10.213.15.0/24" and site.gateway_addr(subnet) == "10.213.15.1"
    assert [(n.name, n.addr, n.gateway) for n in nodes[2:]] == [
        ("n3", "10.213.12.4", None),
        ("n4", "10.213.15.2", "n3"),
        ("n5", "10.213.15.3", "n3"),
        ("n6", "10.213.15.4", "n3"),
    ]
    assert site.place(nodes[:2], 0, blk) is None


@pytest.mark.parametrize(
    ("n", "k", "rootless", "message"),
    [
        (4, 4, False, "leaves no gateway"),
        (8, 2, True, "needs a root lab"),
        (800, 4, False, "at most"),
        (300, 251, False, "at most"),
        (8, -1, False, "whole number"),
    ],
)
def test_site_validation(n: int, k: int, rootless: bool, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_site(n, k, rootless)


def test_site_spec() -> None:
    assert LabSpec(n=8, site=4).site == 4
    with pytest.raises(UsageError):
        LabSpec(n=2, site=2)


def test_group_rule_marks_a_whole_group() -> None:
    """A group's ``gateway`` variable (an Ansible inventory's rule) reaches each member."""
    from shoal.nodes.importers import parse_ansible_ini

    inv = parse_ansible_ini(
        "[front]\ngw1 ansible_host=10.0.0.3\n[site]\nrack[1:3]\n[site:vars]\ngateway=gw1\n",
        "hosts.ini",
    )
    by_name = {n.name: n for n in inv.nodes}
    assert by_name["gw1"].gateway is None
    assert [by_name[f"rack{i}"].gateway for i in (1, 2, 3)] == ["gw1"] * 3
