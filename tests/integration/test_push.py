"""``shoal push`` on a lab of real nodes (issue 6's required tests).

Small trees (a few MB) keep the module fast. Every node condition a test
changes (killed, shaped, a tmpfs mounted, a test hook file) is restored in
``finally``; the agents are stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import manifest as mf
from shoal.agent.chunkserver import TEST_CORRUPT_FLAG, ChunkServer
from shoal.agentlink import fleet as agents
from shoal.content.push import PushOptions, push_async, rollback_async, versions_async
from shoal.content.scan import ScannedTree, SourceBackend, scan
from shoal.lab.labspec import ShapeChange
from shoal.nodes.model import Node

from .conftest import remote, unmount

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    for node in nodes:
        lab.revive(node.name)
    run(agents.stop_async(nodes, agents.AgentOptions()))


def make_tree(root: Path, size: int = 2_000_000, seed: int = 1) -> Path:
    rng = random.Random(seed)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "data.bin").write_bytes(rng.randbytes(size))
    (root / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    (root / "bin" / "run").chmod(0o755)
    (root / "README").symlink_to("bin/run")
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def opts(**kw: Any) -> PushOptions:
    kw.setdefault("durable", False)
    return PushOptions(**kw)


def test_push_change_push_again_moves_only_changed_chunks_then_rollback(
    fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    first = run(push_async(fleet, src, "t1/site", opts()))
    assert first.ok, [(n.node, n.reason) for n in first.failed]
    assert 0.99 <= first.source_sent / first.total_bytes <= 1.1  # each chunk out ~once
    assert sum(n.from_peers for n in first) > 0
    want = sha(src / "data.bin")
    for node in (fleet[0], fleet[-1]):
        assert remote(node, "sha256sum t1/site/data.bin").split()[0] == want
        assert remote(node, "readlink t1/site/README").strip() == "bin/run"
        assert remote(node, "stat -c %a t1/site/bin/run").strip() == "755"
    # change 20 bytes in the middle: each node receives about one chunk, not the file
    data = bytearray((src / "data.bin").read_bytes())
    data[1_000_000:1_000_020] = b"x" * 20
    (src / "data.bin").write_bytes(bytes(data))
    second = run(push_async(fleet, src, "t1/site", opts()))
    assert second.ok
    for n in second:
        assert n.previous == first.version and n.current == second.version
        assert n.received <= 2 * 256 * 1024, (n.node, n.received)
        assert n.reused >= first.total_bytes - 2 * 256 * 1024
    assert second.source_sent <= 2 * 256 * 1024 + 10_000
    assert remote(fleet[3], "sha256sum t1/site/data.bin").split()[0] == sha(src / "data.bin")
    seen = run(versions_async(fleet, "t1/site"))
    assert {r.value["current"] for r in seen} == {second.version}
    back = run(rollback_async(fleet[:4], "t1/site"))
    assert back.ok and {r.value["current"] for r in back} == {first.version}
    mixed = run(versions_async(fleet, "t1/site"))
    assert sorted({r.value["current"] for r in mixed}) == sorted({first.version, second.version})
    assert remote(fleet[0], "sha256sum t1/site/data.bin").split()[0] == want
    forward = run(rollback_async(fleet[:4], "t1/site", to=second.version[:8]))
    assert forward.ok and {r.value["current"] for r in forward} == {second.version}


def test_a_node_killed_mid_push_keeps_its_old_version_and_a_re_push_resumes(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", size=500_000, seed=2)
    old = run(push_async(fleet, src, "t2/site", opts()))
    assert old.ok
    victim = fleet[4]
    (src / "data.bin").write_bytes(random.Random(3).randbytes(6_000_000))

    async def go() -> Any:
        task = asyncio.ensure_future(
            push_async(fleet, src, "t2/site", opts(rate_limit=1.5e6, keepalive=1.0))
        )
        await asyncio.sleep(2.0)
        await asyncio.get_running_loop().run_in_executor(None, lab.kill, victim.name)
        return await task

    try:
        began = time.monotonic()
        result = run(go())
        assert time.monotonic() - began < 60
        failed = {n.node for n in result.failed}
        assert failed == {victim.name}, [(n.node, n.reason) for n in result.failed]
        assert result[victim.name].reason
    finally:
        lab.revive(victim.name)
    # the revived node still runs the old version, intact
    assert remote(victim, "readlink t2/site").strip().endswith(old.version)
    assert remote(victim, "sha256sum t2/site/data.bin").split()[0] != sha(src / "data.bin")
    again = run(push_async(fleet, src, "t2/site", opts()))
    assert again.ok, [(n.node, n.reason) for n in again.failed]
    assert again[victim.name].received < 6_000_000  # what it had verified is not fetched again
    assert remote(victim, "sha256sum t2/site/data.bin").split()[0] == sha(src / "data.bin")


def test_a_peer_serving_corrupted_chunks_is_rejected_and_avoided(
    fleet: list[Node], tmp_path: Path
) -> None:
    liar = fleet[1]
    trio = fleet[:3]
    remote(liar, f"touch .shoal/{TEST_CORRUPT_FLAG}")
    try:
        src = make_tree(tmp_path / "src", size=4_000_000, seed=4)
        # a slow source: every node registers before the stripes run out, so the liar
        # is some chunks' first recipient and the others must ask it
        result = run(push_async(trio, src, "t3/site", opts(source_rate=2e6)))
    finally:
        remote(liar, f"rm -f .shoal/{TEST_CORRUPT_FLAG}")
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    assert sum(n.rejected for n in result) >= 1
    for node in trio:
        assert remote(node, "sha256sum t3/site/data.bin").split()[0] == sha(src / "data.bin")


def test_disk_full_on_one_node_is_reported_and_the_old_version_keeps_running(
    fleet: list[Node], tmp_path: Path
) -> None:
    small = fleet[2]
    remote(small, "mkdir -p t4 && mount -t tmpfs -o size=1m tmpfs t4")
    try:
        src = make_tree(tmp_path / "src", size=200_000, seed=5)
        v1 = run(push_async(fleet[:4], src, "t4/site", opts()))
        assert v1.ok, [(n.node, n.reason) for n in v1.failed]
        (src / "data.bin").write_bytes(random.Random(6).randbytes(3_000_000))
        v2 = run(push_async(fleet[:4], src, "t4/site", opts()))
        assert {n.node for n in v2.failed} == {small.name}
        assert "disk full" in v2[small.name].reason, v2[small.name].reason
        assert remote(small, "readlink t4/site").strip().endswith(v1.version)
        assert remote(small, "stat -c %s t4/site/data.bin").strip() == "200000"
        assert remote(small, "ls t4/.site.shoal/staging 2>/dev/null | wc -l").strip() == "0"
    finally:
        unmount(small, "t4")


def _evil_tree(tmp_path: Path, entries: list[mf.Entry]) -> ScannedTree:
    good = scan(make_tree(tmp_path / "src", size=1000))
    good.manifest = mf.Manifest(entries)
    data = good.manifest.to_bytes()
    import zlib

    good.blob = zlib.compress(data)
    good.blob_hash = hashlib.sha256(good.blob).hexdigest()
    good.blobs = {good.blob_hash: good.blob}
    good.version = mf.version_of(data)
    return good


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (mf.Entry("../escape", "f", 0o644, 0, []), "'..'"),
        (mf.Entry("link", "l", 0o777, target="../../../etc"), "escapes"),
    ],
)
def test_a_manifest_that_escapes_the_tree_is_rejected_on_the_node(
    fleet: list[Node], tmp_path: Path, entry: mf.Entry, why: str
) -> None:
    tree = _evil_tree(tmp_path, [entry])
    result = run(push_async(fleet[:2], tmp_path, "t5/site", opts(), tree=tree))
    assert not result.ok
    for n in result:
        assert "manifest rejected" in n.reason and why in n.reason, n.reason
    assert (
        remote(fleet[0], "test -e escape -o -e t5/site && echo present || echo absent")
        == "absent\n"
    )


def test_the_node_chunk_endpoint_refuses_requests_without_the_token(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    tree = scan(make_tree(tmp_path / "src", size=1000))
    node = fleet[5]

    async def go() -> tuple[Any, Any, Any]:
        server = ChunkServer(SourceBackend(tree))
        token = "t" * 32
        server.tokens.add(token)
        port = await server.start(lab.controller_addr, 0)
        try:
            begin = await agents.call_async(
                [node],
                "content.begin",
                {
                    "dir": "t6/site",
                    "version": tree.version,
                    "blob": tree.blob_hash,
                    "blob_size": len(tree.blob),
                    "token": token,
                    "sources": [[lab.controller_addr, port]],
                },
            )
            assert begin.ok, begin[node.name].reason
            node_port = begin[node.name].value["port"]
            answers = []
            for tok in ("wrong", None, token):
                reader, writer = await asyncio.open_connection(node.host, node_port)
                req: dict[str, Any] = {"v": 1, "want": [tree.blob_hash, "../../etc/passwd"]}
                if tok:
                    req["token"] = tok
                writer.write(json.dumps(req).encode() + b"\n")
                answers.append(json.loads(await reader.readline()))
                writer.close()
        finally:
            end = await agents.call_async([node], "content.end", {"version": tree.version})
            server.close()
        return answers, end, node_port

    answers, end, _ = run(go())
    assert answers[0] == {"v": 1, "error": "bad token"}
    assert answers[1] == {"v": 1, "error": "bad token"}
    assert answers[2] == {"n": [len(tree.blob), -1]}
    assert end.ok


def test_ten_percent_packet_loss_still_completes(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", size=1_000_000, seed=8)
    lab.shape("all", ShapeChange(loss_bp=1000))
    lab.shape("controller", ShapeChange(loss_bp=1000))
    try:
        result = run(push_async(fleet, src, "t7/site", opts()))
    finally:
        lab.shape("all", ShapeChange(loss_bp=0))
        lab.shape("controller", ShapeChange(loss_bp=0))
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    assert remote(fleet[7], "sha256sum t7/site/data.bin").split()[0] == sha(src / "data.bin")
