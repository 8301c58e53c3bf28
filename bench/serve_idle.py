"""The service's idle CPU with every node attached (issue 13 figure: <= 3 % of one core).

    .venv/bin/python -m bench.serve_idle [--nodes 250] [--seconds 60] [--rounds 2]
                                         [--before REF] [--lab NAME]

``shoal serve`` runs over a lab of N nodes; once every link is up and a settle
period has passed, its CPU time (utime + stime from /proc/PID/stat) is read over
``--seconds`` with nothing asked of it, and its RSS. ``--before REF`` measures the
service of another commit too (its ``src/`` exported with ``git archive``, run
with PYTHONPATH), alternated with this tree's round by round on the same lab, so
a load drift of the shared machine hits both alike; the ratio is printed. The
agents follow the build of the service measuring (each switch upgrades them).
``--lab NAME`` uses a lab that is already up (and leaves it up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.serve import Service, wait_up

from shoal.lab import Lab, LabSpec
from shoal.nodes.inventory import import_nodes
from shoal.state import State

#: Seconds every link must have been up before the measurement starts.
SETTLE = 10.0
#: One round's figures of one variant.
Sample = tuple[float, ...]


def export(ref: str, into: Path) -> Path:
    """``src/`` of commit ``ref`` under ``into`` (what PYTHONPATH points at)."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def report(
    got: dict[str, list[Sample]],
    field: int,
    line: Callable[[str, list[Sample]], str],
    then: str | None = None,
) -> None:
    """Each variant's ``line(label, samples)`` (and ``then``), then with a ``--before``
    variant (the first of two) the ratio of the medians of sample ``field``: this tree
    / before."""
    for label, rows in got.items():
        print(line(label, rows))
    if then is not None:
        print(then)
    if len(got) == 2:
        before, after = (statistics.median(s[field] for s in rows) for rows in got.values())
        print(f"  ratio this tree / before: {after / before:.2f}x")


def measure(svc: Service, n: int, seconds: float) -> tuple[float, float, float]:
    """(attach seconds, idle % of one core, RSS MB) of one service run."""
    client = svc.start()
    try:
        attached = wait_up(client, n, timeout=300)
        time.sleep(SETTLE)
        cpu0, _ = svc.cpu_rss()
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1, rss = svc.cpu_rss()
        up = int(client.status()["nodes"].get("links", {}).get("up", 0))
        if up < n:
            raise SystemExit(f"only {up} of {n} links up at the end of the idle period")
        return attached, (cpu1 - cpu0) / (time.monotonic() - t0) * 100, rss
    finally:
        svc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", metavar="REF", help="also measure this commit's service")
    parser.add_argument("--lab", metavar="NAME", help="an existing lab (left up)")
    args = parser.parse_args()
    lab = Lab.open(args.lab) if args.lab else Lab.up(LabSpec(n=args.nodes, name=f"bi{os.getpid()}"))
    nodes = lab.nodes()[: args.nodes]
    n = len(nodes)
    try:
        with tempfile.TemporaryDirectory(prefix="shoal-bench-idle-") as tmp:
            variants: dict[str, Path | None] = {"this tree": None}
            if args.before:
                variants = {f"before ({args.before})": export(args.before, Path(tmp)), **variants}
            homes = {}
            for i, label in enumerate(variants):
                homes[label] = home = Path(tmp) / f"home{i}"
                home.mkdir(mode=0o700)
                with State(home / "state.db") as st:
                    import_nodes(nodes, state=st)
            got: dict[str, list[Sample]] = {label: [] for label in variants}
            for r in range(args.rounds):
                for label, path in variants.items():
                    sample = measure(Service(homes[label], path), n, args.seconds)
                    got[label].append(sample)
                    print(f"round {r + 1} {label:<24} attach {sample[0]:5.1f} s  "
                          f"idle {sample[1]:5.2f} % of a core  RSS {sample[2]:4.0f} MB",
                          flush=True)  # fmt: skip
    finally:
        if not args.lab:
            lab.down()
    print(f"\nservice idle with {n} nodes attached, {args.seconds:g} s per round, "
          f"median of {args.rounds} (target <= 3 % of one core, RSS <= 300 MB)")  # fmt: skip
    report(
        got,
        1,
        lambda label, rows: (
            f"  {label:<24} {statistics.median(s[1] for s in rows):5.2f} % of"
            f" a core  RSS {statistics.median(s[2] for s in rows):4.0f} MB"
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
