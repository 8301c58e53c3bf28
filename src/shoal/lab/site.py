"""A lab site: nodes the controller can reach only through a gateway node.

Owns the site's layout and its kernel objects (issue 18 item 3). ``shoal lab up
N --site K`` puts the last K nodes on a second bridge ``br1`` of the switch
namespace, in the last /24 of the lab's /22 (a subnet of their own, no default
route: they cannot reach the controller either). The node just before them is
the gateway: its ``eth0`` stays on ``br0``, a second interface ``eth1`` (the
site's ``.1``) sits on ``br1``. The root namespace gets an ``unreachable``
route for the site's /24, so the controller's connects to a site node fail at
once ("no route to host") instead of going out of the default route::

    controller ── br0 ── n1 .. n(N-K)=gateway ── eth1 ── br1 ── n(N-K+1) .. nN

Site nodes carry ``gateway=<name>`` in the inventory (:meth:`Lab.nodes`), which
is what sends the transport through the gateway (:mod:`shoal.transport.gateways`).
Teardown removes ``br1`` with the switch namespace and the route with
:func:`remove_route`, found from the root link's address (no state file needed).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence

from shoal.lab import system
from shoal.lab.labspec import Naming, mac_of
from shoal.lab.labstate import LabNode, LabState

#: The site's prefix: the last /24 of the lab's /22.
SITE_PREFIX = 24
#: The gateway's switch port on br1 is its name plus this suffix (``n4s``).
GATEWAY_PORT_SUFFIX = "s"


def site_subnet(blk: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The last /24 of the lab's block."""
    return list(blk.subnets(new_prefix=SITE_PREFIX))[-1]


def gateway_addr(subnet: str) -> str:
    """The gateway's address on the site (its ``eth1``): the site's ``.1``."""
    return str(ipaddress.IPv4Network(subnet).network_address + 1)


def place(nodes: Sequence[LabNode], site: int, blk: ipaddress.IPv4Network) -> str | None:
    """Move the last ``site`` of ``nodes`` to the site (addresses ``.2``, ``.3``, ... of
    the site's /24, ``gateway`` set to the node before them); the site subnet, or None."""
    if not site:
        return None
    subnet = site_subnet(blk)
    gateway = nodes[len(nodes) - site - 1].name
    for k, node in enumerate(nodes[len(nodes) - site :], start=2):
        node.addr = str(subnet.network_address + k)
        node.gateway = gateway
    return str(subnet)


def gateway_of_site(state: LabState) -> LabNode | None:
    for n in state.nodes:
        if n.gateway:
            return state.node(n.gateway)
    return None


def neighbors(state: LabState, node: LabNode) -> list[tuple[str, str]] | None:
    """Permanent neighbour entries of a site node (the gateway's eth1 and the other
    site nodes); None for a node off the site."""
    if not node.gateway or state.site is None:
        return None
    gw = gateway_addr(state.site)
    out = [(gw, mac_of(gw))]
    out += [(n.addr, mac_of(n.addr)) for n in state.nodes if n.gateway and n.name != node.name]
    return out


def switch_lines(state: LabState) -> list[str]:
    """``ip -batch`` lines for the switch namespace: br1 and the gateway's port on it
    (the site nodes' own ports are put on br1 by the caller)."""
    gw = gateway_of_site(state)
    if gw is None or state.site is None:
        return []
    addr = gateway_addr(state.site)
    port = gw.name + GATEWAY_PORT_SUFFIX
    return [
        "link add br1 type bridge",
        "link set br1 up",
        f"link add {port} type veth peer name eth1 address {mac_of(addr)} netns {gw.netns}",
        f"link set {port} master br1 up",
    ]


def configure_gateway(state: LabState) -> None:
    """The gateway's eth1: the site's .1, up, a permanent entry for each site node."""
    gw = gateway_of_site(state)
    if gw is None or state.site is None or gw.netns is None:
        return
    lines = [f"addr replace {gateway_addr(state.site)}/{SITE_PREFIX} dev eth1", "link set eth1 up"]
    lines += [
        f"neigh replace {n.addr} lladdr {mac_of(n.addr)} dev eth1 nud permanent"
        for n in state.nodes
        if n.gateway
    ]
    system.ip_batch(lines, f"configure the gateway {gw.name}'s site link", netns=gw.netns)


def add_route(state: LabState) -> None:
    """The controller's namespace has no route to the site: connects fail at once."""
    if state.site is not None:
        system.ip_batch([f"route replace unreachable {state.site}"], "hide the site's subnet")


def remove_route(name: str) -> None:
    """Remove the site's unreachable route of lab ``name`` (found from its root link's
    block); nothing when the lab has no root link or no site."""
    link = Naming(name).root_link
    blocks = [
        ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
        for ifname, addr, plen in system.ipv4_addresses()
        if ifname == link
    ]
    for blk in blocks:
        subnet = site_subnet(blk)
        proc = system.run(
            ["ip", "route", "show", "type", "unreachable", str(subnet)],
            "list the site's route",
            check=False,
        )
        if proc.stdout.strip():
            system.run(["ip", "route", "del", "unreachable", str(subnet)], "remove the site route")


#: Run in the gateway's namespace: waits until each ADDR:PORT sends an SSH banner;
#: prints the ones that did not.
_PROBE = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
late = []
for ep in sys.argv[2:]:
    addr, port = ep.rsplit(":", 1)
    while True:
        try:
            with socket.create_connection((addr, int(port)), timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            late.append(addr)
            break
        time.sleep(0.02)
print(" ".join(late))
"""


def wait_ready(state: LabState, nodes: Sequence[LabNode], timeout: float) -> list[str]:
    """Wait (from the gateway's namespace) until each site node in ``nodes`` sends its
    banner; the names of those that did not."""
    gw = gateway_of_site(state)
    site_nodes = [n for n in nodes if n.gateway]
    if gw is None or gw.netns is None or not site_nodes:
        return []
    proc = system.run(
        ["ip", "netns", "exec", gw.netns, sys.executable, "-c", _PROBE, str(timeout)]
        + [f"{n.addr}:{n.port}" for n in site_nodes],
        f"wait for the site's nodes from {gw.name}",
        timeout=timeout + 10,
    )
    late = set(proc.stdout.split())
    return [n.name for n in site_nodes if n.addr in late]
