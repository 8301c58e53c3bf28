"""Benchmark the node agent: restart latency, footprint, and proc status vs run true.

    .venv/bin/python bench/agent.py [--restarts 20] [--idle 10] [--lab-nodes 32] [--no-lab]

1. First restart after SIGKILL: a supervised ``sleep`` is killed with SIGKILL
   and the time to the replacement's ``started`` event (same clock) is taken,
   ``--restarts`` times. Goal: under 1 s.
2. Footprint: agent RSS (VmRSS, all threads) with 5 idle programs, and its CPU
   time over ``--idle`` seconds (utime + stime from /proc). Goal: <= 30 MB, ~0.
3. With a namespace lab of ``--lab-nodes`` nodes (root): the wall time of the
   CLI ``shoal proc status`` with agents running, against ``shoal run true``,
   both cold (a new process each time), median of 5; prints the ratio.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from shoal.agent.build import write  # noqa: E402


class Client:
    def __init__(self, home: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(home / "agent.sock"))
        self.file = self.sock.makefile("rb")
        self.n = 0

    def call(self, op: str, **args: Any) -> Any:
        self.n += 1
        self.sock.sendall(
            json.dumps({"v": 1, "id": self.n, "op": op, "args": args}).encode() + b"\n"
        )
        reply = json.loads(self.file.readline())
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["result"]


def start_agent(zipapp: Path, home: Path) -> int:
    out = subprocess.run(
        [sys.executable, str(zipapp), "serve", "--home", str(home)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout.split("pid ")[1].rstrip(")\n"))


def restart_latency(client: Client, rounds: int) -> list[float]:
    client.call("proc.start", spec={"name": "victim", "command": ["sleep", "100000"]})
    latencies = []
    for _ in range(rounds):
        time.sleep(0.3)
        status = client.call("proc.status", name="victim")[0]
        pid = status["pid"]
        seq = client.call("hello")["last_event"]
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            time.sleep(0.01)
            for event in client.call("events", since=seq)["events"]:
                if event["kind"] == "started" and event["program"] == "victim":
                    found = event["time"]
        if found is None:
            raise RuntimeError("program was not restarted within 10 s")
        latencies.append(found - killed)
        # a run shorter than the stable period counts as a rapid failure; restart
        # by request so every round measures a *first* restart
        client.call("proc.restart", name="victim")
    client.call("proc.stop", name="victim")
    return latencies


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def footprint(client: Client, pid: int, idle: float) -> tuple[float, float]:
    for i in range(5):
        client.call("proc.start", spec={"name": f"idle{i}", "command": ["sleep", "100000"]})
    time.sleep(1.0)
    before = cpu_ticks(pid)
    t0 = time.monotonic()
    time.sleep(idle)
    used = (cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK")
    cpu_percent = 100.0 * used / (time.monotonic() - t0)
    rss = rss_mb(pid)
    for i in range(5):
        client.call("proc.stop", name=f"idle{i}")
    return rss, cpu_percent


def local_bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        zipapp, build_id = write(Path(tmp) / "agent.pyz")
        home = Path(tmp) / "home"
        pid = start_agent(zipapp, home)
        client = Client(home)
        try:
            lat = restart_latency(client, args.restarts)
            rss, cpu = footprint(client, pid, args.idle)
        finally:
            client.call("shutdown")
            deadline = time.monotonic() + 15
            while os.path.exists(f"/proc/{pid}/exe") and time.monotonic() < deadline:
                time.sleep(0.05)
        lat_ms = sorted(x * 1000 for x in lat)
        p95 = lat_ms[min(len(lat_ms) - 1, int(0.95 * len(lat_ms)))]
        print(f"agent build {build_id}, python {sys.version.split()[0]}")
        print(
            f"first restart after SIGKILL ({len(lat_ms)} runs): median "
            f"{statistics.median(lat_ms):.0f} ms, p95 {p95:.0f} ms, max {lat_ms[-1]:.0f} ms "
            f"(goal < 1000 ms)"
        )
        print(f"agent RSS with 5 idle programs: {rss:.1f} MB (goal <= 30 MB)")
        print(f"agent idle CPU over {args.idle:g}s: {cpu:.3f}% of one core (goal ~0)")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()[-300:]}")
    return took


def lab_bench(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        print("lab part skipped: needs root (network namespaces)")
        return
    shoal = str(ROOT / ".venv" / "bin" / "shoal")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["SHOAL_HOME"] = str(Path(tmp) / "state")
        env["HOME"] = str(Path(tmp) / "home")  # a home whose ~/.ssh/config is the lab's
        name = f"bench{os.getpid() % 100000}"
        subprocess.run(
            [shoal, "lab", "up", str(args.lab_nodes), "--name", name],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        try:
            labdir = Path(env["SHOAL_HOME"]) / "labs" / name
            ssh = Path(env["HOME"]) / ".ssh"
            ssh.mkdir(parents=True)
            (ssh / "config").write_text((labdir / "ssh_config").read_text())
            subprocess.run(
                [shoal, "nodes", "import", str(labdir / "inventory")],
                env=env,
                check=True,
                capture_output=True,
            )
            timed([shoal, "agent", "install"], env)
            timed([shoal, "proc", "start", "web", "--", "sleep", "100000"], env)
            runs, procs = [], []
            for _ in range(5):
                runs.append(timed([shoal, "run", "true"], env))
                procs.append(timed([shoal, "proc", "status"], env))
            run_s, proc_s = statistics.median(runs), statistics.median(procs)
            print(
                f"{args.lab_nodes} lab nodes, cold CLI, median of 5: shoal proc status "
                f"{proc_s:.2f} s, shoal run true {run_s:.2f} s, ratio {proc_s / run_s:.2f}"
            )
            timed([shoal, "agent", "stop"], env)
        finally:
            subprocess.run(
                [shoal, "lab", "down", "--name", name], env=env, capture_output=True, timeout=300
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--lab-nodes", type=int, default=32)
    parser.add_argument("--no-lab", action="store_true")
    args = parser.parse_args()
    local_bench(args)
    if not args.no_lab:
        lab_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
