"""Nodes the controller reaches only through a gateway (issue 18 item 3), on a real site.

A lab of 6 nodes with ``--site 3``: n4..n6 sit on a second bridge the controller's
namespace has no route to; n3, on both, is their gateway. Its own SHOAL_HOME (so
the lab owns group ``lab``), always taken down.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.lab import Lab, LabSpec
from shoal.lab.site import gateway_addr

from .conftest import lab_skip_reason, remote, unique_lab_name

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main", "--no-service"]
GATEWAY = "n3"
SITE = ("n4", "n5", "n6")


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    old = os.environ.get("SHOAL_HOME")
    os.environ["SHOAL_HOME"] = str(tmp_path_factory.mktemp("gw-home"))
    name = unique_lab_name("gw")
    try:
        lab = Lab.up(LabSpec(n=6, name=name, site=len(SITE)))
        try:
            yield lab
        finally:
            Lab.teardown(name)
    finally:
        if old is None:
            os.environ.pop("SHOAL_HOME", None)
        else:
            os.environ["SHOAL_HOME"] = old


def shoal(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOAL, *argv], capture_output=True, text=True, timeout=timeout)


def accepted(lab: Lab, node: str) -> int:
    """SSH logins the node's sshd has accepted so far."""
    log = lab.node_dir(node) / "log" / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey")


def test_site_nodes_unreachable_directly(site_lab: Lab) -> None:
    by_name = {n.name: n for n in site_lab.nodes()}
    for name in SITE:
        node = by_name[name]
        assert node.gateway == GATEWAY
        assert node.host is not None
        with pytest.raises(OSError) as err:
            socket.create_connection((node.host, 22), timeout=3).close()
        assert err.value.errno == errno.EHOSTUNREACH, err.value


def test_run_through_gateway_one_connection(site_lab: Lab) -> None:
    before = accepted(site_lab, GATEWAY)
    p = shoal("run", "-s", "n[4-6]", "hostname")
    assert p.returncode == 0, p.stdout + p.stderr
    for name in SITE:
        assert f"---- {name} (1)\n{name}\n" in p.stdout, p.stdout
    assert "ok 3," in p.stderr, p.stderr
    # the three nodes went through one connection to the gateway, not one each
    assert accepted(site_lab, GATEWAY) - before == 1
    site = site_lab.status().site
    assert site is not None
    relay = gateway_addr(site)
    for name in SITE:  # each node's own sshd saw its login come from the gateway's side
        text = (site_lab.node_dir(name) / "log" / "sshd.log").read_text(errors="replace")
        last = [ln for ln in text.splitlines() if "Accepted publickey" in ln][-1]
        assert f" from {relay} port " in last, last


def test_run_everywhere_mixed(site_lab: Lab) -> None:
    p = shoal("run", "-s", "@lab", "hostname")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok 6," in p.stderr, p.stderr


def test_cp_through_gateway(site_lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    p = shoal("cp", "-s", "n[4-6]", str(src), "@:/tmp/gw-payload.bin")
    assert p.returncode == 0, p.stdout + p.stderr
    p = shoal("run", "-s", "n[4-6]", "md5sum < /tmp/gw-payload.bin")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"---- n[4-6] (3)\n{hashlib.md5(data).hexdigest()}  -\n" in p.stdout, p.stdout


def test_dead_gateway_reported_for_its_subtree(site_lab: Lab) -> None:
    site_lab.kill(GATEWAY)
    try:
        p = shoal("run", "-s", "@lab", "--connect-timeout", "2", "--retries", "0", "hostname")
    finally:
        site_lab.revive(GATEWAY)
    assert p.returncode != 0
    assert "ok 2," in p.stderr, p.stderr
    for name in SITE:
        line = next(ln for ln in p.stderr.splitlines() if f": {name} — " in ln)
        want = f"unreachable through gateway {GATEWAY} ({GATEWAY}: connect timed out after 2s)"
        assert want in line, line
        assert "directly: no route to host" in line, line
    # revived: the subtree answers again
    p = shoal("run", "-s", "n[4-6]", "true")
    assert p.returncode == 0, p.stdout + p.stderr


def test_no_private_key_on_gateway(site_lab: Lab) -> None:
    assert shoal("run", "-s", "n[4-6]", "true").returncode == 0
    gateway = next(n for n in site_lab.nodes() if n.name == GATEWAY)
    found = remote(
        gateway,
        "grep -rlI -e 'PRIVATE KEY' /root /tmp 2>/dev/null; ls -d /tmp/ssh-* 2>/dev/null; true",
    )
    assert found.strip() == "", found
    body = site_lab.identity.read_text().splitlines()[1]  # a line of the controller's key
    found = remote(gateway, f"grep -rlF -e {body!r} /root /tmp 2>/dev/null; true")
    assert found.strip() == "", found


def test_push_through_gateway(site_lab: Lab, tmp_path: Path) -> None:
    """The push's agents and chunks reach the site too (through its SSH connections)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "blob").write_bytes(os.urandom(500_000))
    p = shoal("push", "-s", "@lab", "-a", "--no-json", str(tree), "/tmp/gw-pushed", timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "6/6 nodes ok" in p.stdout + p.stderr, p.stdout + p.stderr
    for name in SITE:
        row = next(ln for ln in p.stdout.splitlines() if ln.startswith(f"{name} "))
        assert " ok " in row and "ssh-tunnel" in row, row


def test_standing_links_through_gateway(site_lab: Lab) -> None:
    """The service's links attach the site's nodes through one connection to the gateway
    and run on them warm."""
    from shoal.control.journal import Journal
    from shoal.control.links import Links
    from shoal.fanout import RunOptions
    from shoal.fanout.commands import run_async
    from shoal.state import State

    nodes = site_lab.nodes()
    before = accepted(site_lab, GATEWAY)

    async def go() -> None:
        state = State()
        links = Links(nodes, state=state, journal=Journal(state))
        await links.start()
        try:
            assert await links.wait_up(timeout=60), links.status()
            warm = await run_async(nodes, "hostname", RunOptions(), transport=links.transport)
            assert warm.ok, [(r.node, r.reason) for r in warm.failed]
            assert {r.node: r.stdout.strip() for r in warm} == {n.name: n.name for n in nodes}
        finally:
            await links.stop()
            state.close()

    asyncio.run(go())
    # n3's own link and the one connection the site's three links share
    assert accepted(site_lab, GATEWAY) - before == 2


def test_standing_links_reattach_the_site_after_its_gateway_died(site_lab: Lab) -> None:
    """A killed gateway takes its subtree's links down (the rest stay up); revived, the
    site's links attach again through it."""
    from shoal.control.journal import Journal
    from shoal.control.links import Links, LinkState
    from shoal.state import State

    nodes = site_lab.nodes()

    async def wait_state(links: Links, names: tuple[str, ...], want: LinkState) -> None:
        deadline = time.monotonic() + 60
        while True:
            states = {n: links.link(n).state for n in names}  # type: ignore[union-attr]
            if all(s is want for s in states.values()):
                return
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.05)

    async def go() -> None:
        state = State()
        links = Links(nodes, state=state, journal=Journal(state))
        await links.start()
        try:
            assert await links.wait_up(timeout=60), links.status()
            await asyncio.to_thread(site_lab.kill, GATEWAY)
            try:
                await wait_state(links, (GATEWAY, *SITE), LinkState.DOWN)
                await wait_state(links, ("n1", "n2"), LinkState.UP)
            finally:
                await asyncio.to_thread(site_lab.revive, GATEWAY)
            await wait_state(links, (GATEWAY, *SITE), LinkState.UP)
        finally:
            await links.stop()
            state.close()

    asyncio.run(go())


def test_dead_gateway_falls_back_to_direct_where_the_controller_can(site_lab: Lab) -> None:
    """n2 marked behind n3 goes through n3 while it lives (its login comes from n3's
    address), and directly once n3 is dead; n4 (no route) is reported."""
    from dataclasses import replace

    from shoal.fanout import RunOptions
    from shoal.fanout.commands import run_async

    by_name = {n.name: n for n in site_lab.nodes()}
    n2 = replace(by_name["n2"], attrs={**by_name["n2"].attrs, "gateway": GATEWAY})
    nodes = [n2, by_name["n4"]]
    opts = RunOptions(connect_timeout=2, retries=0)

    def last_login(node: str) -> str:
        text = (site_lab.node_dir(node) / "log" / "sshd.log").read_text(errors="replace")
        return [ln for ln in text.splitlines() if "Accepted publickey" in ln][-1]

    through = asyncio.run(run_async(nodes, "true", opts))
    assert through.ok, [(r.node, r.reason) for r in through.failed]
    assert f" from {by_name[GATEWAY].host} port " in last_login("n2")
    site_lab.kill(GATEWAY)
    try:
        dead = asyncio.run(run_async(nodes, "true", opts))
    finally:
        site_lab.revive(GATEWAY)
    assert dead["n2"].ok, dead["n2"].reason
    assert f" from {site_lab.controller_addr} port " in last_login("n2")
    assert not dead["n4"].ok
    assert dead["n4"].reason.startswith(f"unreachable through gateway {GATEWAY} ("), dead["n4"]
    assert "directly: no route to host" in dead["n4"].reason


def test_lab_status_names_the_site(site_lab: Lab) -> None:
    p = shoal("lab", "status", "--json", "--name", site_lab.name)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["gateway"] == GATEWAY and st["site"].endswith(".0/24"), st
    site = ipaddress.IPv4Network(st["site"])
    inside = [ipaddress.IPv4Address(n["address"]) in site for n in st["nodes"]]
    assert inside == [False, False, False, True, True, True]
