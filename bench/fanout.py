"""Fan-out benchmark (issue 4): ``shoal run`` / ``shoal cp`` against their peers.

Usage (root, namespaces): ``.venv/bin/python bench/fanout.py [--nodes 32] [--rounds 7]
[--size-mb 10] [--json]``

Brings up a lab of ``--nodes`` real sshd nodes (``shoal lab up``, private
temporary ``SHOAL_HOME``) and measures cold wall time (a new process per run,
no connection reuse), spawn to exit, of:

1. ``run true`` on every node: shoal, pssh, clush, pdsh, a plain parallel
   ``ssh`` loop and Ansible ad-hoc (``-m raw``: no module upload);
2. copying a ``--size-mb`` MiB random file to every node: shoal cp,
   parallel-scp (pscp) and ``clush -c``; each copy is checked with sha256sum
   on every node (then removed) before it counts.

Every tool uses the same nodes, the lab's ed25519 key and its known_hosts with
strict host-key checking, through the lab's ssh_config (``-F``). Tools run
round-robin, the starting tool rotating each round, after one uncounted
warm-up round, so machine noise hits all alike. Prints median/min per tool and
the ratio Shoal / fastest peer (by median). A run counts only if the tool
exited 0 and reported success on every node. Peers are installed idempotently:
pssh and pdsh from Debian, clustershell and ansible-core by pip into
``bench/.peers/``. The lab is always taken down (also on Ctrl-C).
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / ".peers"
SHOAL = ROOT / ".venv" / "bin" / "shoal"
TIMEOUT = 180.0  # seconds, any single command
CLUSH = str(PEERS / "clustershell" / "bin" / "clush")
ANSIBLE = str(PEERS / "ansible" / "bin" / "ansible")

Result = subprocess.CompletedProcess[str]


@dataclass
class Tool:
    name: str
    argv: list[str]
    check: Callable[[Result], str | None]  # an error, or None when every node succeeded
    env: dict[str, str] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # local user+sys seconds, with children
    errors: list[str] = field(default_factory=list)

    def show(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def sh(argv: list[str], **kw: Any) -> Result:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, **kw)


# ---------------------------------------------------------------- installing the peers
def apt_install(pkg: str, binary: str) -> str | None:
    """Install a Debian package unless ``binary`` is there; None, or why not."""
    if shutil.which(binary):
        print(f"  {pkg}: already installed ({shutil.which(binary)})")
        return None
    print(f"  {pkg}: installing with apt-get install {pkg}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    r = sh(["apt-get", "install", "-y", "-q", pkg], env=env)
    if r.returncode != 0:
        sh(["apt-get", "update", "-q"], env=env)
        r = sh(["apt-get", "install", "-y", "-q", pkg], env=env)
    return None if shutil.which(binary) else f"apt-get failed: {r.stderr.strip()[-300:]}"


def venv_install(name: str, spec: str, binary: str) -> str | None:
    """pip-install ``spec`` into bench/.peers/NAME unless its ``binary`` exists."""
    venv = PEERS / name
    if (venv / "bin" / binary).exists():
        print(f"  {spec}: already installed in {venv}")
        return None
    print(f"  {spec}: installing with pip into {venv}")
    r = sh([sys.executable, "-m", "venv", str(venv)])
    if r.returncode == 0:
        r = sh([str(venv / "bin" / "pip"), "install", "-q", spec])
    return None if r.returncode == 0 else f"pip failed: {r.stderr.strip()[-300:]}"


def install_peers() -> dict[str, str]:
    """Install every peer it can; the peers that are missing, with why."""
    print("peers (installed once, reused afterwards):")
    missing: dict[str, str] = {}
    for tool, why in (
        ("pssh", apt_install("pssh", "parallel-ssh")),
        ("pdsh", apt_install("pdsh", "pdsh")),
        ("clush", venv_install("clustershell", "clustershell", "clush")),
        ("ansible", venv_install("ansible", "ansible-core", "ansible")),
    ):
        if why:
            print(f"  {tool}: NOT available, skipped: {why}")
            missing[tool] = why
    return missing


def version(argv: list[str]) -> str:
    try:
        r = sh(argv)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]


# ---------------------------------------------------------------- success checks
def need_rc0(r: Result) -> str | None:
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip())[-600:]
        return f"exit {r.returncode}: {tail}"
    return None


def quiet_ok(r: Result) -> str | None:
    """For tools that print nothing on success (clush -S, pdsh -S, the ssh loop)."""
    return need_rc0(r) or (f"unexpected stderr: {r.stderr.strip()[-600:]}" if r.stderr else None)


def clush_ok(r: Result) -> str | None:
    """clush -S: exit 0, and stderr holds at most its copy progress lines (``clush: 3/32``)."""
    noise = [ln for ln in r.stderr.splitlines() if not re.fullmatch(r"(clush: +\d+/\d+)?\s*", ln)]
    return need_rc0(r) or (f"unexpected stderr: {chr(10).join(noise)[-600:]}" if noise else None)


def shoal_ok(n: int) -> Callable[[Result], str | None]:
    def check(r: Result) -> str | None:
        want = f"ok {n}, failed 0, timeout 0, unreachable 0"
        return need_rc0(r) or (None if want in r.stderr else f"summary lacks {want!r}: {r.stderr}")

    return check


def count_ok(n: int, pattern: str) -> Callable[[Result], str | None]:
    """Exit 0 and ``pattern`` (one group: the node) matched for all n nodes."""

    def check(r: Result) -> str | None:
        found = set(re.findall(pattern, r.stdout, re.M))
        if err := need_rc0(r):
            return err
        return None if len(found) == n else f"success reported by {len(found)}/{n} nodes"

    return check


# ---------------------------------------------------------------- the tools
def run_tools(n: int, cfg: Path, work: Path, missing: dict[str, str]) -> list[Tool]:
    nodes = [f"n{i}" for i in range(1, n + 1)]
    hosts = work / "hosts"
    hosts.write_text("\n".join(nodes) + "\n")
    inv = work / "ansible.ini"
    inv.write_text(
        "[lab]\n" + "\n".join(nodes) + f"\n[lab:vars]\nansible_ssh_common_args='-F {cfg}'\n"
    )
    (work / "ansible.cfg").write_text("[defaults]\n")
    wset, loop = f"n[1-{n}]", 'rc=0; for n; do ssh -F "$0" "$n" true & p+=($!); done'
    loop += '; for q in "${p[@]}"; do wait "$q" || rc=1; done; exit $rc'
    ansible_env = {
        "ANSIBLE_CONFIG": str(work / "ansible.cfg"),  # ignore any ansible.cfg around
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",  # no ControlPersist: every run cold
        "ANSIBLE_NOCOLOR": "1",
    }
    tools = [
        Tool("shoal", [str(SHOAL), "run", "-s", "@lab", "--no-progress", "true"], shoal_ok(n)),
        Tool("ssh-loop", ["bash", "-c", loop, str(cfg), *nodes], quiet_ok),
        Tool(
            "pssh",
            ["parallel-ssh", "-h", str(hosts), "-p", str(n), "-x", f"-F {cfg}", "true"],
            count_ok(n, r"\[SUCCESS\] (n\d+)$"),
        ),
        Tool(
            "clush",
            [CLUSH, *f"-w {wset} -f {n} -S".split(), "-o", f"-F {cfg}", "true"],
            clush_ok,
        ),
        Tool(
            "pdsh",
            ["pdsh", "-R", "ssh", "-w", wset, "-f", str(n), "-S", "true"],
            quiet_ok,
            {"PDSH_SSH_ARGS": f"-F {cfg} %h"},
        ),
        Tool(
            "ansible",
            [ANSIBLE, "all", *f"-i {inv} -f {n} -o -m raw -a true".split()],
            count_ok(n, r"^(n\d+) \| CHANGED \| rc=0"),
            ansible_env,
        ),
    ]
    return [t for t in tools if t.name not in missing]


def cp_tools(n: int, cfg: Path, work: Path, src: Path, missing: dict[str, str]) -> list[Tool]:
    pscp = f"parallel-scp -h {work / 'hosts'} -p {n} -x".split()
    clush = [CLUSH, *f"-w n[1-{n}] -f {n} -S -o".split(), f"-F {cfg}", "-c", str(src)]
    tools = [
        Tool(
            "shoal",
            [str(SHOAL), "cp", "-s", "@lab", "--no-progress", str(src), "@:/tmp/fanout/shoal/"],
            shoal_ok(n),
        ),
        Tool(
            "pscp",
            [*pscp, f"-F {cfg}", str(src), "/tmp/fanout/pscp/"],
            count_ok(n, r"\[SUCCESS\] (n\d+)$"),
        ),
        Tool("clush", [*clush, "--dest", "/tmp/fanout/clush/"], clush_ok),
    ]
    gone = set(missing) | ({"pscp"} if "pssh" in missing else set())
    return [t for t in tools if t.name not in gone]


# ---------------------------------------------------------------- helpers on the lab
def on_nodes(cfg: Path, n: int, cmd: str) -> dict[str, Result]:
    """Run ``cmd`` on every node with plain ssh (independent of the tools measured)."""
    nodes = [f"n{i}" for i in range(1, n + 1)]
    with ThreadPoolExecutor(max_workers=16) as ex:
        rs = ex.map(lambda node: sh(["ssh", "-F", str(cfg), node, cmd]), nodes)
        return dict(zip(nodes, rs, strict=True))


def verify_copy(cfg: Path, n: int, path: str, digest: str) -> str | None:
    """The file is intact on every node (then removed, so each copy starts fresh)."""
    bad = []
    for node, r in on_nodes(cfg, n, f"sha256sum {path} && rm -f {path}").items():
        if r.returncode != 0 or r.stdout.split()[:1] != [digest]:
            bad.append(f"{node}: {(r.stdout + r.stderr).strip()[:120]}")
    return f"checksum wrong/missing on {len(bad)} nodes: {bad[:3]}" if bad else None


def timed(tool: Tool) -> tuple[float, float, str | None]:
    """Wall time, local CPU time (the tool and the children it waited for), error."""
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        r = subprocess.run(
            tool.argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=os.environ | tool.env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, 0.0, f"timed out after {TIMEOUT:.0f}s"
    wall, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    return wall, cpu, tool.check(r)


def alternate(
    tools: list[Tool], rounds: int, warmup: int, after: Callable[[Tool], str | None] | None
) -> None:
    """Round-robin, starting tool rotating; ``after`` (untimed) may reject a run."""
    for r in range(warmup + rounds):
        k = r % len(tools)
        for tool in tools[k:] + tools[:k]:
            secs, cpu, err = timed(tool)
            if err is None and after is not None:
                err = after(tool)
            tag = "warm-up" if r < warmup else f"round {r - warmup + 1}"
            if err:
                print(f"  ! {tool.name} ({tag}) does not count: {err}")
            if r >= warmup:
                if err:
                    tool.errors.append(err)
                else:
                    tool.times.append(secs)
                    tool.cpu.append(cpu)


def report(title: str, tools: list[Tool], rounds: int) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"  {'tool':<9} {'median':>8} {'min':>8} {'max':>8}  {'counted':>7}  {'cpu':>8}")
    for t in tools:
        if t.times:
            med, lo, hi = statistics.median(t.times), min(t.times), max(t.times)
            cpu = statistics.median(t.cpu)
            runs = f"{len(t.times)}/{rounds}"
            print(f"  {t.name:<9} {med:7.3f}s {lo:7.3f}s {hi:7.3f}s  {runs:>7}  {cpu:7.2f}s")
        else:
            print(f"  {t.name:<9} {'-':>8} {'-':>8} {'-':>8}  {f'0/{rounds}':>7}")
    out: dict[str, Any] = {
        "tools": {
            t.name: {"command": t.show(), "times": t.times, "cpu": t.cpu, "errors": t.errors}
            for t in tools
        }
    }
    shoal = next((t for t in tools if t.name == "shoal" and t.times), None)
    peers = [t for t in tools if t.name != "shoal" and t.times]
    if shoal and peers:
        best = min(peers, key=lambda t: statistics.median(t.times))
        s, p = statistics.median(shoal.times), statistics.median(best.times)
        out["ratio"] = {"shoal": s, "peer": best.name, "peer_median": p, "ratio": s / p}
        out["ratio_line"] = (
            f"{title}: shoal {s:.2f}s (median) vs fastest peer {best.name} {p:.2f}s"
            f" -> ratio {s / p:.2f}  (min: {min(shoal.times):.2f}s vs"
            f" {min(min(t.times) for t in peers):.2f}s fastest peer min)"
        )
    else:
        out["ratio_line"] = f"{title}: no ratio (shoal or every peer had no counted run)"
    print("  (wall: spawn to exit; cpu: median local user+sys of the tool and its children)")
    return out


# ---------------------------------------------------------------- main
def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    ap.add_argument("--size-mb", type=int, default=10, help="MiB copied to each node")
    ap.add_argument("--json", action="store_true", help="raw numbers to bench/results/")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/fanout.py: needs root (network namespaces, apt-get)", file=sys.stderr)
        return 2
    if not (1 <= args.nodes <= 250 and 1 <= args.rounds <= 50 and 0 <= args.warmup <= 5):
        ap.error("--nodes 1-250, --rounds 1-50, --warmup 0-5")
    missing = install_peers()
    # measure Shoal as a wheel install runs it: byte-compiled (PYTHONDONTWRITEBYTECODE
    # would otherwise make an edited editable checkout recompile on every start)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "shoal")])
    home = Path(tempfile.mkdtemp(prefix="shoal-fanout-"))
    os.environ["SHOAL_HOME"] = str(home)  # every shoal child: a private state, never the user's
    name = f"fo{secrets.token_hex(3)}"
    signal.signal(signal.SIGTERM, _interrupt)
    n, results = args.nodes, {}
    try:
        up = sh([str(SHOAL), "lab", "up", str(n), "--name", name])
        print(up.stdout.strip() or up.stderr.strip())
        if up.returncode != 0:
            return 1
        cfg = home / "labs" / name / "ssh_config"
        work = home / "bench"
        work.mkdir()
        ready = on_nodes(cfg, n, "mkdir -p /tmp/fanout/shoal /tmp/fanout/pscp /tmp/fanout/clush")
        if bad := [k for k, r in ready.items() if r.returncode != 0]:
            print(f"lab not usable over ssh -F {cfg}: {bad}: {ready[bad[0]].stderr}")
            return 1
        src = work / "payload.bin"
        src.write_bytes(os.urandom(args.size_mb << 20))
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        runs, cps = run_tools(n, cfg, work, missing), cp_tools(n, cfg, work, src, missing)
        print("\nversions:")
        for label, argv in (
            ("shoal", [str(SHOAL), "--version"]),
            ("ssh", ["ssh", "-V"]),
            ("pssh", ["parallel-ssh", "--version"]),
            ("clush", [CLUSH, "--version"]),
            ("pdsh", ["pdsh", "-V"]),
            ("ansible", [ANSIBLE, "--version"]),
        ):
            if label not in missing:
                print(f"  {label:<8} {version(argv)}")
        print(f"\ncommands (SSH_CFG = {cfg}: ed25519 key, curve25519, strict host keys):")
        for t in runs + cps:
            kind = "run" if t in runs else "cp "
            print(f"  {kind} {t.name:<9} {t.show().replace(str(cfg), '$SSH_CFG')}")
        print(
            "  host keys: every tool verifies against the lab's known_hosts (none skips it);"
            " ansible: ssh multiplexing off (-o ControlMaster=no) so each run is cold;"
            " pscp always passes scp -C (compression, not switchable)"
        )
        print(f"\nrun true x{n}: {args.warmup} warm-up + {args.rounds} rounds ...", flush=True)
        alternate(runs, args.rounds, args.warmup, None)
        print(f"copy {args.size_mb} MiB x{n}: {args.warmup} warm-up + {args.rounds} rounds ...")
        alternate(
            cps,
            args.rounds,
            args.warmup,
            lambda t: verify_copy(cfg, n, f"/tmp/fanout/{t.name}/payload.bin", digest),
        )
        results["run"] = report(f"run true x{n}", runs, args.rounds)
        results["cp"] = report(f"copy {args.size_mb} MiB x{n}", cps, args.rounds)
        print()
        for part in ("run", "cp"):
            print(results[part]["ratio_line"])
    except KeyboardInterrupt:
        print("\ninterrupted: taking the lab down", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        down = subprocess.run(
            [str(SHOAL), "lab", "down", "--name", name], capture_output=True, text=True, timeout=120
        )
        print((down.stdout + down.stderr).strip())
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        outdir = ROOT / "bench" / "results"
        outdir.mkdir(parents=True, exist_ok=True)
        path = outdir / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
        meta = {"nodes": n, "rounds": args.rounds, "warmup": args.warmup, "size_mb": args.size_mb}
        path.write_text(json.dumps(meta | results, indent=2) + "\n")
        print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
