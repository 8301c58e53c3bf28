"""The fault suite's figures: every scenario of tests/faults/, more repetitions, one table.

Usage (root; brings up its own namespace lab and always takes it down)::

    .venv/bin/python bench/faults.py [--nodes 8] [--reps 20] [--ctl-reps 5]
        [--only kill,ctl,appctl,loss10,loss30,loss30d,corrupt,disk,agentdisk,hostkey,two,
                runapp,flood,sftp]

Each scenario (:mod:`shoal.testing.faultsuite`) injects one fault into the lab,
lets Shoal work, then inspects every node over a fresh SSH connection. The
table (Markdown, as the README's reliability section carries it) has one row
per scenario: fault, what was injected, expected outcome, observed outcome,
anything lost. The packet-loss rows time the same push + run without loss first
and print the ratio. The machine's load average is printed: on a shared 2-core
host the times move with it. Exit status 1 when any row is not as expected.
"""

from __future__ import annotations

import os
import sys

# bench/ holds scripts named like stdlib modules (select.py): keep it off sys.path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SCENARIOS = (
    "kill",
    "ctl",
    "appctl",
    "loss10",
    "loss30",
    "loss30d",
    "corrupt",
    "disk",
    "agentdisk",
    "hostkey",
    "two",
    "runapp",
    "flood",
    "sftp",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20, help="nodes killed mid-push")
    parser.add_argument("--ctl-reps", type=int, default=5, help="controllers killed mid-push")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    only = args.only.split(",")
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {','.join(SCENARIOS)}")

    home = Path(tempfile.mkdtemp(prefix="shoal-faults-"))
    os.environ["SHOAL_HOME"] = str(home)
    from shoal.agentlink import fleet as agents
    from shoal.lab import Lab, LabSpec
    from shoal.testing import faultapps as fa
    from shoal.testing import faultflood as ff
    from shoal.testing import faultsftp as fsftp
    from shoal.testing import faultsuite as fs

    lab = Lab.up(LabSpec(n=args.nodes, name=f"bf{secrets.token_hex(3)}"))
    rows: list[fs.FaultRow] = []
    try:
        fleet = lab.nodes()
        installed = asyncio.run(agents.install_async(fleet, agents.AgentOptions()))
        if not installed.ok:
            print(f"agent install failed: {[(r.node, r.reason) for r in installed.failed]}")
            return 1
        env = {**os.environ, "SHOAL_NO_SERVICE": "1", "SHOAL_LAB": lab.name}
        work = home / "work"
        runs: dict[str, Callable[[Path], fs.FaultRow]] = {
            "kill": lambda w: fs.node_killed_mid_push(lab, fleet, w, args.reps),
            "ctl": lambda w: fs.controller_killed_mid_push(lab, fleet, w, args.ctl_reps, env),
            "appctl": lambda w: fa.controller_killed_mid_app_up(lab, fleet, w, args.ctl_reps, env),
            "loss10": lambda w: fs.packet_loss(lab, fleet, w, 10),
            "loss30": lambda w: fs.packet_loss(lab, fleet, w, 30, 200_000, fs.LOSSY_LINKS),
            "loss30d": lambda w: fs.packet_loss(lab, fleet, w, 30, 200_000),
            "corrupt": lambda w: fs.corrupt_peer(lab, fleet, w),
            "disk": lambda w: fs.disk_full(lab, fleet, w),
            "agentdisk": lambda w: fs.disk_full_agent_install(lab, fleet, w),
            "hostkey": lambda w: fs.changed_host_key(lab, fleet, w),
            "two": lambda w: fs.two_controllers(lab, fleet, env, args.reps),
            "runapp": lambda w: fa.run_beside_app_up(lab, fleet, w, args.ctl_reps, env),
            "flood": lambda w: ff.connection_flood(lab, fleet, w),
            "sftp": lambda w: fsftp.lying_sftp(w),
        }
        for name in only:
            (work / name).mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            row = runs[name](work / name)
            rows.append(row)
            mark = "ok" if row.ok else "NOT AS EXPECTED"
            print(f"# {row.fault}: {mark} in {time.monotonic() - began:.0f}s", file=sys.stderr)
            for line in row.details[:10]:
                print(f"#   {line}", file=sys.stderr)
        asyncio.run(agents.stop_async(fleet, agents.AgentOptions()))
    finally:
        lab.down()
    load = os.getloadavg()
    print(f"{args.nodes} nodes, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print()
    print("| fault | injected | expected | observed | lost |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [row.fault, row.injected, row.expected, row.observed, row.lost]
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
