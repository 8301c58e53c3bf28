"""Benchmark central log collection: compression, throughput per core, nothing lost or twice.

    .venv/bin/python bench/logs.py [--mb 32] [--nodes 8] [--seconds 20] [--rate 10000] [--no-lab]

1. Compression ratio on generated service logs (access lines and JSON-ish app
   lines: timestamps, a few hundred paths, user agents, latencies): ours is
   gzip -6 of each range the node sends (1 MiB, one gzip stream each, as
   ``logs.read`` does) against the peer, ``gzip -6`` of the whole file.
   Goal: >= 10x.
2. With a namespace lab (root): a program on every node writes
   sequence-numbered lines at ``--rate`` lines/s into 64 KiB logs (a rotation
   about every 0.1 s); ``shoal logs collect --free`` runs in a loop as a
   subprocess; one run is SIGKILLed mid-collect, one node's link is cut
   mid-collect, another node is killed (every process) mid-collect and revived.
   After the writers stop and a last collect, every line of every writer's run
   (``run=<start time>``: a killed node's writer starts again) must be in the
   store exactly once, sequences contiguous from 0. Throughput = bytes
   collected / CPU seconds of the collect processes (user + system).
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
RANGE = 1 << 20

WRITER = """
import sys, time
rate = int(sys.argv[1])
run = time.time_ns()
t0 = time.time()
i = 0
while True:
    sys.stdout.write(f"run={run} seq={i:09d} 2026-12-01T12:00:00Z INFO GET /api/v1/items 200\\n")
    i += 1
    if i % 100 == 0:
        sys.stdout.flush()
        time.sleep(max(0.0, t0 + i / rate - time.time()))
"""
LINE = re.compile(rb"^run=(\d+) seq=(\d{9}) .* 200$")


def service_log(size: int, *, traced: bool = False, seed: int = 7) -> bytes:
    """Generated service logs, each line with its time and a host/service prefix (as
    shippers' structured lines have): access lines (recurring clients, a size per
    resource) and app lines, timestamps ascending; ``traced`` adds a random 64-bit trace id to every
    app line (the high-entropy case)."""
    rng = random.Random(seed)
    paths = [
        f"/api/v{v}/{r}/{i}"
        for v in (1, 2)
        for r in ("items", "users", "orders")
        for i in range(60)
    ]
    sizes = {p: rng.randint(200, 20000) for p in paths}
    clients = [
        f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(300)
    ]
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        "curl/8.4.0",
        "python-requests/2.31.0",
        "Go-http-client/1.1",
    ]
    levels = ["INFO"] * 12 + ["WARN", "DEBUG", "ERROR"]
    t = 1_764_590_400.0
    out: list[str] = []
    total = 0
    while total < size:
        t += rng.expovariate(200.0)
        ms = int(t * 1000) % 1000
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"
        if rng.random() < 0.7:
            ip = clients[min(int(rng.paretovariate(1.2)) - 1, len(clients) - 1)]
            path = rng.choice(paths)
            status = rng.choice([200] * 20 + [201, 204, 301, 404, 500])
            line = (
                f"{stamp} host=web-03 service=checkout-api access "
                f'{ip} - - [{stamp}] "GET {path} HTTP/1.1" {status} {sizes[path]} "-" '
                f'"{rng.choice(agents)}" rt={rng.random() * 0.3:.3f}\n'
            )
        else:
            level = rng.choice(levels)
            trace = f',"trace":"{rng.getrandbits(64):016x}"' if traced else ""
            line = (
                f"{stamp} host=web-03 service=checkout-api {level} worker-{rng.randint(1, 16)} "
                f'{{"event":"request_done","user_id":{rng.randint(1, 500)},'
                f'"duration_ms":{rng.randint(1, 900)},"cache":"{rng.choice(["hit", "miss"])}"'
                f"{trace}}}\n"
            )
        out.append(line)
        total += len(line)
    return "".join(out).encode()


def compression(mb: int) -> None:
    print(f"1. compression of {mb} MiB of generated service logs")
    for traced in (False, True):
        data = service_log(mb << 20, traced=traced)
        t0 = time.process_time()
        ours = sum(
            len(gzip.compress(data[i : i + RANGE], 6, mtime=0)) for i in range(0, len(data), RANGE)
        )
        cpu = time.process_time() - t0
        peer = subprocess.run(["gzip", "-6", "-c"], input=data, capture_output=True, check=True)
        kind = "a random trace id on every app line" if traced else "typical"
        print(f"   {kind}:")
        print(
            f"     ours (gzip -6 per 1 MiB range, on the node): {len(data) / ours:5.1f}x"
            f"  ({len(data) / cpu / 1e6:.0f} MB/s per core to compress)"
        )
        whole = len(data) / len(peer.stdout)
        print(f"     peer (gzip -6, whole file):                  {whole:5.1f}x")
        print(f"     ratio ours/peer: {len(peer.stdout) / ours:.2f}  (goal: ours >= 10x)")


def _collect(
    names: str, env: dict[str, str], kill_after: float | None = None
) -> tuple[int, float, int]:
    """One ``shoal logs collect --free`` process: bytes it stored, CPU seconds, exit status."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [*SHOAL, "logs", "collect", "-s", names, "--free", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    raw = 0
    for line in out.decode(errors="replace").splitlines():
        try:
            raw += int(json.loads(line).get("bytes", 0))
        except (ValueError, AttributeError):
            pass
    return raw, cpu, proc.returncode


def chaos(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents
    from shoal.lab import Lab, LabSpec
    from shoal.ops import logcollect
    from shoal.state import State

    base = Path(tempfile.mkdtemp(prefix="shoal-bench-logs-"))
    os.environ["SHOAL_HOME"] = str(base / "home")
    env = dict(os.environ)
    lab = Lab.up(LabSpec(n=args.nodes, name=f"bl{secrets.token_hex(2)}"))
    bad = 0
    try:
        nodes = lab.nodes()
        names = ",".join(n.name for n in nodes)
        opts = agents.AgentOptions()
        assert asyncio.run(agents.install_async(nodes, opts)).ok
        spec = agents.proc_spec(
            "bw",
            ["python3", "-c", WRITER, str(args.rate)],
            log_max_bytes=64 << 10,
            log_backups=1,
            log_budget_bytes=512 << 20,
        )
        assert asyncio.run(agents.proc_start_async(nodes, spec, opts)).ok
        total_raw, total_cpu, rounds = 0, 0.0, 0
        end = time.monotonic() + args.seconds
        events = []
        started = time.monotonic()
        while time.monotonic() < end or rounds < 4:
            rounds += 1
            if rounds == 2:  # the controller SIGKILLed mid-collect
                raw, cpu, _ = _collect(names, env, kill_after=0.8)
                events.append("controller SIGKILLed")
            elif rounds == 3:  # a link cut mid-collect
                lab_timer = _later(0.4, lambda: lab.cut(nodes[0].name))
                raw, cpu, _ = _collect(names, env)
                lab_timer.join()
                lab.heal(nodes[0].name)
                events.append(f"{nodes[0].name} cut")
            elif rounds == 4:  # a node killed mid-collect, then revived
                lab_timer = _later(0.4, lambda: lab.kill(nodes[1].name))
                raw, cpu, _ = _collect(names, env)
                lab_timer.join()
                lab.revive(nodes[1].name)
                asyncio.run(agents.start_async(nodes[1:2], opts))
                events.append(f"{nodes[1].name} killed")
            else:
                raw, cpu, _ = _collect(names, env)
            total_raw += raw
            total_cpu += cpu
            time.sleep(0.5)
        asyncio.run(agents.call_async(nodes, "proc.stop", {"name": "bw"}, opts))
        wrote = time.monotonic() - started
        for _ in range(2):
            raw, cpu, code = _collect(names, env)
            total_raw += raw
            total_cpu += cpu
        print(
            f"2. {args.nodes} nodes x {args.rate} lines/s for {args.seconds} s, "
            f"64 KiB logs; {rounds} collects ({', '.join(events)}), last exit {code}"
        )
        lines = dups = gaps = 0
        with State(base / "home" / "state.db") as state:
            for node in nodes:
                runs: dict[bytes, list[int]] = defaultdict(list)
                for line in logcollect.lines(state, node.name, "bw"):
                    m = LINE.match(line)
                    if m:
                        runs[m.group(1)].append(int(m.group(2)))
                for run, seqs in runs.items():
                    lines += len(seqs)
                    dups += len(seqs) - len(set(seqs))
                    gaps += max(seqs) + 1 - len(set(seqs))
                    if seqs != list(range(len(seqs))):
                        bad += 1
                        print(
                            f"   {node.name} run {run.decode()}: {len(seqs)} lines, not 0..n once"
                        )
        print(f"   store: {lines} lines, {dups} twice, {gaps} missing, {bad} run(s) out of order")
        print(
            f"   writers ran {wrote:.0f} s: {lines / wrote / args.nodes:.0f} lines/s a node stored"
        )
        if total_cpu:
            print(
                f"   collection throughput: {total_raw / total_cpu / 1e6:.1f} MB of log per "
                f"controller CPU second ({total_raw >> 20} MiB in {total_cpu:.1f} CPU s)"
            )
    finally:
        lab.down()
    return 1 if bad else 0


def _later(delay: float, action: Any) -> Any:
    import threading

    thread = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=32, help="MiB of generated logs to compress")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the writers write")
    parser.add_argument("--rate", type=int, default=10_000, help="lines/s per node")
    parser.add_argument("--no-lab", action="store_true", help="compression only")
    args = parser.parse_args()
    compression(args.mb)
    if args.no_lab:
        return 0
    return chaos(args)


if __name__ == "__main__":
    raise SystemExit(main())
