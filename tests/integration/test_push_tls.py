"""Push's data plane over TLS with pinned certificates, on a lab of real nodes (issue 17).

What crosses the lab's switch is captured (a raw packet socket in the switch
namespace sees every frame of every port): a TLS push leaves no plaintext of
the content there, a ``--plain-data`` push does (the capture can see it).
A node whose chunk server presents another certificate than the one it was
handed (the ``TEST_TLS_IMPOSTOR.pem`` hook: a peer on the path, as it would look)
is refused by every peer and the push completes from the others. Every hook
file and the capture process go in ``finally``; agents are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.tlspin import TEST_IMPOSTOR_FLAG
from shoal.agentlink import fleet as agents
from shoal.content.datatls import make_identity
from shoal.content.push import PushOptions, PushResult, push_async
from shoal.nodes.model import Node

from .conftest import remote

pytestmark = pytest.mark.lab

MARKER = b"SHOAL-PLAINTEXT-MARKER:"

#: Reads every frame in its namespace until stdin closes (or 180 s), then prints how many
#: frames and bytes it saw and how many held MARKER (one per TCP segment of content).
CAPTURE = """
import json, select, socket, sys, time
marker = sys.argv[1].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
print("ready", flush=True)
frames = size = hits = 0
end = time.monotonic() + 180
while time.monotonic() < end:
    r, _, _ = select.select([s, sys.stdin], [], [], 1.0)
    if sys.stdin in r:
        break
    if s in r:
        data = s.recv(65536)
        frames += 1
        size += len(data)
        hits += marker in data
print(json.dumps({"frames": frames, "bytes": size, "hits": hits}), flush=True)
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()[:4]
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    run(agents.stop_async(nodes, agents.AgentOptions()))


def marked_tree(root: Path, size: int = 3_000_000) -> Path:
    root.mkdir(parents=True)
    line = MARKER + b" the pushed content, which nobody on the path may read\n"
    (root / "secret.txt").write_bytes(line * (size // len(line)))
    return root


def captured_push(lab: Any, nodes: list[Node], src: Path, rdir: str, **kw: Any) -> Any:
    """Push under a capture of the lab's switch: (result, capture counts)."""
    cap = subprocess.Popen(
        ["ip", "netns", "exec", lab.switch_netns, sys.executable, "-c", CAPTURE, MARKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
        result: PushResult = run(push_async(nodes, src, rdir, PushOptions(durable=False, **kw)))
        out, _ = cap.communicate("", timeout=30)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    return result, json.loads(out.strip().splitlines()[-1])


def test_a_tls_push_shows_no_plaintext_on_the_wire_and_plain_data_does(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    src = marked_tree(tmp_path / "src")
    result, seen = captured_push(lab, fleet, src, "tls1/site")
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    assert sum(n.from_peers for n in result) > 0  # node to node went over TLS as well
    assert seen["bytes"] > 4 * result.total_bytes  # the capture saw the push go by
    assert seen["hits"] == 0, seen
    for node in (fleet[0], fleet[-1]):
        assert remote(node, "head -c 23 tls1/site/secret.txt") == MARKER.decode()
    plain, seen_plain = captured_push(lab, fleet, src, "tls2/site", plain_data=True)
    assert plain.ok, [(n.node, n.reason) for n in plain.failed]
    assert seen_plain["hits"] > 100, seen_plain  # the same content in clear is visible
    assert remote(fleet[1], "head -c 23 tls2/site/secret.txt") == MARKER.decode()


def test_a_peer_presenting_another_certificate_is_refused_and_the_push_completes(
    fleet: list[Node], tmp_path: Path
) -> None:
    impostor = fleet[1]
    other = make_identity("impostor")
    pem = other.key_pem + other.cert_pem
    remote(impostor, f"umask 077; printf '%s' '{pem}' > .shoal/{TEST_IMPOSTOR_FLAG}")
    try:
        src = marked_tree(tmp_path / "src", size=4_000_000)
        # a slow source: every node registers before the stripes run out, so the impostor
        # is some chunks' first recipient and the others must ask it
        result = run(
            push_async(fleet, src, "tls3/site", PushOptions(durable=False, source_rate=2e6))
        )
        said = [
            remote(n, "grep -rah 'is not the pinned' .shoal | head -n 1", check=False)
            for n in fleet
            if n is not impostor
        ]
    finally:
        remote(impostor, f"rm -f .shoal/{TEST_IMPOSTOR_FLAG}")
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    refused = sum(n.rejected for n in result if n.node != impostor.name)
    assert refused >= 1, [(n.node, n.rejected, n.from_peers) for n in result]
    # the peers said why, in one line each: the impostor's address and both fingerprints
    told = [json.loads(line)["detail"] for line in said if line]
    assert told and all("is not the pinned" in t and "\n" not in t for t in told), said
    want = remote(fleet[0], "sha256sum tls3/site/secret.txt").split()[0]
    for node in fleet:
        assert remote(node, "sha256sum tls3/site/secret.txt").split()[0] == want
