"""Benchmark: a barrier across 32 lab nodes — how fast are all of them released?

    .venv/bin/python bench/barrier.py [--nodes 32] [--rounds 5] [--modes direct,service]

A namespace lab of ``--nodes`` nodes (root) gets an application whose one
component holds every node: a step that sleeps a random 0-500 ms (arrivals
spread out), the barrier, then a step that prints the time. Each round brings
it up once per mode, in turn: ``direct`` (the library in this process, fresh
SSH connections) and ``service`` (``shoal serve`` running over the same lab
and state, every node attached; the app brought up through its socket, so the
release is decided in the service's loop, beside every node's watched stream,
its beats and the journal's writer).

The barrier's *release spread* is measured on the nodes' own clock (one
machine, one clock): for every node, when its agent began the step after the
barrier, minus the controller's decision (an "all" barrier is decided in the
call that receives the last arrival, so this is the last arrival's receipt).
Goal: every node released within 30 ms at 32 nodes (100 ms at 250). Also
printed: from the last node's *end* of its pre-barrier step (its reply still
has to reach the controller), when the post-barrier command itself had run
(``date`` inside the step), and, as a baseline, the same release done the
usual way (a new SSH command per node through ``shoal run``). The load average
is printed with the figures: every node's sshd and agent share this machine.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

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


async def node_times(name: str) -> dict[str, list[float]]:
    """Each node's end of ``work`` and start of ``after`` (its agent's clock), and when
    ``after``'s command ran; the steps are then forgotten."""
    from shoal.agentlink import fleet as agents
    from shoal.nodes.select import resolve

    steps = await agents.call_async(resolve("@lab"), "step.status", {"prefix": f"{name}.all."})
    done = [r.value["done"] for r in steps]
    return {
        "arrived": [d[f"{name}.all.work"]["ended"] for d in done],
        "began": [d[f"{name}.all.after"]["started"] for d in done],
        "ran": [float(d[f"{name}.all.after"]["tail"].split()[0]) for d in done],
    }


def figures(decided: float, times: dict[str, list[float]]) -> dict[str, float]:
    return {
        "first_ms": (min(times["began"]) - decided) * 1000,
        "release_ms": (max(times["began"]) - decided) * 1000,
        "command_ms": (max(times["ran"]) - decided) * 1000,
        "end_to_end_ms": (max(times["began"]) - max(times["arrived"])) * 1000,
    }


async def direct_round(name: str, path: Path) -> dict[str, float]:
    from shoal.app import lifecycle
    from shoal.app.appspec import load

    seen = Written()
    logging.getLogger("shoal.app.barrier").addHandler(seen)
    try:
        report = await lifecycle.up_async(load(path))
    finally:
        logging.getLogger("shoal.app.barrier").removeHandler(seen)
    decided = report.barriers["b"]
    assert decided is not None
    times = await node_times(name)
    await lifecycle.down_async(name)
    return {**figures(decided, times), **seen.figures}


class Written(logging.Handler):
    """The controller's own share, from the barrier's debug line: recording the
    release, and writing every node's go message."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.figures: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("barrier %s released"):
            _, recorded, _, written = record.args  # type: ignore[misc]
            self.figures = {"recorded_ms": recorded, "written_ms": written}


def service_round(client: Any, name: str, path: Path) -> dict[str, float]:
    records = list(client.stream("POST", "/api/v1/apps", body={"spec": str(path), "stream": True}))
    if "report" not in records[-1]:
        raise SystemExit(f"app up through the service failed: {records[-1]}")
    (barrier,) = client.barriers(name)
    times = asyncio.run(node_times(name))
    client.request("POST", f"/api/v1/apps/{name}/down")
    return figures(float(barrier["released"]), times)


async def baseline(nodes: int) -> float:
    from shoal.fanout import run_async
    from shoal.nodes.select import resolve

    members = resolve("@lab")[:nodes]
    t0 = time.time()
    result = await run_async(members, "date +%s.%N")
    return (max(float(r.stdout.split()[0]) for r in result) - t0) * 1000


def wait_attached(client: Any, n: int, timeout: float = 180.0) -> float:
    start = time.monotonic()
    while int(client.status()["nodes"].get("links", {}).get("up", 0)) < n:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"the service did not attach {n} nodes within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - start


def show(mode: str, rows: list[dict[str, float]], goal: float) -> None:
    print(f"  {mode}:")
    for key, label in [
        ("first_ms", "first node's agent starts next step"),
        ("release_ms", "last node's agent starts next step"),
        ("command_ms", "last node's next command has run"),
        ("end_to_end_ms", "last start after the last node's arrival"),
        ("recorded_ms", "controller: release recorded (SQLite)"),
        ("written_ms", "controller: every go message written"),
    ]:
        values = [r[key] for r in rows if key in r]
        if not values:
            continue
        print(f"    {label:<44} median {statistics.median(values):7.1f}  max {max(values):7.1f}")
    worst = max(r["release_ms"] for r in rows)
    verdict = "meets" if worst <= goal else "misses"
    median = statistics.median(r["release_ms"] for r in rows)
    print(
        f"    goal: last node within {goal:g} ms -> median {median:.1f}, worst {worst:.1f}: "
        f"{verdict} the goal"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="direct,service")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    logging.getLogger("shoal.app.barrier").setLevel(logging.DEBUG)
    if os.geteuid() != 0:
        sys.exit("bench/barrier.py needs root (a namespace lab)")
    goal = 30.0 if args.nodes <= 32 else 100.0
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        os.environ["SHOAL_HOME"] = tmp
        from shoal.lab import Lab, LabSpec
        from shoal.testing.serveproc import serving

        lab = Lab.up(LabSpec(n=args.nodes, name=f"bb{secrets.token_hex(2)}"))
        try:
            with (
                serving(Path(tmp), timeout=60)
                if "service" in modes
                else contextlib.nullcontext() as svc
            ):
                client = None
                if svc is not None:
                    from shoal.client import ServiceClient

                    client = ServiceClient.locate(Path(tmp))
                    took = wait_attached(client, args.nodes)
                    print(f"service: {args.nodes} nodes attached in {took:.1f} s")
                for i in range(args.rounds):
                    for mode in modes:
                        name = f"barrier{mode[0]}{i}"
                        path = Path(tmp) / f"{name}.yaml"
                        path.write_text(SPEC.format(name=name, nodes=args.nodes))
                        if mode == "service":
                            rows[mode].append(service_round(client, name, path))
                        else:
                            rows[mode].append(asyncio.run(direct_round(name, path)))
            base = [asyncio.run(baseline(args.nodes)) for _ in range(3)]
        finally:
            lab.down()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"barrier on {args.nodes} lab nodes, {args.rounds} rounds "
        f"(ms after the controller's decision; load average {load})"
    )
    for mode in modes:
        show(mode, rows[mode], goal)
    print(
        f"  baseline, a new SSH command per node (shoal run, fresh connections): "
        f"median {statistics.median(base):.0f} ms"
    )


if __name__ == "__main__":
    main()
