"""Benchmark ``shoal push`` against parallel scp, an ssh|tee chain, rsync and tar|ssh.

Usage (root; brings up its own namespace lab and always takes it down)::

    .venv/bin/python bench/push.py [--nodes 16] [--rate 100mbit] [--size 200]
        [--inc-size 500] [--inc-places 40] [--small 10000] [--parts big,inc,small]
        [--skip-scp]

Every link, the controller's (the source's) included, is shaped to ``--rate``.

* **big**: ``--size`` MB of random bytes to every node. Prints wall time over
  the bound S/B (the time the source alone needs to send S once), the slowest
  node's time over S/B, and the source's egress (bytes on the controller's
  veth, SSH included) over S, for a push over TLS (the default) and one with
  ``--plain-data``; then ``shoal cp`` (parallel SFTP from the source) and a
  pipelined ``ssh n1 'tee f | ssh n2 ...'`` chain (encrypted, like the TLS
  push), same run; each push's wall time is printed over the chain's.
* **inc**: a tree of ``--inc-size`` MB in 1 MB files is pushed, then 1 % of
  its bytes is overwritten in ``--inc-places`` scattered places and pushed
  again: bytes received per node as a share of the tree, and time, against
  ``rsync -a`` fanned out from the source to a copy of the first version on
  every node (same mtimes, so rsync only checks the changed files).
* **small**: ``--small`` files of 4 KB (text) pushed without and with ``-a``,
  against ``tar c | ssh 'tar x'`` to every node in parallel.

Pushes here skip fsync (``durable=False``) like the tools they are compared
with. The machine's load average is printed: on a shared 2-core host the
figures move with it.
"""

from __future__ import annotations

import os
import sys

# bench/ holds scripts named like stdlib modules (select.py): keep it off sys.path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import random
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHOAL = str(ROOT / ".venv" / "bin" / "shoal")


#: One hop of the ssh|tee chain: keep a copy, pass the stream to the next node.
RELAY = """mkdir -p bench; out=$1; shift
if [ $# -eq 0 ]; then cat > "$out"; exit; fi
next=$1; shift
tee "$out" | ssh -F /root/.benchssh/ssh_config "$next" sh .benchssh/relay.sh "$out" "$@"
"""


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from shoal.lab import Lab, LabSpec
        from shoal.lab.labspec import Naming, Shaping, parse_rate

        self.args = args
        self.work = work
        self.rate_bps = parse_rate(args.rate)
        shaping = Shaping(rate_bps=self.rate_bps)
        name = f"bp{secrets.token_hex(2)}"
        self.lab = Lab.up(LabSpec(n=args.nodes, name=name, shaping=shaping, controller=shaping))
        self.nodes = self.lab.nodes()
        self.link = Naming(name).root_link
        self.cfg = str(self.lab.ssh_config)

    def node_ssh(self) -> None:
        """Give every node the lab's client key and config, for the ssh|tee chain."""
        labdir = str(self.lab.dir)
        kit = self.work / "kit"
        kit.mkdir()
        text = self.lab.ssh_config.read_text().replace(labdir, "/root/.benchssh")
        (kit / "ssh_config").write_text(text)
        for item in (self.lab.identity, self.lab.known_hosts):
            shutil.copy(item, kit / item.name)
        (kit / self.lab.identity.name).chmod(0o600)
        (kit / "relay.sh").write_text(RELAY)
        subprocess.run(
            [SHOAL, "cp", "--no-progress", *map(str, kit.iterdir()), "@:.benchssh/"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self.lab.down()

    def tx(self) -> int:
        return int(Path(f"/sys/class/net/{self.link}/statistics/tx_bytes").read_text())

    def bound(self, size: int) -> float:
        return size * 8 / self.rate_bps

    def push(self, src: Path, remote: str, **kw: Any) -> tuple[Any, float, int]:
        from shoal.content.push import PushOptions, push_async

        opts = PushOptions(durable=False, install=False, **kw)
        timeline = Timeline(self) if self.args.timeline else None
        before = self.tx()
        began = time.monotonic()
        result = asyncio.run(
            push_async(
                self.nodes,
                src,
                remote,
                opts,
                on_progress=timeline.progress if timeline else None,
            )
        )
        wall = time.monotonic() - began
        if not result.ok:
            print("  push failures:", [(n.node, n.reason) for n in result.failed])
        if timeline is not None:
            timeline.report(began)
        return result, wall, self.tx() - before

    def shell(self, command: str, timeout: float = 3600) -> float:
        began = time.monotonic()
        subprocess.run(command, shell=True, check=True, timeout=timeout)
        return time.monotonic() - began

    def on_nodes(self, command: str) -> None:
        subprocess.run(
            [SHOAL, "run", "--no-progress", "-t", "600", command],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def ssh(self, node: str, command: str, cfg: str | None = None) -> str:
        return f"ssh -F {shlex.quote(cfg or self.cfg)} {node} {shlex.quote(command)}"

    def fan(self, commands: list[str]) -> float:
        """Start every command at once; wall time until the last one ends."""
        began = time.monotonic()
        procs = [subprocess.Popen(c, shell=True, stdout=subprocess.PIPE) for c in commands]
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"command failed ({p.returncode})")
            outs.append(out.decode(errors="replace"))
        self.fan_output = outs
        return time.monotonic() - began

    # -- parts ---------------------------------------------------------------------

    def big(self) -> None:
        size = self.args.size * 1_000_000
        src = self.work / "big"
        src.mkdir()
        with open(src / "data.bin", "wb") as out:
            for _ in range(size // 1_000_000):
                out.write(os.urandom(1_000_000))
        s_b = self.bound(size)
        n = len(self.nodes)
        print(
            f"\n== big: {size / 1e6:.0f} MB to {n} nodes at {self.args.rate}; "
            f"S/B = {s_b:.1f} s (load {load()})"
        )
        walls: dict[str, float] = {}
        kinds = (
            (("push TLS", False),)
            if self.args.skip_plain
            else (("push TLS", False), ("push plain", True))
        )
        for label, plain in kinds:
            remote = "bench/big-plain" if plain else "bench/big"
            result, wall, egress = self.push(src, remote, plain_data=plain)
            walls[label] = wall
            slowest = max(x.duration for x in result)
            print(
                f"{label:<11} wall {wall:6.1f} s = {wall / s_b:.2f} x S/B   slowest node "
                f"{slowest:.1f} s = {slowest / s_b:.2f} x S/B   source egress "
                f"{egress / size:.3f} x S (chunk server alone {result.source_sent / size:.3f}"
                f" x S)   load {load()}"
            )
            self.on_nodes(f"rm -rf {remote} bench/.{remote.split('/')[-1]}.shoal")
        if not self.args.skip_scp:
            before = self.tx()
            t = self.shell(f"{SHOAL} cp --no-progress {src}/data.bin @:bench/scp/")
            print(
                f"shoal cp    wall {t:6.1f} s = {t / s_b:.2f} x S/B   source egress "
                f"{(self.tx() - before) / size:.3f} x S"
            )
        if self.args.skip_chain:
            return
        names = [x.name for x in self.nodes]
        chain = " ".join(["sh .benchssh/relay.sh bench/chain.bin", *names[1:]])
        before = self.tx()
        t = self.shell(f"{self.ssh(names[0], chain)} < {src}/data.bin")
        print(
            f"ssh|tee     wall {t:6.1f} s = {t / s_b:.2f} x S/B   source egress "
            f"{(self.tx() - before) / size:.3f} x S   (a chain of {n})   load {load()}"
        )
        for label, pushed in walls.items():
            print(f"{label} / ssh|tee = {pushed / t:.2f}")
        if "push plain" in walls:
            print(
                f"TLS cost: push TLS / push plain = {walls['push TLS'] / walls['push plain']:.2f}"
            )
        self.on_nodes("rm -rf bench/scp bench/chain.bin")

    def inc(self) -> None:
        files = self.args.inc_size
        src = self.work / "inc"
        (src / "d").mkdir(parents=True)
        for i in range(files):
            path = src / "d" / f"f{i:05d}.bin"
            path.write_bytes(os.urandom(1_000_000))
            os.utime(path, (1_600_000_000, 1_600_000_000))
        total = files * 1_000_000
        print(
            f"\n== incremental: {total / 1e6:.0f} MB in {files} files, 1% changed in "
            f"{self.args.inc_places} places (load {load()})"
        )
        _, wall, egress = self.push(src, "bench/inc")
        print(
            f"first push  wall {wall:6.1f} s = {wall / self.bound(total):.2f} x S/B   "
            f"source egress {egress / total:.3f} x S"
        )
        self.on_nodes(
            "rm -rf bench/rsync && cp -a bench/inc/. bench/rsync && "
            "find bench/rsync -type f -exec touch -m -d @1600000000 {} +"
        )
        rng = random.Random(7)
        piece = total // 100 // self.args.inc_places
        for _ in range(self.args.inc_places):
            path = src / "d" / f"f{rng.randrange(files):05d}.bin"
            with open(path, "r+b") as handle:
                handle.seek(rng.randrange(1_000_000 - piece))
                handle.write(os.urandom(piece))
        result, wall, egress = self.push(src, "bench/inc")
        shares = [x.received / total for x in result]
        print(
            f"shoal push  wall {wall:6.1f} s   received per node: max {max(shares):.2%} "
            f"mean {sum(shares) / len(shares):.2%} of the tree   source egress "
            f"{egress / total:.2%} of the tree"
        )
        before = self.tx()
        t = self.fan(
            [
                f"rsync -a --stats -e 'ssh -F {self.cfg}' {src}/ {x.name}:bench/rsync/"
                for x in self.nodes
            ]
        )
        sent = [
            int(m.group(1).replace(",", ""))
            for out in self.fan_output
            for m in re.finditer(r"Total bytes sent: ([\d,]+)", out)
        ]
        print(
            f"rsync fan   wall {t:6.1f} s   sent per node: max {max(sent) / total:.2%} "
            f"of the tree   source egress {(self.tx() - before) / total:.2%} of the tree"
        )
        self.on_nodes("rm -rf bench/rsync")

    def small(self) -> None:
        count = self.args.small
        src = self.work / "small"
        rng = random.Random(3)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randrange(2, 10)))
            for _ in range(2000)
        ]
        for i in range(count):
            folder = src / f"d{i // 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            text = " ".join(rng.choice(words) for _ in range(900)).encode()[:4096]
            (folder / f"f{i:05d}.txt").write_bytes(text)
        total = count * 4096
        print(f"\n== small files: {count} x 4 KB = {total / 1e6:.0f} MB (load {load()})")
        for pack in (False, True):
            result, wall, egress = self.push(src, f"bench/small{int(pack)}", pack=pack)
            label = "push -a    " if pack else "push       "
            print(
                f"{label} wall {wall:6.1f} s = {wall / self.bound(total):.2f} x S/B   source "
                f"egress {egress / total:.3f} x S   received/node "
                f"{max(x.received for x in result) / total:.3f} x S"
            )
        before = self.tx()
        untar = "mkdir -p bench/tar && tar -C bench/tar -xf -"
        t = self.fan([f"tar -C {src} -cf - . | {self.ssh(x.name, untar)}" for x in self.nodes])
        print(
            f"tar|ssh fan wall {t:6.1f} s = {t / self.bound(total):.2f} x S/B   source egress "
            f"{(self.tx() - before) / total:.3f} x S"
        )


class Timeline:
    """Where a push's time goes (``--timeline``): the source's egress second by second
    (MB/s on the controller's veth, against the link's rate) and when each node got
    its first byte and finished, sampled from the push's progress callback."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.samples: list[tuple[float, int, int]] = []  # (time, source tx, bytes received)
        self.first: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def progress(self, p: Any) -> None:
        now = time.monotonic()
        self.samples.append((now, self.bench.tx(), p.received))
        for name, st in p.nodes.items():
            if st.received and name not in self.first:
                self.first[name] = now
            if st.state in ("done", "failed") and name not in self.done:
                self.done[name] = now

    def report(self, began: float) -> None:
        if not self.samples:
            return
        line = self.bench.rate_bps / 8
        per_s: list[str] = []
        got: list[str] = []
        t0, tx0, rx0 = began, self.samples[0][1], 0
        for t, tx, rx in self.samples:
            if t - t0 >= 1.0:
                per_s.append(f"{(tx - tx0) / (t - t0) / line:.2f}")
                got.append(f"{(rx - rx0) / (t - t0) / line:.1f}")
                t0, tx0, rx0 = t, tx, rx
        print("  source egress per s (x link):", " ".join(per_s))
        print("  received per s, all nodes (x link):", " ".join(got))
        firsts = sorted(t - began for t in self.first.values())
        dones = sorted(t - began for t in self.done.values())
        if firsts:
            print(f"  first byte: {firsts[0]:.1f}..{firsts[-1]:.1f} s", end="")
        if dones:
            print(
                f"   done: {dones[0]:.1f}..{dones[-1]:.1f} s (median {dones[len(dones) // 2]:.1f})"
            )
        else:
            print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--rate", default="100mbit")
    parser.add_argument("--size", type=int, default=200, help="MB for the big push")
    parser.add_argument("--inc-size", type=int, default=500, help="MB (1 MB files)")
    parser.add_argument("--inc-places", type=int, default=40, help="scattered edits")
    parser.add_argument("--small", type=int, default=10000, help="number of 4 KB files")
    parser.add_argument("--parts", default="big,inc,small")
    parser.add_argument("--skip-scp", action="store_true", help="skip shoal cp (16x S/B)")
    parser.add_argument(
        "--timeline", action="store_true", help="per-second source egress, node start/finish"
    )
    parser.add_argument("--skip-plain", action="store_true", help="the TLS push only")
    parser.add_argument("--skip-chain", action="store_true", help="no ssh|tee chain")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/push.py needs root (a namespace lab)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    base = Path(tempfile.mkdtemp(prefix="shoal-bench-push-", dir="/var/tmp"))
    os.environ["SHOAL_HOME"] = str(base / "home")
    from shoal.agentlink.fleet import AgentOptions, install_async

    bench = Bench(args, base)
    try:
        # over a slow source link 100 agent copies share it: a few installs may break
        todo = bench.nodes
        for _ in range(3):
            installed = asyncio.run(install_async(todo, AgentOptions()))
            todo = [n for n in todo if not installed[n.name].ok]
            if not todo:
                break
        assert not todo, [(r.node, r.reason) for r in installed.failed]
        if not args.skip_chain:
            bench.node_ssh()
        for part in args.parts.split(","):
            getattr(bench, part)()
    finally:
        bench.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
