"""Scale benchmark (issue 18): cold ``shoal run true`` against its peers, N = 32 -> 1,000.

Usage (root, namespaces; from the checkout)::

    .venv/bin/python -m bench.scale [--nodes 32,250,1000] [--rounds 3] [--warmup 1]
                                    [--warm N] [--svg FILE] [--json]

For each N, one lab of N real sshd nodes (``shoal lab up N``, private
``SHOAL_HOME``; one lab at a time, taken down before the next) and, cold (a new
process per run, no connection reuse), spawn to exit, ``run true`` on every node
by Shoal, a plain parallel ``ssh`` loop, pdsh (``-R ssh``) and clush, alternated
round by round (the starting tool rotating) after uncounted warm-up rounds;
median and min per tool and the ratio Shoal / fastest peer by median.

Every tool reads the same ssh_config, written like a user's ``~/.ssh/config``
(``Include`` of the lab's file, ``Host *`` with ``ForwardAgent no``,
``ServerAliveInterval``, ``Compression``, ``SendEnv``): the peers get it with
``-F``, Shoal as ``$HOME/.ssh/config`` (``HOME`` points at the bench's home).
Host keys are verified by every tool against the lab's known_hosts.

``--warm N``: on the lab of N nodes, ``shoal serve`` attached to every node (agents
installed: ~26 MB of RAM per node; refused when ``MemAvailable`` is short), then
warm ``run true`` through it (the whole CLI process, alternated with the cold
direct run), the service's RSS and its idle CPU over 30 s.

``--svg FILE`` draws median latency against N (log axis) for Shoal and each peer
(our own few lines of SVG). Keep ``--warmup`` >= 1: the first connection to each
fresh lab sshd is slower, and without a warm-up the first tool of the round pays it.
The load average is printed with every figure: the machine is shared, and its two
cores run the nodes' sshds too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import fanout as fo
from bench.serve import SHOAL, Service, idle, timed, wait_up

from shoal.nodes.inventory import import_nodes
from shoal.state import State

ROOT = Path(__file__).resolve().parent.parent
#: what one attached node costs the machine with its agent (MB: a node's agent has
#: ~26 MB RSS here), to refuse --warm early
AGENT_MB = 28

USER_CONFIG = """\
# like a user's ~/.ssh/config: the lab's hosts come from an Include
Include {lab}

Host *
    ForwardAgent no
    ServerAliveInterval 30
    ServerAliveCountMax 3
    Compression yes
    SendEnv LANG LC_*
    HashKnownHosts no
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def tools(n: int, cfg: Path, home: Path, work: Path, missing: dict[str, str]) -> list[fo.Tool]:
    """Shoal, the ssh loop, pdsh and clush, every one through ``cfg``."""
    wset = f"n[1-{n}]"
    nodes = [f"n{i}" for i in range(1, n + 1)]
    loop = 'rc=0; for n; do ssh -F "$0" "$n" true & p+=($!); done'
    loop += '; for q in "${p[@]}"; do wait "$q" || rc=1; done; exit $rc'
    out = [
        fo.Tool(
            "shoal",
            [SHOAL, "run", "-s", "@lab", "--no-progress", "true"],
            fo.shoal_ok(n),
            {"HOME": str(home), "SHOAL_NO_SERVICE": "1"},
        ),
        fo.Tool("ssh-loop", ["bash", "-c", loop, str(cfg), *nodes], fo.quiet_ok),
        fo.Tool(
            "pdsh",
            ["pdsh", "-R", "ssh", "-w", wset, "-f", str(n), "-S", "true"],
            fo.quiet_ok,
            {"PDSH_SSH_ARGS": f"-F {cfg} %h"},
        ),
        fo.Tool(
            "clush", [fo.CLUSH, *f"-w {wset} -f {n} -S".split(), "-o", f"-F {cfg}", "true"],
            fo.clush_ok,
        ),
    ]  # fmt: skip
    return [t for t in out if t.name not in missing]


def warm_figures(n: int, lab_nodes: list[Any], root: Path, rounds: int) -> dict[str, Any]:
    """``shoal serve`` attached to all n: warm run (alternated with cold), RSS, idle CPU."""
    avail = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) >> 10
    if avail < n * AGENT_MB + 2048:
        print(f"\nwarm: skipped, {avail} MB available < {n * AGENT_MB + 2048} MB for {n} agents")
        return {"skipped": f"{avail} MB available"}
    svc = Service(root / f"svc{n}")
    try:
        svc.home.mkdir(mode=0o700)
        with State(svc.home / "state.db") as st:
            import_nodes(lab_nodes, state=st)
        t0 = time.monotonic()
        client = svc.start()
        took = wait_up(client, n, timeout=600)
        print(f"\nwarm: {n} links up {took:.1f} s after start ({time.monotonic() - t0:.1f} s)")
        argv = [SHOAL, "run", "--no-progress", "true"]
        cold_env = {**svc.env, "SHOAL_NO_SERVICE": "1"}
        times: dict[str, list[float]] = {"warm": [], "cold": []}
        timed(argv, svc.env)  # warm-up
        for _ in range(rounds):
            times["warm"].append(timed(argv, svc.env))
            times["cold"].append(timed(argv, cold_env))
        warm, cold = (statistics.median(times[k]) for k in ("warm", "cold"))
        print(f"  warm run true x{n}: {warm:.3f} s median (cold direct {cold:.3f} s),"
              f" target <= 2 s; load {loadavg()}")  # fmt: skip
        cpu0, _ = svc.cpu_rss()
        idle(svc)
        cpu1, rss = svc.cpu_rss()
        return {"attach_s": took, "warm": times["warm"], "cold": times["cold"], "rss_mb": rss,
                "idle_cpu_pct": (cpu1 - cpu0) / 30 * 100, "load": loadavg()}  # fmt: skip
    finally:
        svc.stop()


def one_size(n: int, args: argparse.Namespace, root: Path, missing: dict[str, str]) -> dict:
    name = f"sc{secrets.token_hex(2)}"
    up = fo.sh([SHOAL, "lab", "up", str(n), "--name", name])
    print(up.stdout.strip() or up.stderr.strip())
    if up.returncode != 0:
        raise SystemExit(f"lab up {n} failed")
    try:
        labcfg = root / "labs" / name / "ssh_config"
        home = root / f"home{n}"
        (home / ".ssh").mkdir(parents=True)
        cfg = home / ".ssh" / "config"
        cfg.write_text(USER_CONFIG.format(lab=labcfg))
        ts = tools(n, cfg, home, root, missing)
        print(f"\nrun true x{n}: {args.warmup} warm-up + {args.rounds} rounds,"
              f" load before {loadavg()} ...", flush=True)  # fmt: skip
        fo.alternate(ts, args.rounds, args.warmup, None)
        out = fo.report(f"run true x{n}", ts, args.rounds)
        out["load_after"] = loadavg()
        print(out["ratio_line"] + f"  [load {out['load_after']}]")
        if args.warm == n:
            from shoal.lab import Lab

            out["warm"] = warm_figures(n, Lab.open(name).nodes(), root, args.rounds)
        return out
    finally:
        down = fo.sh([SHOAL, "lab", "down", "--name", name])
        print((down.stdout + down.stderr).strip())


# ---------------------------------------------------------------- the picture
COLORS = {"shoal": "#d62728", "ssh-loop": "#1f77b4", "pdsh": "#2ca02c", "clush": "#9467bd"}


def svg(curve: dict[str, dict[int, float]], load: str) -> str:
    """Median latency (s) against N (log axis), one polyline per tool; a tool with no
    counted run at some N says so in the legend."""
    w, h, left, bottom, top, right = 600, 360, 60, 50, 30, 190
    sizes = sorted({n for pts in curve.values() for n in pts})
    ymax = max(v for pts in curve.values() for v in pts.values()) * 1.1
    lo, hi = math.log(sizes[0]) - 0.3, math.log(sizes[-1]) + 0.3
    xmax = sizes[-1]

    def x(n: float) -> float:
        return left + (w - left - right) * (math.log(n) - lo) / (hi - lo)

    def y(v: float) -> float:
        return h - bottom - (h - bottom - top) * v / ymax

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="14">cold run true: latency against '
             f'fleet size (median; load {load})</text>',
             f'<line x1="{left}" y1="{y(0)}" x2="{x(xmax)}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="black"/>',
             f'<text x="{(left + x(xmax)) / 2}" y="{h - 12}" text-anchor="middle">nodes</text>',
             f'<text x="14" y="{(top + y(0)) / 2}" transform="rotate(-90 14 {(top + y(0)) / 2})"'
             ' text-anchor="middle">seconds</text>']  # fmt: skip
    for n in sizes:
        parts.append(f'<text x="{x(n)}" y="{y(0) + 16}" text-anchor="middle">{n}</text>')
    step = max(1, round(ymax / 5))
    for v in range(0, int(ymax) + 1, step):
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{v}</text>')
        parts.append(f'<line x1="{left}" y1="{y(v)}" x2="{x(xmax)}" y2="{y(v)}" stroke="#ddd"/>')
    for i, (tool, pts) in enumerate(curve.items()):
        color = COLORS.get(tool, "#555")
        xy = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in sorted(pts.items()))
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, secs in pts.items():
            parts.append(f'<circle cx="{x(n):.1f}" cy="{y(secs):.1f}" r="3" fill="{color}"/>')
        ly = top + 10 + 18 * i
        parts.append(f'<line x1="{w - right + 10}" y1="{ly}" x2="{w - right + 30}" y2="{ly}" '
                     f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        gaps = [str(n) for n in sizes if n not in pts]
        label = tool + (f" (none at {', '.join(gaps)})" if gaps else "")
        parts.append(f'<text x="{w - right + 35}" y="{ly + 4}">{label}</text>')
    return "\n".join([*parts, "</svg>", ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="32,250,1000", help="comma-separated sizes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--warm", type=int, default=0, metavar="N", help="shoal serve figures at N")
    ap.add_argument("--svg", type=Path, help="write the latency curve here")
    ap.add_argument("--json", action="store_true", help="raw numbers to bench/results/")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.nodes.split(",")]
    if os.geteuid() != 0:
        print("bench/scale.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not all(1 <= n <= 1000 for n in args.sizes) or not 1 <= args.rounds <= 20:
        ap.error("--nodes: sizes 1-1000; --rounds 1-20")
    missing = {
        tool: why
        for tool, why in (
            ("pdsh", fo.apt_install("pdsh", "pdsh")),
            ("clush", fo.venv_install("clustershell", "clustershell", "clush")),
        )
        if why
    }
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "shoal")])
    root = Path(tempfile.mkdtemp(prefix="shoal-scale-"))
    os.environ["SHOAL_HOME"] = str(root)
    signal.signal(signal.SIGTERM, fo._interrupt)
    results: dict[int, dict] = {}
    try:
        for n in args.sizes:
            results[n] = one_size(n, args, root, missing)
    except KeyboardInterrupt:
        print("\ninterrupted (the lab was taken down)", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\nthe curve (median s; ratio = shoal / fastest peer):")
    curve: dict[str, dict[int, float]] = {}
    for n, out in results.items():
        for tool, got in out["tools"].items():
            if got["times"]:
                curve.setdefault(tool, {})[n] = statistics.median(got["times"])
        r = out.get("ratio", {})
        print(f"  N={n:<5} " + "  ".join(f"{t} {c[n]:.2f}" for t, c in curve.items() if n in c)
              + (f"  -> {r['ratio']:.2f}x {r['peer']}" if r else "")
              + f"  [load {out['load_after']}]")  # fmt: skip
    if args.svg and curve:
        args.svg.write_text(svg(curve, results[max(results)]["load_after"]))
        print(f"picture: {args.svg}")
    if args.json:
        outdir = ROOT / "bench" / "results"
        outdir.mkdir(parents=True, exist_ok=True)
        path = outdir / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps({str(n): r for n, r in results.items()}, indent=2) + "\n")
        print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
