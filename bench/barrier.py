"""Benchmark: a barrier across 32 lab nodes — how fast are all of them released?

    .venv/bin/python bench/barrier.py [--nodes 32] [--rounds 5]

A namespace lab of ``--nodes`` nodes (root) gets an application whose one
component holds every node: a step that sleeps a random 0-500 ms (arrivals
spread out), the barrier, then a step that prints the time. The barrier's
*release spread* is measured on the nodes' own clock (one machine, one
clock): for every node, when its agent began the step after the barrier,
minus the last arrival at the barrier (the controller's receipt of the last
node's pre-barrier step). Goal: every node released within 100 ms of the
last arrival. Also printed: when the post-barrier command itself had run
(``date`` inside the step), and, as a baseline, the same release done the
usual way (a new SSH command per node through ``shoal run``).
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SPEC = """\
app: {name}
components:
  all:
    select: "@lab"
    count: {nodes}
    processes:
      - name: work
        run: "ms=$(( $(od -An -N2 -tu2 /dev/urandom) % 500 )); sleep $(printf '0.%03d' $ms)"
      - {{name: meet, barrier: b}}
      - {{name: after, run: "date +%s.%N"}}
barriers:
  b: {{}}
"""


async def one_round(name: str, nodes: int, folder: Path) -> dict[str, float]:
    from shoal.agentlink import fleet as agents
    from shoal.app import lifecycle
    from shoal.app.appspec import load
    from shoal.nodes.select import resolve

    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, nodes=nodes))
    report = await lifecycle.up_async(load(path))
    last = max(report.arrivals["b"].values())
    members = resolve("@lab")
    steps = await agents.call_async(members, "step.status", {"prefix": f"{name}.all.after"})
    began = [r.value["done"][f"{name}.all.after"]["started"] for r in steps]
    ran = [float(r.value["done"][f"{name}.all.after"]["tail"].split()[0]) for r in steps]
    await lifecycle.down_async(name)
    return {
        "release_ms": (max(began) - last) * 1000,
        "first_ms": (min(began) - last) * 1000,
        "command_ms": (max(ran) - last) * 1000,
        "decide_ms": ((report.barriers["b"] or last) - last) * 1000,
    }


async def baseline(nodes: int) -> float:
    from shoal.fanout import run_async
    from shoal.nodes.select import resolve

    members = resolve("@lab")[:nodes]
    t0 = time.time()
    result = await run_async(members, "date +%s.%N")
    return (max(float(r.stdout.split()[0]) for r in result) - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/barrier.py needs root (a namespace lab)")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        os.environ["SHOAL_HOME"] = tmp
        from shoal.lab import Lab, LabSpec

        lab = Lab.up(LabSpec(n=args.nodes, name=f"bb{secrets.token_hex(2)}"))
        try:
            rows = []
            for i in range(args.rounds):
                rows.append(asyncio.run(one_round(f"barrier{i}", args.nodes, Path(tmp))))
            base = [asyncio.run(baseline(args.nodes)) for _ in range(3)]
        finally:
            lab.down()
    print(f"barrier on {args.nodes} lab nodes, {args.rounds} rounds (ms after the last arrival)")
    for key, label in [
        ("decide_ms", "controller decides release"),
        ("first_ms", "first node's agent starts next step"),
        ("release_ms", "last node's agent starts next step"),
        ("command_ms", "last node's next command has run"),
    ]:
        values = [r[key] for r in rows]
        print(f"  {label:<40} median {statistics.median(values):7.1f}  max {max(values):7.1f}")
    worst = max(r["release_ms"] for r in rows)
    verdict = "meets" if worst <= 100 else "misses"
    print(f"  goal: all released within 100 ms -> worst {worst:.1f} ms: {verdict} the goal")
    print(
        f"  baseline, a new SSH command per node (shoal run, fresh connections): "
        f"median {statistics.median(base):.0f} ms"
    )


if __name__ == "__main__":
    main()
