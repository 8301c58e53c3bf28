"""Benchmark of ``shoal lab``: bring-up time, memory, tear-down time, rate accuracy.

Usage (root): ``.venv/bin/python bench/lab.py [--nodes 64] [--rate 100mbit] [--seconds 4]``

Prints the wall time of ``lab up N`` (with the rate applied to every node
link), the memory of the lab's processes (sum of RSS, and of PSS, which
counts shared pages once), the drop in the machine's MemAvailable (includes
kernel objects: namespaces, veths, qdiscs), the wall time of ``lab down``, and
one TCP stream between two nodes measured against the configured rate. Runs in
a private temporary SHOAL_HOME and always takes its lab down.
"""

from __future__ import annotations

import os
import sys

# bench/ holds scripts named like stdlib modules (select.py): keep it off sys.path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import secrets
import shutil
import tempfile
import time


def mem_available_kb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/lab.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="shoal-bench-")
    os.environ["SHOAL_HOME"] = home

    from shoal.lab import Lab, LabSpec, Shaping
    from shoal.lab import system as labsys
    from shoal.lab.labspec import Naming, format_rate, parse_rate
    from shoal.lab.measure import transfer_rate

    rate = parse_rate(args.rate)
    name = f"b{secrets.token_hex(3)}"
    avail0 = mem_available_kb()
    t0 = time.monotonic()
    lab = Lab.up(LabSpec(n=args.nodes, name=name, shaping=Shaping(rate_bps=rate)))
    up_s = time.monotonic() - t0
    try:
        avail1 = mem_available_kb()
        naming = Naming(name)
        inodes = {labsys.netns_inode(naming.node_ns(n.name)) for n in lab.nodes()}
        by_ns = labsys.pids_by_netns({i for i in inodes if i is not None})
        pids = [p for group in by_ns.values() for p in group]
        rss = sum(labsys.rss_kb(p) for p in pids)
        pss = sum(pss_kb(p) for p in pids)
        measured = transfer_rate(lab, "n1", "n2", args.seconds)
    finally:
        t1 = time.monotonic()
        lab.down()
        down_s = time.monotonic() - t1
        shutil.rmtree(home)
    n = args.nodes
    print(f"lab up {n}:    {up_s:.2f} s wall (rate {format_rate(rate)} on every node link)")
    print(
        f"memory:       {len(pids)} processes, RSS sum {rss / 1024:.1f} MB "
        f"({rss / 1024 / n:.2f} MB/node), PSS sum {pss / 1024:.1f} MB "
        f"({pss / 1024 / n:.2f} MB/node)"
    )
    print(f"MemAvailable: -{(avail0 - avail1) / 1024:.1f} MB after up (kernel objects included)")
    print(f"lab down:     {down_s:.2f} s wall")
    err = (measured - rate) / rate * 100
    print(
        f"rate n1->n2:  {measured / 1e6:.1f} Mbit/s measured vs {rate / 1e6:g} Mbit/s configured "
        f"({err:+.1f}%, TCP goodput over {args.seconds:g}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
