"""Gateway benchmark (issue 18 item 3): ``run true`` through gateways.

Usage (root, namespaces): ``.venv/bin/python bench/gateways.py [--nodes 16] [--site 8]
[--rounds 5]`` (a site behind one gateway), or ``bench/gateways.py --tree --nodes 64
[--rounds 5]`` (a tree of relay gateways against ClusterShell's tree mode).

``--tree``: a lab of ``--nodes`` nodes (no site), measured cold, spawn to exit:
wall time, the controller's CPU (user+sys of the tool and every process it
waited for: the local ssh clients of clush) and its peak RSS (the largest
process of the tool's tree), for ``shoal run true`` direct; ``shoal run true``
through the automatic tree (``SHOAL_RELAY_TREE=2``: round(sqrt(N)) relay
gateways chosen among the nodes); ClusterShell's tree mode (``clush
--topology``) over the same gateways and subtrees; and flat ``clush``. The
gateways' own work runs in their namespaces (the same machine: not counted as
the controller's). ClusterShell's gateways log in with their own key and
config (copied to a 0700 directory the nodes can read, removed after): that is
its deployment model; Shoal's relays get a forwarded, per-run signing agent.
Prints the load average before and after.

Site mode (the default):

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
import shutil  # noqa: E402
import socket  # noqa: E402
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
    ap.add_argument("--tree", action="store_true", help="relay tree against clush's tree mode")
    args = ap.parse_args()
    if args.tree:
        return tree(args.nodes, args.rounds)
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


PEERS = ROOT / "bench" / ".peers" / "clustershell"
CLUSH = PEERS / "bin" / "clush"


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str, int]:
    """(wall s, CPU s of the process and what it waited for, peak RSS KiB, stderr, exit)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, text, proc.returncode


def clush_files(home: str, name: str, groups: dict[str, list[str]], where: Path) -> Path:
    """ClusterShell's tree: topology, a python for the gateways (the nodes cannot see
    /root, where this venv's interpreter lives), the lab's key and config copied where
    the nodes can read them. The topology's path."""
    lab = Path(home) / "labs" / name
    for f in ("id_ed25519", "known_hosts"):
        shutil.copy2(lab / f, where / f)
    cfg = (lab / "ssh_config").read_text().replace(str(lab), str(where))
    (where / "ssh_config").write_text(cfg)
    site = next((PEERS / "lib").glob("python3*/site-packages"))
    gwpython = where / "gwpython"
    gwpython.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec /usr/bin/python3 "$@"\n')
    gwpython.chmod(0o755)
    root = socket.gethostname().split(".")[0]
    lines = ["[routes]", f"{root}: {','.join(groups)}"]
    lines += [f"{gw}: {','.join(members)}" for gw, members in groups.items()]
    topo = where / "topology.conf"
    topo.write_text("\n".join(lines) + "\n")
    return topo


def tree(n: int, rounds: int) -> int:
    home = tempfile.mkdtemp(prefix="shoal-bench-gwtree-")
    os.environ["SHOAL_HOME"] = home
    env = os.environ | {"SHOAL_HOME": home}
    name = f"bt{secrets.token_hex(3)}"
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    up = subprocess.run([SHOAL, "lab", "up", str(n), "--name", name], capture_output=True,
                        text=True, env=env)  # fmt: skip
    if up.returncode != 0:
        print(up.stderr.strip())
        return 1
    where = Path(tempfile.mkdtemp(prefix="shoal-bench-clush-", dir="/var/tmp"))
    try:
        from shoal.fanout.relaytree import auto_tree
        from shoal.lab import Lab

        groups: dict[str, list[str]] = {}
        for node in auto_tree(Lab.open(name).nodes(), 1):
            if node.gateway:
                groups.setdefault(node.gateway, []).append(node.name)
        topo = clush_files(home, name, groups, where)
        sel = f"n[1-{n}]"
        lab_cfg = Path(home) / "labs" / name / "ssh_config"
        run = [SHOAL, "--no-service", "run", "--no-progress", "-s", sel, "true"]
        clush = [str(CLUSH), "-f", str(n), "-S", "-w", sel]
        gw_env = env | {"CLUSTERSHELL_GW_PYTHON_EXECUTABLE": str(where / "gwpython")}
        tools = {
            "shoal direct": (run, env),
            f"shoal relay tree ({len(groups)} gw)": (run, env | {"SHOAL_RELAY_TREE": "2"}),
            f"clush tree ({len(groups)} gw)": (
                [*clush, "--topology", str(topo), "-o", f"-F {where / 'ssh_config'}", "true"],
                gw_env,
            ),
            "clush flat": ([*clush, "-o", f"-F {lab_cfg}", "true"], env),
        }
        names = list(tools)
        got: dict[str, list[tuple[float, float, int]]] = {t: [] for t in names}
        for rnd in range(rounds + 1):
            for i in range(len(names)):
                tool = names[(rnd + i) % len(names)]
                argv, tenv = tools[tool]
                wall, cpu, rss, err, rc = measured(argv, tenv)
                ok = rc == 0 and (not tool.startswith("shoal") or f"ok {n}, failed 0" in err)
                if not ok:
                    print(f"{tool}: failed (exit {rc}): {err.strip()[-300:]}")
                elif rnd:  # round 0 warms up
                    got[tool].append((wall, cpu, rss))
        print(f"run true on {n} nodes, {rounds} rounds (median; min wall):")
        print(f"{'tool':26} {'wall s':>7} {'min s':>6} {'ctl cpu s':>9} {'ctl rss MiB':>11}")
        med: dict[str, tuple[float, float, float]] = {}
        for tool in names:
            if got[tool]:
                walls, cpus, rsss = zip(*got[tool], strict=True)
                med[tool] = (statistics.median(walls), statistics.median(cpus),
                             statistics.median(rsss) / 1024)  # fmt: skip
                print(f"{tool:26} {med[tool][0]:7.3f} {min(walls):6.3f} {med[tool][1]:9.3f} "
                      f"{med[tool][2]:11.1f}")  # fmt: skip
        relay, direct, ctree = (next((med[t] for t in med if t.startswith(p)), None)
                                for p in ("shoal relay", "shoal direct", "clush tree"))  # fmt: skip
        if relay and direct:
            print(f"relay tree / direct: wall {relay[0] / direct[0]:.2f}x, controller cpu "
                  f"{relay[1] / direct[1]:.2f}x, rss {relay[2] / direct[2]:.2f}x")  # fmt: skip
        if relay and ctree:
            print(f"relay tree / clush tree: wall {relay[0] / ctree[0]:.2f}x, controller cpu "
                  f"{relay[1] / ctree[1]:.2f}x, rss {relay[2] / ctree[2]:.2f}x")  # fmt: skip
    finally:
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run([SHOAL, "lab", "down", "--name", name], capture_output=True, env=env)
        shutil.rmtree(home, ignore_errors=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
