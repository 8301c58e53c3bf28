"""Benchmark: ``shoal app up`` of the ByteTorrent example on 16 lab nodes, by phase.

    .venv/bin/python bench/app_up.py [--nodes 16] [--size 8M]

A fresh namespace lab (root) of ``--nodes`` nodes; the example of
``examples/bytetorrent`` with one sender and every other node a receiver
(``--nodes - 3`` receivers and 2 late receivers). Printed, for each run, the
wall time from the call to every process running and every one-shot step
done (the transfer included), split into phases: acquire (selections,
requirements, facts gathered), agents (install), software (``shoal push``),
install (install steps), start (process blocks, barrier, transfer). Runs:

1. cold: nothing on the nodes (agents installed, software pushed);
2. converge: ``up`` again on the running application (nothing to do);
3. warm: after ``app down``, agents still there;
4. warm with the SFTP copy instead of ``shoal push`` (for comparison).
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
EXAMPLE = ROOT / "examples" / "bytetorrent" / "bytetorrent.yaml"

PHASES = ("acquire", "agents", "software", "install", "start")


def spec_text(nodes: int, size: str) -> str:
    text = EXAMPLE.read_text()
    text = text.replace("source: bt ", f"source: {EXAMPLE.parent / 'bt'} ")
    text = text.replace("    count: 4\n", f"    count: {nodes - 3}\n", 1)
    return text.replace("--size 8M", f"--size {size}")


async def one(path: Path, method: str) -> tuple[float, dict[str, float], int]:
    from shoal.app import lifecycle
    from shoal.app.appspec import load
    from shoal.app.runtime import UpOptions

    t0 = time.monotonic()
    report = await lifecycle.up_async(load(path), UpOptions(software_method=method))
    wall = time.monotonic() - t0
    logs = await lifecycle.logs_async("bytetorrent", lines=5)
    ok = sum(1 for text in logs.values() if "sha256 ok" in text)
    return wall, report.phases, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--size", default="8M", help="file ByteTorrent distributes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/app_up.py needs root (a namespace lab)")
    rows: list[tuple[str, float, dict[str, float], int]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        os.environ["SHOAL_HOME"] = tmp
        from shoal.app import lifecycle
        from shoal.lab import Lab, LabSpec

        path = Path(tmp) / "bytetorrent.yaml"
        path.write_text(spec_text(args.nodes, args.size))
        lab = Lab.up(LabSpec(n=args.nodes, name=f"au{secrets.token_hex(2)}"))
        try:
            for label, method, down_after in [
                ("cold (agents, push)", "push", False),
                ("converge (re-run up)", "push", True),
                ("warm (push)", "push", True),
                ("warm (sftp copy)", "copy", True),
            ]:
                wall, phases, ok = asyncio.run(one(path, method))
                rows.append((label, wall, phases, ok))
                if down_after:
                    asyncio.run(lifecycle.down_async("bytetorrent"))
        finally:
            lab.down()
    receivers = args.nodes - 1
    print(
        f"app up, ByteTorrent on {args.nodes} lab nodes ({args.size} file, {receivers} receivers)"
    )
    print(f"  {'run':<22} {'wall':>6}  " + "  ".join(f"{p:>8}" for p in PHASES) + "  ok")
    for label, wall, phases, ok in rows:
        cells = "  ".join(f"{phases.get(p, 0.0):7.2f}s" for p in PHASES)
        print(f"  {label:<22} {wall:5.2f}s  {cells}  {ok}/{receivers}")


if __name__ == "__main__":
    main()
