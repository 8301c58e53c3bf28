"""The root lab: network namespaces, a bridge, veth pairs, tc, nftables, sshd.

Owns everything a lab does to the kernel when run as root.

Topology of lab NAME (slot S gives it the S-th /22 of the lab network)::

    root namespace            switch namespace shl-NAME-sw        node namespaces
    shl-NAME (x.x.x.1/22) ──── ctl ─┐
                                    br0 (no uplink) ── n1 ──── eth0 in shl-NAME-n1 (x.x.x.2)
                                    └─────────────── nK ──── eth0 in shl-NAME-nK

The bridge lives in its own namespace, so the root namespace gains exactly one
interface per lab and the port names (``nK``, ``ctl``) never clash between
labs. Each node runs one sshd inside ``ip netns exec NS unshare --mount --uts``
with its own hostname, its home and ``/tmp`` bound from ``labs/NAME/nodes/nK/``
(persistent across kill/revive) and the lab directory hidden.

* **kill** takes the node's switch port down first (so no FIN or RST escapes,
  as from a crashed host) and then SIGKILLs every process in the namespace;
* **cut** only takes the port down; **heal** / **revive** bring it back;
* shaping is rendered by :mod:`shoal.lab.shaping`.
* a lab with a site (``--site K``) adds bridge ``br1`` and the gateway's
  ``eth1`` on it (:mod:`shoal.lab.site`); its nodes are probed from the gateway.

``destroy`` finds its victims by name pattern and namespace membership, not
only from the state file, so it also cleans up after an interrupted ``up``.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import LabError
from shoal.lab import site, sshd, system
from shoal.lab.labspec import BLOCK_PREFIX, MESH_MAX, Naming, Shaping, mac_of, parse_net
from shoal.lab.labstate import LabNode, LabState
from shoal.lab.shaping import nft_ruleset, tc_lines

GLOBAL_LOCK = Path("/run/lock/shoal-lab.lock")
READY_TIMEOUT = 30.0
#: Processes started in parallel while a lab comes up or revives.
PARALLEL = 16

#: Adds a netem qdisc in a namespace that dies with the command: a probe, not a guess.
NETEM_PROBE = (
    "unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
)  # fmt: skip
REQUIRED_TOOLS = ("ip", "tc", "unshare", "mount", "hostname", "ssh-keygen")


# ---------------------------------------------------------------- prerequisites


def check_prereqs(shaping: Sequence[Shaping]) -> None:
    """Raise a one-line LabError when this machine cannot run a root lab."""
    if os.geteuid() != 0:
        raise LabError("a namespace lab needs root; use --rootless for loopback sshd nodes")
    for tool in REQUIRED_TOOLS:
        if system.which(tool) is None:
            raise LabError(f"lab needs '{tool}', which is not installed (see scripts/setup.sh)")
    if not os.access(sshd.SSHD, os.X_OK):
        raise LabError(f"lab needs {sshd.SSHD} (apt-get install openssh-server)")
    if not os.path.exists(sshd.SFTP_SERVER):
        raise LabError(f"lab needs {sshd.SFTP_SERVER} (apt-get install openssh-server)")
    if any(s.loss_bp for s in shaping) and system.which("nft") is None:
        raise LabError("--loss needs nftables ('nft'), which is not installed")
    if any(s.delay_us for s in shaping):
        check_netem()


_netem_ok: bool | None = None


def check_netem() -> None:
    """Try a netem qdisc in a throwaway namespace; LabError when the kernel lacks it."""
    global _netem_ok
    if _netem_ok is None:
        proc = subprocess.run(
            list(NETEM_PROBE),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        _netem_ok = proc.returncode == 0
        if not _netem_ok:
            reason = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise LabError(
                f"--delay needs the netem qdisc, which this kernel does not have (tc: {reason})"
            )
    if not _netem_ok:
        raise LabError("--delay needs the netem qdisc, which this kernel does not have")


# ---------------------------------------------------------------- discovery


@dataclass
class Leftovers:
    """Kernel objects and processes that belong to a lab, found by name."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.netns or self.links or self.pids)

    def describe(self) -> str:
        parts = []
        if self.netns:
            parts.append(f"{len(self.netns)} namespaces")
        if self.links:
            parts.append(f"links {', '.join(self.links)}")
        if self.pids:
            parts.append(f"{len(self.pids)} processes")
        return ", ".join(parts) or "nothing"


def discover(name: str, labdir: Path | None = None) -> Leftovers:
    """Everything of lab ``name`` in the kernel: namespaces, root link, processes."""
    naming = Naming(name)
    pattern = naming.ns_pattern()
    found = Leftovers(netns=[ns for ns in system.list_netns() if pattern.match(ns)])
    if os.geteuid() == 0 or system.which("ip"):
        try:
            found.links = [ln for ln in system.link_names() if ln == naming.root_link]
        except LabError:
            found.links = []
    inodes = {i for i in (system.netns_inode(ns) for ns in found.netns) if i is not None}
    pids: set[int] = set()
    for group in system.pids_by_netns(inodes).values():
        pids.update(group)
    if labdir is not None:
        # sshd started from this lab's files (rootless listeners); never, say, an
        # editor that has a lab file open
        pids.update(system.pids_matching(cmdline=f"{labdir}/", program="sshd"))
    found.pids = sorted(pids)
    return found


def lab_names_in_kernel() -> list[str]:
    """Names of labs that have a switch namespace (``shl-NAME-sw``)."""
    out = []
    for ns in system.list_netns():
        if ns.startswith("shl-") and ns.endswith("-sw"):
            out.append(ns[len("shl-") : -len("-sw")])
    return sorted(out)


def allocate_slot(net: str) -> int:
    """The lowest /22 of ``net`` with no address in the root namespace."""
    network = parse_net(net)
    used = set()
    for _, addr, _ in system.ipv4_addresses():
        a = ipaddress.IPv4Address(addr)
        if a in network:
            used.add((int(a) - int(network.network_address)) >> (32 - BLOCK_PREFIX))
    slots = 2 ** (BLOCK_PREFIX - network.prefixlen)
    for slot in range(slots):
        if slot not in used:
            return slot
    raise LabError(f"all {slots} lab address blocks of {net} are in use; bring a lab down first")


# ---------------------------------------------------------------- building


def make_home(base: Path, user_pub: str, sub: str = "") -> Path:
    """``base/home`` with the lab's authorized key, and the home sessions get: itself,
    or ``base/home/SUB`` when the lab has an odd home (:attr:`LabSpec.home`)."""
    home = base / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    (home / ".ssh" / "authorized_keys").write_text(user_pub + "\n")
    os.chmod(home / ".ssh" / "authorized_keys", 0o600)
    session = home / sub if sub else home
    session.mkdir(parents=True, exist_ok=True, mode=0o700)
    for rc in (".bashrc", ".profile"):
        (session / rc).touch()
    return session


def make_node_dirs(labdir: Path, names: Sequence[str], user_pub: str, home: str = "") -> None:
    for name in names:
        base = labdir / "nodes" / name
        make_home(base, user_pub, home)
        (base / "tmp").mkdir(exist_ok=True)
        os.chmod(base / "tmp", 0o1777)
        (base / "log").mkdir(exist_ok=True, mode=0o755)


def claim(state: LabState) -> None:
    """Create the controller's veth with the lab's .1 address (reserves the block)."""
    naming = Naming(state.name)
    assert state.subnet is not None and state.controller_addr is not None
    blk = ipaddress.IPv4Network(state.subnet)
    # the switch namespace must exist for the peer; create it here
    system.ip_batch([f"netns add {naming.switch_ns}"], "create the switch namespace")
    system.ip_batch(
        [
            f"link add {naming.root_link} address {mac_of(state.controller_addr)} "
            f"type veth peer name ctl netns {naming.switch_ns}",
            f"addr add {state.controller_addr}/{blk.prefixlen} dev {naming.root_link}",
        ],
        f"create the controller link {naming.root_link}",
    )
    _set_sysctl(f"net/ipv6/conf/{naming.root_link}/disable_ipv6", "1")
    system.ip_batch([f"link set {naming.root_link} up"], f"bring up {naming.root_link}")
    site.add_route(state)


def build(state: LabState, shaping: Shaping, controller: Shaping) -> None:
    """Everything after :func:`claim`: nodes' namespaces, switch, shaping, sshd."""
    naming = Naming(state.name)
    labdir = Path(state.dir)
    assert state.subnet is not None
    blk = ipaddress.IPv4Network(state.subnet)
    system.ip_batch([f"netns add {n.netns}" for n in state.nodes], "create node namespaces")
    _configure_switch(naming.switch_ns)
    sw = ["link add br0 type bridge", "link set br0 up", "link set ctl master br0 up"]
    sw += site.switch_lines(state)
    for n in state.nodes:
        sw.append(
            f"link add {n.name} type veth peer name eth0 address {mac_of(n.addr)} netns {n.netns}"
        )
        sw.append(f"link set {n.name} master {'br1' if n.gateway else 'br0'} up")
    system.ip_batch(sw, f"build the switch in {naming.switch_ns}", netns=naming.switch_ns)
    site.configure_gateway(state)
    system.ip_batch(
        [
            f"neigh replace {n.addr} lladdr {mac_of(n.addr)} dev {naming.root_link} nud permanent"
            for n in state.nodes
            if not n.gateway
        ],
        "add the controller's neighbour entries",
    )
    state.controller = Shaping()
    set_controller_shaping(state, controller)
    for n in state.nodes:
        n.shaping = Shaping()
    set_nodes_shaping(state, state.nodes, shaping)
    start_nodes(state, state.nodes, labdir, blk)


def _set_sysctl(key: str, value: str) -> None:
    try:
        Path("/proc/sys", key).write_text(value)
    except OSError:
        pass  # IPv6 disabled or absent: nothing to turn off


def _configure_switch(netns: str) -> None:
    """No IPv6 in the switch; bridged frames skip the IP firewall hooks (br_netfilter).

    When br_netfilter is loaded, every bridged IPv4 packet also traverses the
    iptables/nft *ip* hooks of the switch namespace: ~2.5 % of the machine's CPU
    in a 16-node push, for no rule (the lab's loss table is bridge-family and
    stays in force). The sysctls are per namespace; absent without br_netfilter.
    """
    bridge_nf = " ".join(
        f"/proc/sys/net/bridge/bridge-nf-call-{t}" for t in ("iptables", "ip6tables", "arptables")
    )
    script = (
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; "
        f"for f in {bridge_nf}; do [ -w $f ] && echo 0 > $f; done; true"
    )
    system.run(["ip", "netns", "exec", netns, "sh", "-c", script], f"configure {netns}")


def start_node(state: LabState, node: LabNode, labdir: Path, blk: ipaddress.IPv4Network) -> int:
    """Boot one node's sshd in fresh mount/UTS namespaces; returns sshd's pid."""
    assert state.controller_addr is not None
    prefixlen = site.SITE_PREFIX if node.gateway else blk.prefixlen
    neighbors = site.neighbors(state, node)
    if neighbors is None:
        neighbors = [(state.controller_addr, mac_of(state.controller_addr))]
        if len(state.nodes) <= MESH_MAX:
            neighbors += [
                (n.addr, mac_of(n.addr))
                for n in state.nodes
                if n.name != node.name and not n.gateway
            ]
    script = sshd.render_node_script_netns(
        node=node.name, addr=node.addr, prefixlen=prefixlen, labdir=labdir, neighbors=neighbors
    )
    assert node.netns is not None
    argv = [
        "ip", "netns", "exec", node.netns,
        "unshare", "--mount", "--uts", "--propagation", "private",
        "sh", "-c", script,
    ]  # fmt: skip
    return system.start_script(
        argv, f"start {node.name} in {node.netns}", cwd=labdir / "nodes" / node.name
    )


def start_nodes(
    state: LabState, nodes: Sequence[LabNode], labdir: Path, blk: ipaddress.IPv4Network
) -> None:
    """Start ``nodes`` in parallel and wait until each sshd sends its banner."""
    with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(nodes)))) as pool:
        pids = list(pool.map(lambda n: start_node(state, n, labdir, blk), nodes))
    for n, pid in zip(nodes, pids, strict=True):
        n.pid = pid
    wait_ready([(n.name, n.addr, n.port) for n in nodes if not n.gateway])
    _wait_site(state, nodes)


def _wait_site(state: LabState, nodes: Sequence[LabNode]) -> None:
    """Site nodes answer only through their gateway: probed from its namespace."""
    late = site.wait_ready(state, nodes, READY_TIMEOUT)
    if late:
        raise LabError(
            f"sshd on {', '.join(late)} did not answer its gateway within {READY_TIMEOUT:g}s "
            "(see labs/NAME/nodes/NODE/log/sshd.log)"
        )


def wait_ready(endpoints: Sequence[tuple[str, str, int]], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every endpoint sends an SSH banner; LabError names the laggards."""
    deadline = time.monotonic() + timeout

    def probe(ep: tuple[str, str, int]) -> bool:
        _, addr, port = ep
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((addr, port), timeout=1.0) as s:
                    s.settimeout(2.0)
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(endpoints)))) as pool:
        ok = list(pool.map(probe, endpoints))
    late = [ep[0] for ep, good in zip(endpoints, ok, strict=True) if not good]
    if late:
        more = f" and {len(late) - 5} more" if len(late) > 5 else ""
        raise LabError(
            f"sshd on {', '.join(late[:5])}{more} did not answer within {timeout:g}s "
            "(see labs/NAME/nodes/NODE/log/sshd.log)"
        )


# ---------------------------------------------------------------- shaping


def set_nodes_shaping(state: LabState, nodes: Sequence[LabNode], new: Shaping) -> None:
    """Apply ``new`` to each node's link (both ends) and update the state."""
    naming = Naming(state.name)
    sw_lines: list[str] = []
    for n in nodes:
        sw_lines += tc_lines(n.name, n.shaping, new)
    system.tc_batch(sw_lines, "shape node links (switch side)", netns=naming.switch_ns)

    def node_side(n: LabNode) -> None:
        assert n.netns is not None
        system.tc_batch(tc_lines("eth0", n.shaping, new), f"shape {n.name}", netns=n.netns)

    with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(nodes)))) as pool:
        list(pool.map(node_side, nodes))
    old_loss = {n.name: n.shaping.loss_bp for n in nodes}
    for n in nodes:
        n.shaping = new
    if any(old_loss.values()) or new.loss_bp:
        apply_loss(state)


def set_controller_shaping(state: LabState, new: Shaping) -> None:
    naming = Naming(state.name)
    old = state.controller
    system.tc_batch(tc_lines(naming.root_link, old, new), "shape the controller link")
    system.tc_batch(
        tc_lines("ctl", old, new), "shape the controller link (switch side)", naming.switch_ns
    )
    state.controller = new
    if old.loss_bp or new.loss_bp:
        apply_loss(state)


def apply_loss(state: LabState) -> None:
    naming = Naming(state.name)
    losses = {n.name: n.shaping.loss_bp for n in state.nodes}
    losses["ctl"] = state.controller.loss_bp
    system.nft_in(naming.switch_ns, nft_ruleset(losses), "set packet loss")


# ---------------------------------------------------------------- node control


def set_port(state: LabState, node: LabNode, up: bool) -> None:
    naming = Naming(state.name)
    system.ip_batch(
        [f"link set {node.name} {'up' if up else 'down'}"],
        f"{'heal' if up else 'cut'} {node.name}",
        netns=naming.switch_ns,
    )


def node_pids(node: LabNode) -> list[int]:
    assert node.netns is not None
    inode = system.netns_inode(node.netns)
    if inode is None:
        raise LabError(f"{node.name}: namespace {node.netns} is gone; run: shoal lab down")
    return system.pids_by_netns({inode})[inode]


def kill_node(state: LabState, node: LabNode) -> None:
    set_port(state, node, up=False)
    system.kill_and_wait(node_pids(node), f"kill {node.name}")
    node.pid = None


def revive_node(state: LabState, node: LabNode) -> None:
    assert state.subnet is not None
    blk = ipaddress.IPv4Network(state.subnet)
    node_pids(node)  # the namespace must still be there
    if not node_running(node):
        node.pid = start_node(state, node, Path(state.dir), blk)
    set_port(state, node, up=True)
    if node.gateway:
        _wait_site(state, [node])
    else:
        wait_ready([(node.name, node.addr, node.port)])


def node_running(node: LabNode) -> bool:
    """The node's sshd is alive — and is still in the node's namespace (pids recycle)."""
    if node.pid is None or node.netns is None or not system.alive(node.pid):
        return False
    try:
        return os.stat(f"/proc/{node.pid}/ns/net").st_ino == system.netns_inode(node.netns)
    except OSError:
        return False


# ---------------------------------------------------------------- teardown


def destroy(name: str, labdir: Path | None) -> Leftovers:
    """Remove every process, namespace and link of lab ``name``; returns what it found."""
    found = discover(name, labdir)
    system.kill_and_wait(found.pids, f"stop processes of lab {name}")
    naming = Naming(name)
    site.remove_route(name)
    if found.links:
        system.run(["ip", "link", "del", naming.root_link], f"delete link {naming.root_link}")
    # nodes before the switch, so the veths die with their peers in one sweep
    order = sorted(found.netns, key=lambda ns: ns.endswith("-sw"))
    if order:
        system.ip_batch([f"netns del {shlex.quote(ns)}" for ns in order], f"delete lab {name}")
    return found
