"""The node side of a warm run: the agent's CPU per ``exec`` of ``true`` (issue 13 figure 1).

    .venv/bin/python -m bench.serve_exec [--before REF] [--rounds 6] [--burst 32]
                                         [--bursts 20] [--python /usr/bin/python3]

A warm ``shoal run true`` on N nodes costs each node one ``exec`` in its agent
(the held connection's sshd only relays the lines); with two cores shared by
every node that CPU bounds the run. Here an agent runs in the foreground on
this machine (``python -m shoal.agent serve --foreground``, the interpreter the
lab's nodes use), a client on its Unix socket sends ``--burst`` execs at once
(as one fan-out does), ``--bursts`` times, and the agent's CPU (its own and its
reaped children's: the shells) is read from /proc per exec. ``--before REF``
runs the agent of another commit too (its ``src/`` from ``git archive``),
alternated round by round with this tree's so a load drift hits both; the
shell's own CPU (``bash -c true`` spawned by a bare loop) is printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.serve_idle import Sample, export, report

SRC = Path(__file__).resolve().parent.parent / "src"


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (children counted once reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Agent:
    """A foreground agent over ``home`` from the sources in ``src``."""

    def __init__(self, python: str, src: Path, home: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src), "HOME": str(home)}
        home.mkdir(mode=0o700, exist_ok=True)
        argv = [python, "-m", "shoal.agent", "serve", "--foreground", "--home", str(home)]
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (home / "agent.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent from {src} did not start")
            time.sleep(0.02)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(home / "agent.sock"))
        self.file = self.sock.makefile("rb")
        self.next = 0

    def burst(self, n: int) -> None:
        """``n`` execs of ``true`` sent at once; back when every reply has come."""
        lines = []
        for _ in range(n):
            self.next += 1
            request = {"v": 1, "id": self.next, "op": "exec", "args": {"command": "true"}}
            lines.append(json.dumps(request).encode() + b"\n")
        self.sock.sendall(b"".join(lines))
        replies = 0
        while replies < n:
            message = json.loads(self.file.readline())
            if "push" in message:
                continue
            if not message.get("ok") or message["result"]["exit"] != 0:
                raise SystemExit(f"exec failed: {message}")
            replies += 1

    def measure(self, burst: int, bursts: int) -> tuple[float, float]:
        """(agent CPU ms per exec, wall ms per burst)."""
        self.burst(burst)  # warm-up
        c0, t0 = cpu_seconds(self.proc.pid), time.perf_counter()
        for _ in range(bursts):
            self.burst(burst)
        wall = (time.perf_counter() - t0) / bursts
        return (cpu_seconds(self.proc.pid) - c0) / (burst * bursts) * 1000, wall * 1000

    def stop(self) -> None:
        self.file.close()
        self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def shell_alone(n: int = 200) -> float:
    """CPU ms of one ``bash -c true`` (what any exec path pays on the node)."""
    before = os.times()
    for _ in range(n):
        subprocess.run(["bash", "-c", "true"], check=True)
    after = os.times()
    return (after.children_user + after.children_system - before.children_user
            - before.children_system) / n * 1000  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", metavar="REF", help="also run this commit's agent")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--python", default="/usr/bin/python3", help="the nodes' interpreter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-exec-") as tmp:
        variants = {"this tree": SRC}
        if args.before:
            variants = {f"before ({args.before})": export(args.before, Path(tmp)), **variants}
        agents = {
            label: Agent(args.python, src, Path(tmp) / f"home{i}")
            for i, (label, src) in enumerate(variants.items())
        }
        got: dict[str, list[Sample]] = {label: [] for label in variants}
        try:
            for r in range(args.rounds):
                for label, agent in agents.items():
                    sample = agent.measure(args.burst, args.bursts)
                    got[label].append(sample)
                    print(f"round {r + 1} {label:<22} {sample[0]:5.2f} ms CPU per exec, "
                          f"{sample[1]:6.1f} ms per burst of {args.burst}", flush=True)  # fmt: skip
        finally:
            for agent in agents.values():
                agent.stop()
    print(f"\nagent exec of 'true', {args.burst} at once, median of {args.rounds} rounds")
    report(
        got,
        0,
        lambda label, rows: (
            f"  {label:<22} {statistics.median(s[0] for s in rows):5.2f} ms"
            f" CPU per exec (shell included), {statistics.median(s[1] for s in rows):6.1f} ms"
            " per burst"
        ),
        f"  bash -c true alone     {shell_alone():5.2f} ms CPU",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
