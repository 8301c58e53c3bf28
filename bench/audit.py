"""Benchmark ``shoal audit`` on a lab: a first audit and a re-audit, beside the peer way.

    .venv/bin/python bench/audit.py [--nodes 8] [--files 20000] [--size 200]

The issue's figure is 100,000 files (1 GB) on 16 nodes (``--nodes 16 --files
100000 --size 1024``); the default is smaller for a shared 2-core host. A fresh
namespace lab (root) of ``--nodes`` nodes; on each, the same tree of
``--files`` files totalling ``--size`` MB (written by a seeded script on the
node, in 100 directories). Then, timed:

1. **ours, first**: ``audit_async`` (each agent hashes every file: cold stat
   cache) and the decision; beside it the **peer**: ``shoal run 'find DIR -type
   f -print0 | xargs -0 sha256sum'`` on every node plus a local comparison of
   the outputs (per file the majority digest and the nodes outside it), in the
   same run, the files as warm in the page cache for both.
2. 0.1 % of the files are rewritten on every node (other bytes on the first
   node, so it is the minority of those files).
3. **ours, re-audit** (only changed files hashed: the stat cache; only the
   directories inotify names listed again: the dirty set) against the peer
   again (it has no cache); the target is a re-audit in ≤ 10 % of the first
   audit's time. Both must name the same minority.

Each row also gives the slowest node's own walk (``node``: the agent's
``seconds``); the rest of ours is SSH and agent connections, the bucket
round and the decision, which the peer's ``shoal run`` pays too (its SSH part).

The machine's load average is printed: on a shared 2-core host the figures
move with it.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DIR = "/tmp/bench-audit"
MAKE = """
import os, random
root, files, size = {root!r}, {files}, {size}
rng = random.Random(7)
each = size // files
for i in range(files):
    d = os.path.join(root, "d%02d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(rng.randbytes(each))
"""
CHANGE = """
import os, sys
root, files, step, tag = {root!r}, {files}, {step}, sys.argv[1]
for i in range(0, files, step):
    with open(os.path.join(root, "d%02d" % (i % 100), "f%06d" % i), "ab") as f:
        f.write(tag.encode())
"""


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def python_command(script: str, *argv: str) -> str:
    import shlex

    return f"python3 -c {shlex.quote(script)} " + " ".join(shlex.quote(a) for a in argv)


async def ours(nodes: list[Any]) -> tuple[float, set[str], int, Any]:
    from shoal.ops.audit import AuditOptions, audit_async

    t0 = time.monotonic()
    report = await audit_async(nodes, [DIR], AuditOptions(install=False))
    took = time.monotonic() - t0
    assert not report.unanswered, report.unanswered
    hashed = sum(s.hashed for s in report.scans.values())
    return took, set(report.minority_nodes), hashed, report


def walked(report: Any) -> float:
    """The slowest node's walk and hashing (the agent's own time)."""
    return max((s.seconds for s in report.scans.values()), default=0.0)


async def peer(nodes: list[Any]) -> tuple[float, set[str], int]:
    from shoal.fanout.commands import run_async

    t0 = time.monotonic()
    results = await run_async(nodes, f"find {DIR} -type f -print0 | xargs -0 sha256sum")
    assert results.ok, [(r.node, r.reason) for r in results.failed]
    listings: dict[str, dict[str, str]] = {}
    for r in results:
        listing: dict[str, str] = {}
        for line in r.stdout.splitlines():
            digest, _, path = line.partition("  ")
            listing[path] = digest
        listings[r.node] = listing
    minority: set[str] = set()
    differing = 0
    for path in {p for listing in listings.values() for p in listing}:
        votes = Counter(listing.get(path) for listing in listings.values())
        top, count = votes.most_common(1)[0]
        if count != len(listings):
            differing += 1
            if count > len(listings) // 2:
                minority |= {n for n, listing in listings.items() if listing.get(path) != top}
    return time.monotonic() - t0, minority, differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200, help="MB per node in all")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/audit.py needs root (a namespace lab)")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        os.environ["SHOAL_HOME"] = tmp
        from shoal.agentlink import fleet as agents
        from shoal.fanout.commands import run_async
        from shoal.fanout.options import RunOptions
        from shoal.lab import Lab, LabSpec

        lab = Lab.up(LabSpec(n=args.nodes, name=f"ba{secrets.token_hex(2)}"))
        try:
            nodes = lab.nodes()
            assert asyncio.run(agents.install_async(nodes, agents.AgentOptions())).ok
            make = MAKE.format(root=DIR, files=args.files, size=args.size << 20)
            made = asyncio.run(run_async(nodes, python_command(make), RunOptions(timeout=3600)))
            assert made.ok, [(r.node, r.reason) for r in made.failed]
            print(
                f"audit of {args.files} files ({args.size} MB) on each of {args.nodes} lab "
                f"nodes (load {load()})"
            )
            peer_first = asyncio.run(peer(nodes))  # also warms the page cache for both
            first = asyncio.run(ours(nodes))
            peer_first = asyncio.run(peer(nodes))
            assert first[1] == peer_first[1] == set(), (first[1], peer_first[1])
            print(
                f"  first audit   ours {first[0]:6.2f}s ({first[2]} files hashed, node "
                f"{walked(first[3]):.2f}s)   "
                f"peer {peer_first[0]:6.2f}s   ratio ours/peer {first[0] / peer_first[0]:.2f}"
                f"  (load {load()})"
            )

            step = 1000  # 0.1 % of the files
            change = CHANGE.format(root=DIR, files=args.files, step=step)
            assert asyncio.run(run_async(nodes[:1], python_command(change, "odd"))).ok
            assert asyncio.run(run_async(nodes[1:], python_command(change, "new"))).ok
            time.sleep(0.2)  # past the agent's racy window (RACY_NS)
            again = asyncio.run(ours(nodes))
            peer_again = asyncio.run(peer(nodes))
            changed = len(range(0, args.files, step))
            assert again[1] == peer_again[1] == {nodes[0].name}, (again[1], peer_again[1])
            assert len(again[3].files) == peer_again[2] == changed
            print(
                f"  re-audit      ours {again[0]:6.2f}s ({again[2]} files hashed, node "
                f"{walked(again[3]):.2f}s)   "
                f"peer {peer_again[0]:6.2f}s   ratio ours/peer {again[0] / peer_again[0]:.2f}"
                f"  (load {load()})"
            )
            share = again[0] / first[0]
            print(
                f"  re-audit after {changed} changed file(s) per node: {share:.1%} of the first"
                f" audit's time (target <= 10 %: {'met' if share <= 0.10 else 'NOT met'}); "
                f"both name the minority {sorted(again[1])}"
            )
            asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))
        finally:
            lab.down()


if __name__ == "__main__":
    main()
