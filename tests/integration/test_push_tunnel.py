"""Push (and ``app up``) to nodes that cannot open a TCP connection to the controller.

Nodes behind NAT, a jump host or a firewall reach the controller only through
the SSH connection it opened: their source chunks come through that
connection (an SSH remote forward), while peers that reach each other still
swap chunks directly, and a node that reaches nobody gets everything through
SSH. The lab stands for this with nftables rules in the nodes' namespaces
that drop outgoing connection attempts (SYN without ACK), to the controller's
address or to everyone; every rule goes in ``finally``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.content.push import PushOptions, push_async
from shoal.nodes.model import Node

from .conftest import remote

pytestmark = pytest.mark.lab

TABLE = "shoaltunneltest"
#: Cannot connect to the controller (still to the peers).
NATTED = ("n2", "n3")
#: Cannot connect to anyone, and nobody can connect to it (its sshd aside).
ALONE = "n4"


def nft(lab: Any, node: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.netns_of(node), "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def block(lab: Any, node: str, rules: list[str]) -> None:
    body = "\n".join(f"add rule inet {TABLE} {rule}" for rule in rules)
    nft(
        lab,
        node,
        f"add table inet {TABLE}\n"
        f"add chain inet {TABLE} out {{ type filter hook output priority 0; }}\n"
        f"add chain inet {TABLE} in {{ type filter hook input priority 0; }}\n{body}\n",
    )


def unblock(lab: Any, node: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.netns_of(node), "nft", "delete", "table", "inet", TABLE],
        capture_output=True,
    )


SYN = "tcp flags & (syn|ack) == syn"


@pytest.fixture(scope="module")
def walled(lab: Any) -> Iterator[list[Node]]:
    """The lab's nodes with NATTED unable to reach the controller and ALONE unable to
    reach (or be reached by) anyone over TCP, its sshd aside."""
    nodes = lab.nodes()
    installed = asyncio.run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    ctl = lab.controller_addr
    try:
        for name in NATTED:
            block(lab, name, [f"out ip daddr {ctl} {SYN} drop"])
        block(
            lab,
            ALONE,
            [f'out oifname != "lo" {SYN} drop', f'in iifname != "lo" tcp dport != 22 {SYN} drop'],
        )
        yield nodes
    finally:
        for name in (*NATTED, ALONE):
            unblock(lab, name)
        asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))


def test_push_tunnels_the_source_for_nodes_that_cannot_reach_the_controller(
    walled: list[Node], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(17).randbytes(3_000_000)
    (src / "data.bin").write_bytes(data)
    result = asyncio.run(push_async(walled, src, "tunnel/site", PushOptions(durable=False)))
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    paths = {n.node: n.path for n in result}
    assert paths == {
        n.name: "ssh-tunnel" if n.name in (*NATTED, ALONE) else "direct" for n in walled
    }
    want = hashlib.sha256(data).hexdigest()
    for node in walled:
        assert remote(node, "sha256sum tunnel/site/data.bin").split()[0] == want
    for n in result:  # every byte counted once, from the source or from peers
        assert n.received == n.from_source + n.from_peers >= n.need_bytes > 0, n
    alone = result[ALONE]
    assert alone.from_peers == 0 and alone.from_source == alone.received  # through SSH only
    # the natted nodes still swap chunks with their peers directly
    assert sum(result[name].from_peers for name in NATTED) > 0
    # the source sends the swarm about one copy (the tunnels share it), plus ALONE's own
    others = result.source_sent - alone.from_source
    assert others <= 1.3 * result.total_bytes, (result.source_sent, alone.from_source)


APP = """\
app: tunnelapp
software:
  tool:
    source: tool
components:
  svc:
    select: "n[2-4]"
    count: 3
    software: [tool]
    processes:
      - {name: mark, run: "python3 ${sw.tool}/mark.py ${dir}/marked ${node}"}
"""


def test_app_up_pushes_software_to_nodes_behind_the_wall(
    walled: list[Node], tmp_path: Path
) -> None:
    root = tmp_path / "app"
    (root / "tool").mkdir(parents=True)
    (root / "tool" / "mark.py").write_text(
        "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text(sys.argv[2] + '\\n')\n"
    )
    (root / "app.yaml").write_text(textwrap.dedent(APP))
    try:
        report = asyncio.run(lifecycle.up_async(load(root / "app.yaml")))
        for node in walled:
            if node.name in ("n2", "n3", "n4"):
                got = remote(node, "cat .shoal/apps/tunnelapp/marked")
                assert got == f"{node.name}\n", report
    finally:
        asyncio.run(lifecycle.down_async("tunnelapp"))
