"""Gateway benchmark (issue 18 item 3): ``run true`` through a site's gateway.

Usage (root, namespaces): ``.venv/bin/python bench/gateways.py [--nodes 16] [--site 8]
[--rounds 5]``

Brings up a lab of ``--nodes`` real sshd nodes whose last ``--site`` nodes sit
behind a gateway (``shoal lab up N --site K``, a private temporary
``SHOAL_HOME``) and measures, cold (a new process per run), spawn to exit, wall
time and the controller's CPU (user+sys of the child) of:

1. ``shoal run true`` on the site's nodes (through one connection to the gateway);
2. the same with OpenSSH: a parallel ``ssh -J GATEWAY NODE true`` loop (one
   connection to the gateway per node: ssh's ProxyJump), the lab's ssh_config;
3. ``shoal run true`` on as many directly reachable nodes (the cost of the hop).

Tools run round-robin after an uncounted warm-up round. A run counts only if it
exited 0 with every node ok. Prints median/min per tool and Shoal / ssh -J. The
gateway's sshd log gives the logins per run (one for Shoal, K for ssh -J). The
lab is always taken down. ClusterShell's tree mode is not measured here: its
gateway must log in to the site's nodes itself (a key or a forwarded agent on
the gateway), which this lab does not give it.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOAL = str(ROOT / ".venv" / "bin" / "shoal")


def timed(
    argv: list[str], env: dict[str, str]
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--site", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, k = args.nodes, args.site
    if 2 * k > n:
        ap.error("--site must leave at least as many direct nodes (for tool 3)")
    home = tempfile.mkdtemp(prefix="shoal-bench-gw-")
    env = os.environ | {"SHOAL_HOME": home}
    name = f"bg{secrets.token_hex(3)}"
    up = subprocess.run(
        [SHOAL, "lab", "up", str(n), "--site", str(k), "--name", name],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if up.returncode != 0:
        print(up.stderr.strip())
        return 1
    try:
        labdir = Path(home) / "labs" / name
        cfg = labdir / "ssh_config"
        gateway = f"n{n - k}"
        site = [f"n{i}" for i in range(n - k + 1, n + 1)]
        loop = 'rc=0; gw=$1; shift; for n; do ssh -F "$0" -J "$gw" "$n" true & p+=($!); done'
        loop += '; for q in "${p[@]}"; do wait "$q" || rc=1; done; exit $rc'
        run = [SHOAL, "--no-service", "run", "--no-progress", "-s"]
        tools = {
            "shoal via gateway": [*run, f"n[{n - k + 1}-{n}]", "true"],
            "ssh -J loop": ["bash", "-c", loop, str(cfg), gateway, *site],
            "shoal direct": [*run, f"n[1-{k}]", "true"],
        }
        want = f"ok {k}, failed 0"
        log = labdir / "nodes" / gateway / "log" / "sshd.log"
        times: dict[str, list[float]] = {t: [] for t in tools}
        cpus: dict[str, list[float]] = {t: [] for t in tools}
        logins: dict[str, int] = {}
        names = list(tools)
        for rnd in range(args.rounds + 1):
            for i in range(len(names)):
                tool = names[(rnd + i) % len(names)]
                seen = log.read_text(errors="replace").count("Accepted publickey")
                wall, cpu, r = timed(tools[tool], env)
                ok = r.returncode == 0 and (tool.startswith("ssh") or want in r.stderr)
                if not ok:
                    print(f"{tool}: failed: {(r.stderr or r.stdout).strip()[-300:]}")
                    continue
                logins[tool] = log.read_text(errors="replace").count("Accepted publickey") - seen
                if rnd:  # round 0 warms up
                    times[tool].append(wall)
                    cpus[tool].append(cpu)
        print(f"run true on {k} nodes behind gateway {gateway} (lab of {n}), {args.rounds} rounds:")
        print(f"{'tool':20} {'median s':>9} {'min s':>7} {'cpu s':>7} {'gateway logins':>15}")
        for tool in names:
            if times[tool]:
                print(
                    f"{tool:20} {statistics.median(times[tool]):9.3f} {min(times[tool]):7.3f} "
                    f"{statistics.median(cpus[tool]):7.3f} {logins.get(tool, 0):15d}"
                )
        a, b = times["shoal via gateway"], times["ssh -J loop"]
        if a and b:
            ratio = statistics.median(a) / statistics.median(b)
            print(f"shoal via gateway / ssh -J loop: {ratio:.2f}x")
    finally:
        subprocess.run([SHOAL, "lab", "down", "--name", name], capture_output=True, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
