"""System SSH files benchmark (issue 19 item 2): ``shoal run true`` with /etc/ssh/ssh_config read.

Usage (root, namespaces): ``.venv/bin/python bench/sshfiles.py [--nodes 32] [--rounds 7]``

Brings up a lab of ``--nodes`` nodes (private temporary ``SHOAL_HOME``) and
measures cold wall time (a new process per run) of ``shoal run -s @lab true``
with the system directory (``SHOAL_SSH_SYSTEM_DIR``) holding:

* ``none``: no ssh_config at all (what Shoal read before it honoured the system file);
* ``debian``: Debian's stock ssh_config (``Include ssh_config.d/*.conf``, ``SendEnv``,
  ``HashKnownHosts``, ``GSSAPIAuthentication``) and a drop-in in ssh_config.d;
* ``asyncssh``: the same plus a ``Match exec`` block, which the fast resolver
  does not reproduce, so every host goes through asyncssh's own config parsing
  (what honouring the system file would cost without Include/Match support);

and, as the peer, a parallel loop of OpenSSH's ``ssh -F`` over the same nodes.
Variants run round-robin after one warm-up round; prints median/min per variant
and the ratios. The lab is always taken down.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOAL = str(ROOT / ".venv" / "bin" / "shoal")
DEBIAN = """\
Include /etc/ssh/ssh_config.d/*.conf

Host *
    SendEnv LANG LC_*
    HashKnownHosts yes
    GSSAPIAuthentication yes
"""


def _system_dirs(work: Path) -> dict[str, Path]:
    dirs = {name: work / name for name in ("none", "debian", "asyncssh")}
    for d in dirs.values():
        (d / "ssh_config.d").mkdir(parents=True)
    for name in ("debian", "asyncssh"):
        text = DEBIAN.replace("/etc/ssh/", f"{dirs[name]}/")
        if name == "asyncssh":
            text = "Match exec true\n  LogLevel ERROR\n\n" + text
        (dirs[name] / "ssh_config").write_text(text)
        (dirs[name] / "ssh_config.d" / "50-site.conf").write_text(
            "Host *.example.org\n  User ops\n"
        )
    return dirs


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed ({r.returncode}): {(r.stdout + r.stderr)[-400:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/sshfiles.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not (1 <= args.nodes <= 250 and 1 <= args.rounds <= 50):
        ap.error("--nodes 1-250, --rounds 1-50")
    home = Path(tempfile.mkdtemp(prefix="shoal-sshfiles-"))
    env = {**os.environ, "SHOAL_HOME": str(home)}
    name = f"sf{secrets.token_hex(3)}"
    try:
        up = subprocess.run([SHOAL, "lab", "up", str(args.nodes), "--name", name], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
        print(up.stdout.strip() or up.stderr.strip())
        if up.returncode != 0:
            return 1
        cfg = home / "labs" / name / "ssh_config"
        dirs = _system_dirs(home / "etc")
        nodes = [f"n{i}" for i in range(1, args.nodes + 1)]
        loop = 'rc=0; for n; do ssh -F "$0" "$n" true & p+=($!); done'
        loop += '; for q in "${p[@]}"; do wait "$q" || rc=1; done; exit $rc'
        shoal = [SHOAL, "run", "-s", "@lab", "--no-progress", "true"]
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            label: (shoal, {**env, "SHOAL_SSH_SYSTEM_DIR": str(d)}) for label, d in dirs.items()
        }
        variants["ssh-loop"] = (["bash", "-c", loop, str(cfg), *nodes], env)
        times: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for rnd in range(args.rounds + 1):
            for label in order[rnd % len(order) :] + order[: rnd % len(order)]:
                took = _timed(*variants[label])
                if rnd:  # round 0 warms up
                    times[label].append(took)
        print(f"\nrun true x{args.nodes}, {args.rounds} rounds (seconds, cold process each):")
        med = {k: statistics.median(v) for k, v in times.items()}
        for label, values in times.items():
            print(f"  {label:<9} median {med[label]:.3f}  min {min(values):.3f}")
        print(
            f"\ndebian/none {med['debian'] / med['none']:.2f}x   "
            f"asyncssh/debian {med['asyncssh'] / med['debian']:.2f}x   "
            f"shoal(debian)/ssh-loop {med['debian'] / med['ssh-loop']:.2f}x"
        )
    finally:
        down = subprocess.run([SHOAL, "lab", "down", "--name", name], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        print((down.stdout + down.stderr).strip())
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
