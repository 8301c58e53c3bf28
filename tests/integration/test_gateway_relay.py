"""Relay gateways on a real site (issue 18 item 3): the gateway runs its subtree's
commands with a forwarded agent and sends merged outcomes up.

The site of test_gateway_lab (its fixture: a lab of 6 nodes with ``--site 3``, n4..n6
reachable only through n3, its own SHOAL_HOME, always taken down). Relay mode is opted in per node
(``gateway_mode=relay`` beside ``gateway=n3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from shoal.fanout import RunOptions
from shoal.fanout.commands import run_async
from shoal.fanout.results import CommandOutcome, Results
from shoal.lab import Lab
from shoal.nodes.model import Node

from .conftest import remote
from .test_gateway_lab import GATEWAY, SITE
from .test_gateway_lab import site_lab as site_lab  # the same site, a lab of this module's

pytestmark = pytest.mark.lab


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts the controller did an SSH handshake with (asyncssh.connect observed)."""
    seen: list[str] = []
    real = asyncssh.connect

    async def counted(*args: object, **kwargs: object) -> asyncssh.SSHClientConnection:
        seen.append(str(kwargs.get("host")))
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncssh, "connect", counted)
    return seen


def relay(nodes: Sequence[Node]) -> list[Node]:
    return [
        replace(n, attrs={**n.attrs, "gateway_mode": "relay"}) if n.gateway else n for n in nodes
    ]


def run(nodes: Sequence[Node], command: str, **opts: float) -> Results[CommandOutcome]:
    return asyncio.run(run_async(nodes, command, RunOptions(**opts)))  # type: ignore[arg-type]


def accepted(lab: Lab, node: str) -> list[str]:
    text = (lab.node_dir(node) / "log" / "sshd.log").read_text(errors="replace")
    return [ln for ln in text.splitlines() if "Accepted publickey" in ln]


def shape(res: Results[CommandOutcome]) -> list[tuple[object, ...]]:
    return [(r.node, r.kind, r.reason, r.exit_status, r.stdout, r.stderr, r.signal) for r in res]


def test_relay_output_is_the_direct_paths_and_merged_on_the_gateway(
    site_lab: Lab, caplog: pytest.LogCaptureFixture, handshakes: list[str]
) -> None:
    nodes = [n for n in site_lab.nodes() if n.name in (GATEWAY, *SITE)]
    command = 'echo common; echo "$SHOAL_NODE $SHOAL_INDEX" >&2; [ "$SHOAL_NODE" != n5 ] || exit 3'
    tunnelled = run(nodes, command)
    assert len(handshakes) == 5  # SSH-in-SSH: n3, its tunnel's connection, n4, n5, n6
    handshakes.clear()
    before = {n: len(accepted(site_lab, n)) for n in (GATEWAY, *SITE)}
    with caplog.at_level(logging.DEBUG, logger="shoal.transport.relay"):
        relayed = run(relay(nodes), command)
    assert shape(relayed) == shape(tunnelled)
    assert len(handshakes) == 1  # relay: one connection to n3 (its own command too)
    assert [r.kind for r in relayed] == ["ok", "ok", "failed", "ok"]
    assert relayed["n5"].reason == "exit 3" and relayed["n5"].stderr == "n5 2\n"
    # one login to n3 for its command and the relay, none from the controller to the
    # site's nodes (their logins came from the gateway's site address)
    assert len(accepted(site_lab, GATEWAY)) - before[GATEWAY] == 1
    for name in SITE:
        logins = accepted(site_lab, name)
        assert len(logins) - before[name] == 1
        assert re.search(r" from 10\.\d+\.\d+\.1 port ", logins[-1]), logins[-1]
    # merged on the gateway: n4, n5, n6 differ by stderr (their names), so 3 records; a
    # common outcome travels once
    same = run(relay(nodes[1:]), "echo same")
    assert {r.stdout for r in same} == {"same\n"} and same.ok
    counts = re.findall(r"relay: (\d+) records for (\d+) nodes", caplog.text)
    assert counts[0] == ("3", "3"), counts
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="shoal.transport.relay"):
        run(relay(nodes[1:]), "echo same")
    assert "relay: 1 records for 3 nodes" in caplog.text, caplog.text


def test_relay_keeps_max_output_as_the_direct_path_does(site_lab: Lab) -> None:
    nodes = [n for n in site_lab.nodes() if n.name in (GATEWAY, *SITE)]
    command = "head -c 300000 /dev/zero | tr '\\0' y; echo e >&2"
    tunnelled = run(nodes, command, max_output=100_000)
    relayed = run(relay(nodes), command, max_output=100_000)
    assert shape(relayed) == shape(tunnelled)
    assert {(r.stdout, r.dropped) for r in relayed} == {("y" * 100_000, 200_000)}
    # no limit (0): all of it comes up, in records longer than any limit would allow
    cut = run(relay(nodes[1:]), "head -c 2000000 /dev/zero", max_output=0)
    assert cut.ok and {len(r.stdout) for r in cut} == {2_000_000}


def _marked(marker: str) -> set[str]:
    """Pids whose whole command line is ``marker`` (the lab's nodes share this host's
    process table)."""
    got = subprocess.run(["pgrep", "-x", "-f", marker], capture_output=True, text=True)
    return set(got.stdout.split())


def test_an_interrupted_relayed_run_ends_the_commands_on_the_subtree(site_lab: Lab) -> None:
    nodes = relay([n for n in site_lab.nodes() if n.name in SITE])
    marker = f"sleep {13000 + os.getpid() % 1000}"

    async def interrupted() -> float:
        task = asyncio.ensure_future(run_async(nodes, marker, RunOptions()))
        deadline = time.monotonic() + 30
        while len(_marked(marker)) < len(nodes) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(_marked(marker)) == len(nodes), "the command never ran on every node"
        t0 = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    try:
        took = asyncio.run(interrupted())
        left = _marked(marker)
    finally:
        subprocess.run(["pkill", "-x", "-f", marker], check=False)
    assert not left, f"{len(left)} of {len(nodes)} commands still running after the interrupt"
    assert took < 10, took  # bounded: the relay's own limit per node, then its clients'


def test_a_relayed_stream_gets_each_line_as_it_comes_and_once(site_lab: Lab) -> None:
    nodes = relay([n for n in site_lab.nodes() if n.name in SITE])
    go = f"sleep {14000 + os.getpid() % 1000}"  # a process the nodes wait to see
    lines: list[tuple[str, str, bytes]] = []
    started: list[subprocess.Popen[bytes]] = []

    def on_line(node: str, stream: str, line: bytes) -> None:
        lines.append((node, stream, line))
        if sum(1 for _, _, text in lines if text == b"one") == len(nodes):
            # every node's first line came while its command still waits: let them go on
            started.append(subprocess.Popen(go.split()))

    # each node waits (at most 30 s) until the go process exists (the lab's nodes share
    # this host's process table): only lines sent as they come can start it in time
    wait = (f"i=0; until pgrep -x -f '{go}' >/dev/null || [ $i -ge 300 ]; do sleep 0.1; "
            "i=$((i+1)); done")  # fmt: skip
    try:
        got = asyncio.run(
            run_async(nodes, f"echo one; {wait}; [ $i -lt 300 ] && echo two >&2",
                      RunOptions(timeout=60), on_line=on_line)
        )  # fmt: skip
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
    assert got.ok, [(r.node, r.reason) for r in got.failed]  # exit 1: it waited in vain
    for n in nodes:
        assert [(s, t) for node, s, t in lines if node == n.name] == [
            ("stdout", b"one"),
            ("stderr", b"two"),
        ]


def test_relay_refuses_a_node_whose_host_key_differs_from_the_controllers(
    site_lab: Lab, tmp_path: Path
) -> None:
    cfg_path = Path(next(n for n in site_lab.nodes()).ssh_config or "")
    known = cfg_path.parent / "known_hosts"
    forged = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    lines = []
    for line in known.read_text().splitlines():
        names = line.split()[0].split(",")
        lines.append(f"{line.split()[0]} {other[0]} {other[1]}" if "n5" in names else line)
    forged.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(cfg_path.read_text().replace(str(known), str(forged)))
    nodes = [replace(n, ssh_config=str(cfg)) for n in site_lab.nodes() if n.name in SITE]
    res = run(relay(nodes), "hostname")
    assert res["n4"].ok and res["n6"].ok, shape(res)
    assert res["n5"].kind == "hostkey", shape(res)
    assert res["n5"].reason.startswith("HOST KEY CHANGED"), res["n5"].reason
    assert "differs from the one the controller sent" in res["n5"].reason  # said by n3
    assert res["n5"].stdout == ""
    # the SSH-in-SSH path refuses it the same way
    assert run(nodes, "hostname")["n5"].kind == "hostkey"


def test_dead_relay_gateway_subtree_reported_then_reached_directly(
    site_lab: Lab, handshakes: list[str]
) -> None:
    by_name = {n.name: n for n in site_lab.nodes()}
    n2 = replace(by_name["n2"], attrs={**by_name["n2"].attrs, "gateway": GATEWAY})
    nodes = relay([n2, by_name[GATEWAY], by_name["n4"], by_name["n5"]])
    site_lab.kill(GATEWAY)
    try:
        dead = run(nodes, "hostname", connect_timeout=2, retries=0)
    finally:
        site_lab.revive(GATEWAY)
    assert dead["n2"].ok and dead["n2"].stdout == "n2\n", dead["n2"].reason  # directly
    assert accepted(site_lab, "n2")[-1].find(f" from {site_lab.controller_addr} port ") > 0
    assert dead[GATEWAY].reason == "connect timed out after 2s", dead[GATEWAY].reason
    for name in ("n4", "n5"):
        assert dead[name].kind == "unreachable"
        want = f"unreachable through gateway {GATEWAY} ({GATEWAY}: connect timed out after 2s)"
        assert dead[name].reason.startswith(want), dead[name].reason
        assert "; directly: no route to host" in dead[name].reason, dead[name].reason
    handshakes.clear()
    back = run(nodes, "hostname", connect_timeout=10)
    assert back.ok, shape(back)
    assert len(handshakes) == 1  # n3's command and its relay on one connection again
    assert [r.stdout for r in back] == ["n2\n", "n3\n", "n4\n", "n5\n"]
    assert f" from {by_name[GATEWAY].host} port " in accepted(site_lab, "n2")[-1]


def test_no_key_material_on_the_relay_gateway_after_a_run(site_lab: Lab) -> None:
    nodes = relay([n for n in site_lab.nodes() if n.name in SITE])
    res = run(nodes, 'echo "$SSH_AUTH_SOCK"; true')
    assert res.ok, shape(res)
    gateway = next(n for n in site_lab.nodes() if n.name == GATEWAY)
    found = remote(
        gateway,
        "grep -rlI -e 'PRIVATE KEY' /root /tmp 2>/dev/null; ls -d /tmp/ssh-* /tmp/shoal-relay-* "
        "2>/dev/null; true",
    )
    assert found.strip() == "", found
    body = site_lab.identity.read_text().splitlines()[1]
    found = remote(gateway, f"grep -rlF -e {body!r} /root /tmp 2>/dev/null; true")
    assert found.strip() == "", found
    # the nodes saw no agent (the gateway's client does not forward it further)
    assert {r.stdout for r in res} == {"\n"}


def test_automatic_tree_above_the_setting_runs_through_a_chosen_relay(site_lab: Lab) -> None:
    """SHOAL_RELAY_TREE=3: n1..n3 (no gateway marked) split into round(sqrt(3)) = 2
    subtrees in address order, n1 the relay of n2; below the size, all direct."""
    by_name = {n.name: n for n in site_lab.nodes()}
    argv = [sys.executable, "-m", "shoal.cli.main", "--no-service", "run", "-s", "n[1-3]"]
    env = {**os.environ, "SHOAL_RELAY_TREE": "3"}
    p = subprocess.run([*argv, "hostname"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in ("n1", "n2", "n3"):
        assert f"---- {name} (1)\n{name}\n" in p.stdout, p.stdout
    assert f" from {by_name['n1'].host} port " in accepted(site_lab, "n2")[-1]
    assert f" from {site_lab.controller_addr} port " in accepted(site_lab, "n3")[-1]
    env["SHOAL_RELAY_TREE"] = "4"  # 3 nodes: below the size
    p = subprocess.run([*argv, "true"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f" from {site_lab.controller_addr} port " in accepted(site_lab, "n2")[-1]
