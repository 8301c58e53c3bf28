"""Running system tools and finding processes, with errors as one-line LabErrors.

Owns the lab's only contact with ``subprocess`` and ``/proc``: :func:`run`
(a command whose failure becomes ``LabError("what: last line of stderr")``),
batch helpers for ``ip``/``tc``/``nft``, the inventory of network namespaces
and links, and process discovery by network namespace, command line or
environment tag — which is how ``down`` finds what an interrupted ``up`` left
behind without trusting a state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from shoal.errors import LabError

NETNS_DIR = Path("/run/netns")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


def run(
    argv: Sequence[str],
    what: str,
    *,
    input: str | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on failure raise ``LabError('WHAT: <stderr's last line>')``."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: {argv[0]} did not finish within {timeout:g}s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{what}: {_last_line(proc.stderr or proc.stdout)}")
    return proc


def start_script(argv: Sequence[str], what: str, cwd: Path | None = None) -> int:
    """Run a node's start-up script (detached session) and return the pid it prints."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: start-up did not finish within 30s") from None
    if proc.returncode != 0:
        raise LabError(f"{what}: {_last_line(proc.stderr)}")
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"{what}: no sshd pid printed") from None


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        p = Path(d) / tool
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def ip_batch(lines: Sequence[str], what: str, netns: str | None = None) -> None:
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, what, input="\n".join(lines) + "\n")


def tc_batch(lines: Sequence[str], what: str, netns: str | None = None) -> None:
    if not lines:
        return
    argv = ["tc"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, what, input="\n".join(lines) + "\n")


def nft_in(netns: str, ruleset: str, what: str) -> None:
    run(["ip", "netns", "exec", netns, "nft", "-f", "-"], what, input=ruleset)


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def list_links(netns: str | None = None) -> list[dict[str, object]]:
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["addr", "show"]
    out = run(argv, "list links").stdout
    try:
        data = json.loads(out or "[]")
    except ValueError:
        raise LabError("list links: ip -j printed something that is not JSON") from None
    return [d for d in data if isinstance(d, dict)]


def link_names(netns: str | None = None) -> list[str]:
    return [str(d.get("ifname")) for d in list_links(netns)]


def ipv4_addresses(netns: str | None = None) -> list[tuple[str, str, int]]:
    """(link, address, prefixlen) for every IPv4 address."""
    out = []
    for d in list_links(netns):
        infos = d.get("addr_info")
        for a in infos if isinstance(infos, list) else []:
            if isinstance(a, dict) and a.get("family") == "inet":
                out.append((str(d.get("ifname")), str(a.get("local")), int(a.get("prefixlen", 32))))
    return out


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def _pids() -> Iterable[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def pids_by_netns(inodes: set[int]) -> dict[int, list[int]]:
    """Map each network-namespace inode in ``inodes`` to the pids inside it."""
    found: dict[int, list[int]] = {i: [] for i in inodes}
    if not inodes:
        return found
    for pid in _pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if st.st_ino in found:
            found[st.st_ino].append(pid)
    return found


def pids_matching(
    *, cmdline: str | None = None, environ: str | None = None, program: str | None = None
) -> list[int]:
    """Pids whose command line contains ``cmdline`` (and, if given, ``program``)
    or whose environment holds the entry ``environ``."""
    me = os.getpid()
    out = []
    cb = cmdline.encode() if cmdline else None
    pb = program.encode() if program else b""
    eb = environ.encode() if environ else None
    for pid in _pids():
        if pid == me:
            continue
        try:
            if cb is not None:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    line = fh.read().replace(b"\0", b" ")
                if cb in line and pb in line:
                    out.append(pid)
                    continue
            if eb is not None:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if eb in fh.read().split(b"\0"):
                        out.append(pid)
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[0:1]
    return state not in ([b"Z"], [b"X"])


def is_stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[0:1] == [b"T"]


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_and_wait(pids: Sequence[int], what: str, timeout: float = 5.0) -> None:
    """SIGKILL ``pids`` and wait until they are gone (or zombies)."""
    if not pids:
        return
    signal_pids(pids, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if alive(p)]
    if left:
        raise LabError(f"{what}: processes {left[:5]} survived SIGKILL for {timeout:g}s")
