"""Benchmark ``shoal rollout`` of a small service on a lab: downtime per node, rollback.

    .venv/bin/python bench/rollout.py [--nodes 32] [--size 4] [--stages 25%,50%,75%,100%]

A fresh namespace lab (root) of ``--nodes`` nodes, each running one supervised
program (a shell script that writes which version it runs, then sleeps) out of
a pushed directory of ``--size`` MB. Three runs, one after the other:

1. **own start**: every node's program stopped and restarted in place, no
   switch, timed the way the rollout's gate times it (stop → RUNNING, status
   polled every 0.1 s): the program's own start time on this host now.
2. **rollout** v1 → v2 in the given stages (one P2P push first, nothing
   switched; then per node stop → rename → restart → gate): per-node downtime
   (``RolloutResult.downtime``) and the same minus that node's own start
   (target: ≤ 1 s); beside it the **peer**: the Ansible ``serial`` way, each
   stage's nodes stopped, the files copied while they are down (``shoal push``,
   switched at once) and restarted: the transfer sits in the window.
3. **rollback**: v3 fails its gate on every node after stage 1 → every touched
   node back on v2 and running: ``RolloutResult.rollback_seconds`` (target
   ≤ 3 s) and a check of what each node runs afterwards.

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
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

NAME = "bsvc"
RUN = """#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd -P)"
if [ -e "$HOME/bsvc.bad" ] && [ "$(cat "$here/VERSION")" = v3 ]; then exit 3; fi
cat "$here/VERSION" > "$HOME/bsvc.running"
exec sleep 3600
"""
POLL = 0.1


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def tree(root: Path, version: str, size_mb: int) -> Path:
    root.mkdir(parents=True)
    (root / "VERSION").write_text(version + "\n")
    (root / "run.sh").write_text(RUN)
    (root / "run.sh").chmod(0o755)
    (root / "blob").write_bytes(os.urandom(size_mb << 20))  # a different blob per version
    return root


async def _until_running(client: Any, began: float) -> float:
    while True:
        rows = await client.call("proc.status", name=NAME, timeout=30)
        if rows and rows[0]["state"] == "RUNNING":
            return time.monotonic() - began
        await asyncio.sleep(POLL)


async def own_start(nodes: list[Any]) -> dict[str, float]:
    """Stop → restart → RUNNING in place on every node, a quarter at a time."""
    from shoal.agentlink import fleet as agents

    out: dict[str, float] = {}

    async def talk(client: Any, node: Any, st: Any, o: Any) -> Any:
        from shoal.fanout.results import NodeOutcome

        began = time.monotonic()
        await client.call("proc.stop", name=NAME, timeout=60)
        await client.call("proc.restart", name=NAME, timeout=60)
        out[node.name] = await _until_running(client, began)
        return NodeOutcome(node.name)

    opts = agents.AgentOptions(parallel=max(1, len(nodes) // 4))
    done = await agents.each_agent(nodes, talk, opts)
    assert done.ok, [(r.node, r.reason) for r in done.failed]
    return out


async def peer(nodes: list[Any], source: Path, stages: list[list[Any]]) -> dict[str, float]:
    """Ansible ``serial``: per stage, stop, copy while down (push, switched), restart."""
    from shoal.agentlink import fleet as agents
    from shoal.content.push import PushOptions, push_async

    out: dict[str, float] = {}
    for stage in stages:
        began = time.monotonic()
        stopped = await agents.call_async(stage, "proc.stop", {"name": NAME})
        assert stopped.ok, [(r.node, r.reason) for r in stopped.failed]
        pushed = await push_async(stage, source, NAME, PushOptions(durable=False))
        assert pushed.ok, [(r.node, r.reason) for r in pushed.failed]
        restarted = await agents.call_async(stage, "proc.restart", {"name": NAME})
        assert restarted.ok, [(r.node, r.reason) for r in restarted.failed]

        async def talk(client: Any, node: Any, st: Any, o: Any, began: float = began) -> Any:
            from shoal.fanout.results import NodeOutcome

            out[node.name] = await _until_running(client, began)
            return NodeOutcome(node.name)

        await agents.each_agent(stage, talk, agents.AgentOptions())
    return out


def spread(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"median {statistics.median(values):5.2f}s  p90 {p90:5.2f}s  max {values[-1]:5.2f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--size", type=int, default=4, help="MB in the service's directory")
    parser.add_argument("--stages", default="25%,50%,75%,100%")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/rollout.py needs root (a namespace lab)")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        os.environ["SHOAL_HOME"] = tmp
        from shoal.agentlink import fleet as agents
        from shoal.content.push import PushOptions, push_async
        from shoal.content.rollout import RolloutPlan, assign_stages, parse_stages, rollout_async
        from shoal.fanout.commands import run_async
        from shoal.lab import Lab, LabSpec

        work = Path(tmp)
        lab = Lab.up(LabSpec(n=args.nodes, name=f"br{secrets.token_hex(2)}"))
        try:
            nodes = lab.nodes()
            assert asyncio.run(agents.install_async(nodes, agents.AgentOptions())).ok
            v1 = tree(work / "v1", "v1", args.size)
            assert asyncio.run(push_async(nodes, v1, NAME, PushOptions(durable=False))).ok
            spec = agents.proc_spec(NAME, ["/bin/sh", "-c", f'exec "$HOME/{NAME}/run.sh"'])
            assert asyncio.run(agents.proc_start_async(nodes, spec)).ok
            time.sleep(1)
            print(
                f"rollout of a {args.size} MB service on {args.nodes} lab nodes, stages "
                f"{args.stages}, max_unavailable 25% (load {load()})"
            )

            own = asyncio.run(own_start(nodes))
            print(f"  own start (stop -> RUNNING in place)   {spread(list(own.values()))}")

            plan = RolloutPlan(
                stages=parse_stages(args.stages),
                max_unavailable="25%",
                min_healthy_time=0.5,
                stage_deadline=30,
            )
            t0 = time.monotonic()
            res = asyncio.run(
                rollout_async(nodes, str(tree(work / "v2", "v2", args.size)), NAME, [NAME], plan)
            )
            wall = time.monotonic() - t0
            assert res.state == "done", (res.state, res.reason)
            down = res.downtime
            beyond = [down[n] - own[n] for n in down]
            print(f"  rollout v1 -> v2: {res.state} in {wall:.1f}s (load {load()})")
            print(f"    downtime (stop -> RUNNING)           {spread(list(down.values()))}")
            print(
                f"    beyond the program's own start       {spread(beyond)}  "
                f"(target <= 1 s: {'met' if max(beyond) <= 1 else 'NOT met'})"
            )

            names = [n.name for n in nodes]
            by = {n.name: n for n in nodes}
            groups = [[by[n] for n in g] for _, g in assign_stages(names, plan.stages, set)]
            theirs = asyncio.run(peer(nodes, tree(work / "v2b", "v2b", args.size), groups))
            ours_med = statistics.median(down.values())
            theirs_med = statistics.median(theirs.values())
            print(
                f"    peer (stop, copy while down, start)  {spread(list(theirs.values()))}  "
                f"median ratio peer/ours {theirs_med / ours_med:.1f}x"
            )

            # rollback: v3 cannot start after stage 1; every touched node back on v2b
            later = [n for g in groups[1:] for n in g]
            assert asyncio.run(run_async(later, f"touch $HOME/{NAME}.bad")).ok
            res = asyncio.run(
                rollout_async(nodes, str(tree(work / "v3", "v3", args.size)), NAME, [NAME], plan)
            )
            assert res.state == "rolled_back", (res.state, res.reason)
            touched = [n for n, step in res.steps.items() if step != "pending"]
            check = asyncio.run(run_async([by[n] for n in touched], f"cat $HOME/{NAME}.running"))
            back = sum(1 for r in check if r.ok and r.stdout.strip() == "v2b")
            status = asyncio.run(agents.call_async(nodes, "proc.status", {"name": NAME}))
            up = sum(1 for r in status if r.ok and r.value and r.value[0]["state"] == "RUNNING")
            secs = res.rollback_seconds or 0.0
            print(
                f"  rollback after a failed gate at stage 2: {len(touched)} node(s) touched, "
                f"back and running in {secs:.2f}s (target <= 3 s: "
                f"{'met' if secs <= 3 else 'NOT met'}); {back}/{len(touched)} run v2b, "
                f"{up}/{len(nodes)} RUNNING; failed: {dict(list(res.failed.items())[:1])}"
            )
            assert asyncio.run(run_async(later, f"rm -f $HOME/{NAME}.bad")).ok
            asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))
        finally:
            lab.down()


if __name__ == "__main__":
    main()
