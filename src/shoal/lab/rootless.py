"""The rootless lab: one sshd per node on its own loopback port, no namespaces.

Owns the fallback used when Shoal does not run as root (or with ``--rootless``).
Each node is an sshd on ``127.0.0.1:PORT`` (ports chosen by the kernel) with
its own config, its own authorized_keys and its own home directory under
``labs/NAME/nodes/nK/home``: ``SetEnv HOME=...`` makes sessions read the
node's (empty) ``.bashrc`` and ``ForceCommand`` starts every command, shell
and sftp session in that home. The same ssh_config, known_hosts and inventory
are written as for a root lab.

What cannot work without root says so (see :data:`NEEDS_ROOT`): shaping,
cut/heal, per-node hostnames and a private ``/tmp``. ``kill`` is emulated:
every process of the node (found by the ``SHOAL_LAB_NODE`` tag sshd puts in
their environment, so also daemons that left their session) is SIGKILLed and
the node's listening sshd is SIGSTOPped, so new connections hang like those to
a crashed host; ``revive`` SIGCONTs it (connections queued meanwhile are then
served).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shoal.errors import LabError
from shoal.lab import sshd, system
from shoal.lab.labstate import LabNode, LabState
from shoal.lab.netns import PARALLEL, make_home, wait_ready

NEEDS_ROOT = "needs root (network namespaces); this lab is rootless"


def check_prereqs() -> None:
    for tool in ("ssh-keygen",):
        if system.which(tool) is None:
            raise LabError(f"lab needs '{tool}', which is not installed (see scripts/setup.sh)")
    if not os.access(sshd.SSHD, os.X_OK):
        raise LabError(f"lab needs {sshd.SSHD} (apt-get install openssh-server)")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports the kernel says are free right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def lab_ident(name: str, labdir: Path) -> str:
    """``NAME.HASH``: the lab's name plus a digest of its directory, so labs of
    the same name under two ``SHOAL_HOME``s never claim each other's processes."""
    digest = hashlib.sha1(str(labdir).encode()).hexdigest()[:8]
    return f"{name}.{digest}"


def node_tag(ident: str, node: str) -> str:
    return f"{sshd.NODE_TAG}={ident}/{node}"


def make_node(labdir: Path, lab: str, node: LabNode, user_pub: str, home: str = "") -> None:
    base = labdir / "nodes" / node.name
    config = sshd.render_sshd_config_rootless(
        port=node.port,
        host_key=labdir / "etc" / sshd.HOST_KEY,
        home=make_home(base, user_pub, home),
        lab=lab_ident(lab, labdir),
        node=node.name,
        auth_keys=base / "home" / ".ssh" / "authorized_keys",
    )
    sshd.write_private(base / "sshd_config", config, 0o600)


def start_node(labdir: Path, node: LabNode) -> int:
    base = labdir / "nodes" / node.name
    script = sshd.render_node_script_rootless(config=base / "sshd_config", log=base / "sshd.log")
    return system.start_script(["sh", "-c", script], f"start {node.name}")


def start_nodes(labdir: Path, nodes: Sequence[LabNode]) -> None:
    with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(nodes)))) as pool:
        pids = list(pool.map(lambda n: start_node(labdir, n), nodes))
    for n, pid in zip(nodes, pids, strict=True):
        n.pid = pid
    try:
        wait_ready([(n.name, n.addr, n.port) for n in nodes])
    except LabError as exc:
        raise LabError(f"{exc} (rootless: a port may have been taken meanwhile)") from None


def build(state: LabState, user_pub: str, home: str = "") -> None:
    labdir = Path(state.dir)
    for n in state.nodes:
        make_node(labdir, state.name, n, user_pub, home)
    start_nodes(labdir, state.nodes)


def session_pids(state: LabState, node: LabNode) -> list[int]:
    """Every process started through the node's sshd (tagged in its environment)."""
    ident = lab_ident(state.name, Path(state.dir))
    return system.pids_matching(environ=node_tag(ident, node.name))


def kill_node(state: LabState, node: LabNode) -> None:
    if node.pid is not None and _ours(node):
        system.signal_pids([node.pid], signal.SIGSTOP)
    system.kill_and_wait(session_pids(state, node), f"kill {node.name}")


def revive_node(state: LabState, node: LabNode) -> None:
    labdir = Path(state.dir)
    if node.pid is not None and _ours(node):
        system.signal_pids([node.pid], signal.SIGCONT)
    else:
        node.pid = start_node(labdir, node)
    wait_ready([(node.name, node.addr, node.port)])


def node_running(node: LabNode) -> bool:
    """The node's sshd is alive, not frozen by kill, and still ours (pids recycle)."""
    return node.pid is not None and _ours(node) and not system.is_stopped(node.pid)


def _ours(node: LabNode) -> bool:
    """``node.pid`` is alive and is this node's sshd."""
    if node.pid is None or not system.alive(node.pid):
        return False
    try:
        with open(f"/proc/{node.pid}/cmdline", "rb") as fh:
            return f"/nodes/{node.name}/sshd_config".encode() in fh.read()
    except OSError:
        return False


def discover(name: str, labdir: Path) -> list[int]:
    """Processes of a rootless lab: sshd listeners (by config path) and sessions (by tag)."""
    pids = set(system.pids_matching(cmdline=f"{labdir}/nodes/", program="sshd"))
    tag = f"{sshd.NODE_TAG}={lab_ident(name, labdir)}/".encode()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if any(v.startswith(tag) for v in fh.read().split(b"\0")):
                    pids.add(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def destroy(name: str, labdir: Path) -> list[int]:
    pids = discover(name, labdir)
    # stopped processes must be continued to die promptly on some kernels
    system.signal_pids(pids, signal.SIGCONT)
    system.kill_and_wait(pids, f"stop processes of lab {name}")
    return pids
