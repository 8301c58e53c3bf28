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
import subprocess
import tempfile
import time

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SERVER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5301)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
start = time.monotonic(); t0 = None; n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    now = time.monotonic()
    if t0 is None and now - start >= 0.5: t0 = now; n = 0
    elif t0 is not None: n += len(b)
print(n * 8 / (time.monotonic() - t0))
"""

CLIENT = """
import socket, sys, time
addr, seconds = sys.argv[1], float(sys.argv[2])
for _ in range(200):
    try:
        s = socket.create_connection((addr, 5301), timeout=5); break
    except OSError: time.sleep(0.05)
buf = b"x" * (1 << 16); end = time.monotonic() + seconds
while time.monotonic() < end: s.sendall(buf)
s.close()
"""


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


def measure_rate(netns_src: str, netns_dst: str, dst_addr: str, seconds: float) -> float:
    srv = subprocess.Popen(
        ["ip", "netns", "exec", netns_dst, PY, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        subprocess.run(
            ["ip", "netns", "exec", netns_src, PY, "-c", CLIENT, dst_addr, str(seconds)],
            check=True,
            timeout=seconds + 30,
        )
        out, _ = srv.communicate(timeout=30)
        return float(out.strip())
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


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
    from shoal.lab.spec import Naming, format_rate, parse_rate

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
        nodes = lab.nodes()
        measured = measure_rate(
            lab.netns_of("n1"), lab.netns_of("n2"), nodes[1].host or "", args.seconds
        )
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
