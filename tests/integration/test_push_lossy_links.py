"""An SSH link that shows loss tolerates longer silences; a clean one keeps its keepalive.

The controller reads TCP_INFO from its SSH socket to a node (:mod:`shoal.transport.tcpinfo`):
on a node whose link loses 30 % each way the handshake and a little traffic already show
retransmissions, so that connection tolerates more unanswered keepalives
(:func:`shoal.agent.linkwaits.keepalive_count`) and a push's waits to it grow; a clean
node's keeps the configured 3 x 5 s, so a dead node is noticed as fast as before (issue 17).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.errors import ConnectError
from shoal.lab.labspec import ShapeChange
from shoal.nodes.model import Node
from shoal.transport.ssh import SSHConnection, SSHTransport
from shoal.transport.tcpinfo import LinkState

pytestmark = pytest.mark.lab

PAYLOAD = bytes(range(256)) * 80  # 20 KB the controller sends: segments TCP counts


async def _look(node: Node) -> tuple[LinkState | None, int]:
    conn: SSHConnection | None = None
    for _ in range(3):  # a SYN or the handshake can be lost all the way at 30 %
        try:
            conn = await SSHTransport().connect(node, timeout=30)
            break
        except ConnectError:
            continue
    assert conn is not None, f"{node.name}: no SSH connection in 3 tries"
    try:
        for _ in range(6):
            res = await conn.run("cat >/dev/null", input=PAYLOAD, timeout=120)
            assert res.exit_status == 0
        state = conn.link()
        return state, conn._conn._keepalive_count_max  # what asyncssh will enforce
    finally:
        await conn.close()


@pytest.mark.xfail(
    strict=False,
    reason="known limit (DESIGN, waits follow the link): at 30 % loss each way TCP's RTO "
    "reaches 20-28 s and the connection can still be lost mid-command (1 of 2 CI runs)",
)
def test_a_lossy_link_tolerates_more_keepalives_and_a_clean_one_keeps_three(lab: Any) -> None:
    nodes = {n.name: n for n in lab.nodes()}
    state, count = asyncio.run(_look(nodes["n1"]))
    assert state is not None and state.sent > 50, state
    assert state.loss < 0.05 and count == 3, (state, count)
    lab.shape("n8", ShapeChange(loss_bp=3000))  # 30 % each way on n8's link
    try:
        state, count = asyncio.run(_look(nodes["n8"]))
    finally:
        lab.shape("n8", ShapeChange(loss_bp=0))
    assert state is not None and state.loss > 0.15, state
    assert count > 3, (state, count)
