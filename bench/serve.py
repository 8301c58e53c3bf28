"""The standing controller's figures (issue 13), on one lab, in one run, ratios printed.

    .venv/bin/python -m bench.serve [--nodes 32] [--rounds 7] [--kills 10]
                                       [--loss-minutes 0] [--restart] [--big 0]

1. A warm ``shoal run true`` on every node, the whole CLI process timed (it goes
   through the running service: cli/fastpath) against the cold peers in the same
   lab: a parallel ssh loop with the lab's ssh_config and pssh (if installed); the
   load average printed beside. Target <= 0.1x the fastest peer.
2. How a warm run reaches the node: an SSH session channel on the held connection
   against the agent's ``exec`` on the watched stream (in-process, the links alone).
3. Kill detection: ``shoal lab kill`` of one node at a time; the time from the kill to
   the service's ``node_down`` event (median, max). Target <= 3 s.
4. ``--loss-minutes M``: 5 % loss on every link for M minutes; false ``node_down``
   events counted (target 0).
5. Service RSS and idle CPU with every node attached (targets 300 MB, 3 % of a core);
   ``--restart``: SIGKILL the service, start it again, time until all links are up
   (target <= 10 s).

``--big N`` runs 1, 5 again on a second lab of N nodes (``shoal lab up 250``: slow).
``--lab NAME`` runs figure 1 alone on a lab that is up (and leaves it up); with
``--before REF`` a service of that commit and one of this tree take turns. The runs
of figure 1 are taken in turn (warm, direct, each peer; round by round).
Everything shares this machine's two cores: the service, every node's sshd and agent,
and the peers; that is the bound of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.client import ServiceClient
from shoal.control.journal import Journal
from shoal.control.links import LinkConfig, Links
from shoal.fanout.commands import run_async
from shoal.lab import Lab, LabSpec
from shoal.lab.labspec import ShapeChange
from shoal.nodes.inventory import import_nodes
from shoal.state import State

SERVE = (
    "import os, pathlib; from shoal.control.controller import ServiceConfig; "
    "from shoal.service.servedaemon import serve; "
    "serve(ServiceConfig(pathlib.Path(os.environ['SHOAL_HOME'])))"
)
SHOAL = str(Path(sys.executable).with_name("shoal"))


class Service:
    """``shoal serve`` as a subprocess over ``home``; stopped by :meth:`stop`."""

    def __init__(self, home: Path, pythonpath: Path | None = None) -> None:
        self.home = home
        self.env = {**os.environ, "SHOAL_HOME": str(home)}
        if pythonpath is not None:  # another checkout's src (bench/serve_idle: before/after)
            self.env["PYTHONPATH"] = str(pythonpath)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceClient:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE], env=self.env)
        deadline = time.monotonic() + 30
        while (client := ServiceClient.locate(self.home)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not start")
            time.sleep(0.02)
        return client

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_rss(self) -> tuple[float, float]:
        """(CPU seconds so far, RSS in MB) of the service process."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / tick
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return cpu, rss


def links_up(client: ServiceClient) -> int:
    return int(client.status()["nodes"].get("links", {}).get("up", 0))


def wait_up(client: ServiceClient, n: int, timeout: float = 120) -> float:
    start = time.monotonic()
    while links_up(client) < n:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"only {links_up(client)} of {n} links up after {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - start


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    quiet = subprocess.DEVNULL
    subprocess.run(argv, check=True, env=env, stdout=quiet, stderr=quiet, stdin=quiet)
    return time.perf_counter() - t0


def median_of(fn: Callable[[], float], rounds: int) -> tuple[float, float]:
    fn()  # warm-up
    times = [fn() for _ in range(rounds)]
    return statistics.median(times), min(times)


def alternated(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, tuple[float, float]]:
    """(median, min) of each, the runs taken in turn round by round (after one warm-up
    each), so a load drift of the shared machine hits them alike."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def warm_vs_cold(lab: Lab, svc: Service, rounds: int) -> tuple[float, float]:
    """Figure 1 printed; (warm median, the fastest cold peer's median)."""
    n = len(lab.nodes())
    names = [node.name for node in lab.nodes()]
    cfg = str(lab.ssh_config)
    loop = 'rc=0; for n; do ssh -F "$0" "$n" true & p+=($!); done'
    loop += '; for q in "${p[@]}"; do wait "$q" || rc=1; done; exit $rc'
    peers = {"ssh-loop": ["bash", "-c", loop, cfg, *names]}
    if subprocess.run(["which", "parallel-ssh"], capture_output=True).returncode == 0:
        hosts = svc.home / "hosts"
        hosts.write_text("\n".join(names) + "\n")
        peers["pssh"] = ["parallel-ssh", "-h", str(hosts), "-p", str(n), "-x", f"-F {cfg}", "true"]
    warm_argv = [SHOAL, "run", "--no-progress", "true"]  # through the service: SHOAL_HOME
    direct_env = {**svc.env, "SHOAL_NO_SERVICE": "1"}  # the same CLI, direct SSH
    runs: dict[str, Callable[[], float]] = {
        "warm": lambda: timed(warm_argv, svc.env),
        "direct": lambda: timed(warm_argv, direct_env),
        **{name: functools.partial(timed, argv) for name, argv in peers.items()},
    }
    load_before = os.getloadavg()[0]
    got = alternated(runs, rounds)
    load = (load_before + os.getloadavg()[0]) / 2
    warm, direct = got.pop("warm"), got.pop("direct")
    cold = got
    best = min(cold, key=lambda k: cold[k][0])
    print(f"\nrun true on {n} nodes (median / min of {rounds}, whole process; load {load:.1f})")
    print(f"  shoal (service) {warm[0]:.3f} s / {warm[1]:.3f} s")
    print(f"  shoal (direct)  {direct[0]:.3f} s / {direct[1]:.3f} s  (SHOAL_NO_SERVICE=1)")
    for name, (med, low) in cold.items():
        print(f"  {name:<14}  {med:.3f} s / {low:.3f} s")
    print(f"  ratio warm / {best}: {warm[0] / cold[best][0]:.3f}x (target <= 0.1x)")
    return warm[0], cold[best][0]


def busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (every core, every process: nodes too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_paths(lab: Lab, rounds: int) -> None:
    """A warm run over an SSH session channel against the agent's exec (links alone):
    both sets of links up at once, runs alternated so load drifts hit both alike."""

    async def go() -> dict[str, tuple[float, float]]:
        samples: dict[str, list[tuple[float, float]]] = {"ssh": [], "agent": []}
        with State() as state:
            sets = {
                via: Links(lab.nodes(), state=state, journal=Journal(state),
                           config=LinkConfig(run_via=via))
                for via in samples
            }  # fmt: skip
            for links in sets.values():
                await links.start()
            try:
                for links in sets.values():
                    assert await links.wait_up(timeout=120)
                for r in range(2 * (rounds + 1)):
                    via = ("ssh", "agent")[r % 2]
                    t0, c0 = time.perf_counter(), busy_seconds()
                    res = await run_async(lab.nodes(), "true", transport=sets[via].transport)
                    sample = (time.perf_counter() - t0, busy_seconds() - c0)
                    assert res.ok, [x.reason for x in res.failed]
                    if r >= 2:
                        samples[via].append(sample)
            finally:
                for links in sets.values():
                    await links.stop()
        return {
            via: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
            for via, got in samples.items()
        }

    got = asyncio.run(go())
    print(f"\nwarm run true on {len(lab.nodes())} nodes, in-process, alternated "
          f"(median of {rounds}: wall, machine CPU)")  # fmt: skip
    for via, label in (("ssh", "ssh session channel"), ("agent", "agent exec         ")):
        print(f"  {label}  {got[via][0] * 1000:6.1f} ms  {got[via][1]:.3f} core-s")
    print(f"  ratio agent / ssh: wall {got['agent'][0] / got['ssh'][0]:.2f}x, "
          f"CPU {got['agent'][1] / got['ssh'][1]:.2f}x")  # fmt: skip


def node_down_after(client: ServiceClient, node: str, after: int) -> dict[str, Any] | None:
    for e in client.events(after, node=node):
        if e.get("kind") == "node_down":
            return e
    return None


def kills(lab: Lab, client: ServiceClient, count: int) -> None:
    nodes = lab.nodes()
    took = []
    for i in range(count):
        victim = nodes[(i * 3 + 1) % len(nodes)].name
        wait_up(client, len(nodes))  # every link up (the last phase may have left one not)
        after = int(client.status()["events"]["last"])
        t0 = time.time()
        lab.kill(victim)
        try:
            deadline = time.monotonic() + 15
            while (event := node_down_after(client, victim, after)) is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{victim} not marked down within 15 s")
                time.sleep(0.02)
            took.append(float(event.get("stored") or event["time"]) - t0)
        finally:
            lab.revive(victim)
        wait_up(client, len(nodes))
    print(f"\nkill detection over {count} kills: median {statistics.median(took):.2f} s, "
          f"max {max(took):.2f} s (target <= 3 s)")  # fmt: skip


def lossy(lab: Lab, client: ServiceClient, minutes: float) -> None:
    after = int(client.status()["events"]["last"])
    lab.shape("all", ShapeChange(loss_bp=500))
    try:
        time.sleep(minutes * 60)
    finally:
        lab.shape("all", ShapeChange(loss_bp=0))
    events = client.events(after)
    downs = [e for e in events if e.get("kind") == "node_down"]
    suspects = [e for e in events if e.get("kind") == "node_suspect"]
    print(f"\n5 % loss on every link for {minutes:g} min: {len(downs)} false node_down "
          f"(target 0), {len(suspects)} node_suspect")  # fmt: skip


def idle(svc: Service, seconds: float = 30.0) -> None:
    cpu0, _ = svc.cpu_rss()
    time.sleep(seconds)
    cpu1, rss = svc.cpu_rss()
    print(f"\nservice idle: {(cpu1 - cpu0) / seconds * 100:.1f} % of one core over {seconds:g} s "
          f"(target <= 3 %), RSS {rss:.0f} MB (target <= 300 MB)")  # fmt: skip


def restart(svc: Service, n: int) -> ServiceClient:
    svc.kill9()
    t0 = time.monotonic()
    client = svc.start()
    wait_up(client, n)
    print(
        f"\nSIGKILL and restart: all {n} links up again in {time.monotonic() - t0:.2f} s "
        "(target <= 10 s)"
    )
    return client


def one_lab(n: int, args: argparse.Namespace, first: bool) -> None:
    lab = Lab.up(LabSpec(n=n, name=f"bs{os.getpid() % 10000}{'a' if first else 'b'}"))
    svc = Service(Path(os.environ["SHOAL_HOME"]) / f"svc{n}")
    try:
        svc.home.mkdir(mode=0o700)
        with State(svc.home / "state.db") as st:
            import_nodes(lab.nodes(), state=st)
        client = svc.start()
        print(f"\n{n} nodes attached in {wait_up(client, n):.2f} s (agents installed)")
        client = restart(svc, n) if args.restart or not first else client
        warm_vs_cold(lab, svc, args.rounds)
        idle(svc)
        if first:
            if args.kills:
                kills(lab, client, args.kills)
            if args.loss_minutes:
                lossy(lab, client, args.loss_minutes)
    finally:
        svc.stop()
        lab.down()
    if first:
        paths_lab = Lab.up(LabSpec(n=n, name=f"bs{os.getpid() % 10000}c"))
        try:
            run_paths(paths_lab, args.rounds)
        finally:
            paths_lab.down()


def warm_only(lab: Lab, args: argparse.Namespace) -> None:
    """Figure 1 alone on a lab that is up (``--lab``: left up), a service of this tree;
    ``--before REF``: and one of that commit, the two services taking turns (each start
    upgrades the agents to its build), ``--services`` times each."""
    from bench.serve_idle import export  # it imports this module

    variants: dict[str, Path | None] = {"this tree": None}
    root = Path(os.environ["SHOAL_HOME"])
    if args.before:
        variants = {f"before ({args.before})": export(args.before, root), **variants}
    got: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    for turn in range(args.services if args.before else 1):
        for i, (label, src) in enumerate(variants.items()):
            svc = Service(root / f"svc{i}", src)
            try:
                if turn == 0:
                    svc.home.mkdir(mode=0o700)
                    with State(svc.home / "state.db") as st:
                        import_nodes(lab.nodes(), state=st)
                client = svc.start()
                took = wait_up(client, len(lab.nodes()), timeout=300)
                print(f"\n{label}: {len(lab.nodes())} nodes attached in {took:.2f} s")
                got[label].append(warm_vs_cold(lab, svc, args.rounds))
            finally:
                svc.stop()
    if args.before:
        print(f"\nwarm run true on {len(lab.nodes())} nodes, services alternated "
              f"{args.services} times (median of the medians)")  # fmt: skip
        for label, rows in got.items():
            warm = statistics.median(w for w, _ in rows)
            ratio = statistics.median(w / c for w, c in rows)
            print(f"  {label:<22} {warm:.3f} s, {ratio:.3f}x the fastest cold peer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--loss-minutes", type=float, default=0.0)
    parser.add_argument("--restart", action="store_true")
    parser.add_argument("--big", type=int, default=0)
    parser.add_argument("--lab", metavar="NAME", help="figure 1 alone, on this lab (left up)")
    parser.add_argument("--before", metavar="REF", help="with --lab: also this commit's service")
    parser.add_argument("--services", type=int, default=2, help="with --before: turns each")
    args = parser.parse_args()
    existing = Lab.open(args.lab) if args.lab else None  # before SHOAL_HOME moves the labs
    with tempfile.TemporaryDirectory(prefix="shoal-bench-serve-") as home:
        os.environ["SHOAL_HOME"] = home
        if existing is not None:
            warm_only(existing, args)
            return 0
        one_lab(args.nodes, args, True)
        if args.big:
            one_lab(args.big, args, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
