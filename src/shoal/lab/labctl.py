"""The :class:`Lab` object: bring a lab up, inspect it, change it, take it down.

Owns the life cycle and the rules around it — validation before any change,
one lab per name (``up`` on an existing lab says how to recover), locking, the
state file, the files a lab publishes (inventory, ssh_config, known_hosts) and
the choice between the root backend (:mod:`shoal.lab.netns`) and the rootless
one (:mod:`shoal.lab.rootless`). Never prints; returns typed records that the
CLI renders.

Typical use::

    lab = Lab.up(LabSpec(n=8, name="demo", shaping=Shaping(rate_bps=100_000_000)))
    nodes = lab.nodes()          # shoal.nodes.model.Node records
    lab.kill("n3"); lab.revive("n3")
    Lab.open("demo").down()
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import LabError, UsageError
from shoal.lab import netns, register, rootless, site, sshd, system
from shoal.lab.labspec import (
    DEFAULT_NAME,
    LabSpec,
    Naming,
    ShapeChange,
    Shaping,
    block,
    node_index,
    validate_name,
)
from shoal.lab.labstate import LabNode, LabState, load, locked, save
from shoal.nodes.model import Node
from shoal.paths import labs_dir

INVENTORY = "inventory"
SSH_CONFIG = "ssh_config"
KNOWN_HOSTS = "known_hosts"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    addr: str
    port: int
    state: str  # up | cut | killed
    running: bool  # its sshd is alive (and, rootless, not frozen)
    shaping: Shaping
    pid: int | None = None  # the node's sshd


@dataclass(frozen=True)
class LabStatus:
    name: str
    mode: str
    dir: Path
    status: str
    subnet: str | None
    controller_addr: str | None
    controller: Shaping
    nodes: tuple[NodeStatus, ...]
    #: the site's subnet and its gateway, when the lab has one (:mod:`.site`)
    site: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class TeardownReport:
    """What ``down`` removed (all zero when there was nothing of that lab)."""

    name: str
    namespaces: int
    links: tuple[str, ...]
    processes: int
    removed_dir: bool

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.links or self.processes or self.removed_dir)


@dataclass(frozen=True)
class LabSummary:
    name: str
    mode: str
    status: str  # up | creating | leftover
    nodes: int
    dir: Path | None


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "root")


def _exists_message(name: str, what: str) -> str:
    return f"lab {name} already exists ({what}); to recover run: shoal lab down --name {name}"


def _make_labdir(name: str, labdir: Path) -> None:
    try:
        labdir.mkdir(parents=True, mode=0o700)
    except FileExistsError:  # another 'up' of the same name won the race
        raise LabError(_exists_message(name, f"directory {labdir}")) from None


def _make_keys(name: str, labdir: Path, *, mode: int) -> tuple[Path, str]:
    """The lab's ``etc/`` (made with ``mode``) holding its host key, the user key in
    ``labdir``; the ``etc`` path and the user's public key."""
    etc = labdir / "etc"
    etc.mkdir(mode=mode)
    sshd.generate_keys(etc, labdir, f"shoal-lab-{name}")
    return etc, sshd.public_key(labdir / (sshd.USER_KEY + ".pub"))


def list_labs() -> list[LabSummary]:
    """Labs with a state file under ``labs_dir()``, plus leftovers in the kernel."""
    out: dict[str, LabSummary] = {}
    for d in sorted(p for p in labs_dir().iterdir() if p.is_dir()):
        try:
            st = load(d)
        except LabError:
            st = None
        if st is None:
            out[d.name] = LabSummary(d.name, "?", "leftover", 0, d)
        else:
            out[d.name] = LabSummary(st.name, st.mode, st.status, len(st.nodes), d)
    for name in netns.lab_names_in_kernel():
        if name not in out:
            out[name] = LabSummary(name, "netns", "leftover", 0, None)
    return [out[k] for k in sorted(out)]


def resolve_name(name: str | None) -> str:
    """``name`` if given; else the only lab under this SHOAL_HOME; else ``default``.

    Kernel leftovers of other SHOAL_HOMEs are not candidates: they are listed by
    :func:`list_labs` and removed by ``down --name``, never picked implicitly.
    """
    if name is not None:
        return validate_name(name)
    labs = [s.name for s in list_labs() if s.dir is not None]
    if len(labs) == 1:
        return labs[0]
    if len(labs) > 1:
        if DEFAULT_NAME in labs:
            return DEFAULT_NAME
        raise UsageError(f"there are several labs ({', '.join(labs)}); pass --name NAME")
    return DEFAULT_NAME


class Lab:
    """A running (or half-made) lab, backed by its state file."""

    def __init__(self, state: LabState) -> None:
        self._state = state

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def dir(self) -> Path:
        return Path(self._state.dir)

    @property
    def mode(self) -> str:
        return self._state.mode

    @property
    def rootless(self) -> bool:
        return self._state.mode == "rootless"

    @property
    def ssh_config(self) -> Path:
        return self.dir / SSH_CONFIG

    @property
    def known_hosts(self) -> Path:
        return self.dir / KNOWN_HOSTS

    @property
    def inventory(self) -> Path:
        return self.dir / INVENTORY

    @property
    def identity(self) -> Path:
        return self.dir / sshd.USER_KEY

    @property
    def controller_addr(self) -> str | None:
        return self._state.controller_addr

    def netns_of(self, node: str) -> str:
        """The network namespace of ``node`` (root labs only)."""
        ns = self._node(node).netns
        if ns is None:
            raise LabError(f"{node}: a rootless lab has no network namespaces")
        return ns

    @property
    def switch_netns(self) -> str:
        return Naming(self.name).switch_ns

    def node_dir(self, node: str) -> Path:
        """The node's persistent directory (its home is ``home/`` inside)."""
        return self.dir / "nodes" / self._node(node).name

    def nodes(self) -> list[Node]:
        path = str(self.ssh_config)
        user = "root" if self.mode == "netns" else _user()
        return [
            Node(
                name=n.name,
                host=n.addr,
                user=user,
                port=n.port,
                groups=("lab",),
                attrs={"lab": self.name, **({"gateway": n.gateway} if n.gateway else {})},
                ssh_config=path,
            )
            for n in self._state.nodes
        ]

    def _node(self, name: str) -> LabNode:
        try:
            node_index(name)
        except UsageError:
            raise LabError(
                f"lab {self.name} has no node {name!r} (nodes are n1..n{len(self._state.nodes)})"
            ) from None
        return self._state.node(name)

    # ------------------------------------------------------------ life cycle

    @classmethod
    def up(cls, spec: LabSpec) -> Lab:
        """Bring up the lab ``spec`` asks for; LabError (and nothing made) on refusal."""
        use_rootless = spec.rootless or os.geteuid() != 0
        if use_rootless:
            if spec.site:
                raise LabError("--site needs a root lab (network namespaces)")
            if not spec.shaping.empty or not spec.controller.empty:
                raise LabError(f"shaping {rootless.NEEDS_ROOT}")
            rootless.check_prereqs()
        else:
            netns.check_prereqs([spec.shaping, spec.controller])
        labdir = labs_dir() / spec.name
        if (labdir / "state.json").exists() or labdir.exists():
            raise LabError(_exists_message(spec.name, f"directory {labdir}"))
        if use_rootless:
            return cls._up_rootless(spec, labdir)
        return cls._up_netns(spec, labdir)

    @classmethod
    def _up_netns(cls, spec: LabSpec, labdir: Path) -> Lab:
        naming = Naming(spec.name)
        with locked(netns.GLOBAL_LOCK):
            left = netns.discover(spec.name)
            if not left.empty:
                raise LabError(_exists_message(spec.name, left.describe()))
            slot = netns.allocate_slot(spec.net)
            blk = block(spec.net, slot)
            _make_labdir(spec.name, labdir)
            state = LabState(
                name=spec.name,
                mode="netns",
                dir=str(labdir),
                created=time.time(),
                subnet=str(blk),
                controller_addr=str(Naming.controller_addr(blk)),
                nodes=[
                    LabNode(
                        name=n,
                        addr=str(Naming.node_addr(blk, i)),
                        port=22,
                        netns=naming.node_ns(n),
                    )
                    for i, n in enumerate(Naming.node_names(spec.n), start=1)
                ],
            )
            state.site = site.place(state.nodes, spec.site, blk)
            save(state)
            try:
                netns.claim(state)
            except BaseException:
                cls._cleanup(spec.name, labdir)
                raise
        try:
            etc, user_pub = _make_keys(spec.name, labdir, mode=0o755)
            (etc / "sshd_config").write_text(sshd.render_sshd_config_netns(spec.home))
            (etc / "ssh_config").write_text("Host *\n  SendEnv LANG LC_*\n")
            netns.make_node_dirs(labdir, [n.name for n in state.nodes], user_pub, spec.home)
            netns.build(state, spec.shaping, spec.controller)
            lab = cls._finish_up(state)
        except BaseException:
            cls._cleanup(spec.name, labdir)
            raise
        return lab

    @classmethod
    def _up_rootless(cls, spec: LabSpec, labdir: Path) -> Lab:
        _make_labdir(spec.name, labdir)
        try:
            ports = rootless.free_ports(spec.n)
            state = LabState(
                name=spec.name,
                mode="rootless",
                dir=str(labdir),
                created=time.time(),
                nodes=[
                    LabNode(name=n, addr="127.0.0.1", port=p)
                    for n, p in zip(Naming.node_names(spec.n), ports, strict=True)
                ],
            )
            save(state)
            _, user_pub = _make_keys(spec.name, labdir, mode=0o700)
            rootless.build(state, user_pub, spec.home)
            lab = cls._finish_up(state)
        except BaseException:
            cls._cleanup(spec.name, labdir)
            raise
        return lab

    @classmethod
    def _finish_up(cls, state: LabState) -> Lab:
        """Write the lab's client files, register its nodes, mark it up."""
        lab = cls(state)
        lab._publish()
        register.register(lab.nodes())
        state.status = "up"
        save(state)
        return lab

    @staticmethod
    def _cleanup(name: str, labdir: Path) -> None:
        """Best-effort removal after a failed ``up`` (the original error wins)."""
        try:
            Lab.teardown(name)
        except Exception:
            pass

    def _publish(self) -> None:
        """Write inventory, ssh_config and known_hosts for the lab's nodes."""
        eps = [sshd.Endpoint(n.name, n.addr, n.port) for n in self._state.nodes]
        host_pub = sshd.public_key(self.dir / "etc" / (sshd.HOST_KEY + ".pub"))
        user = "root" if self.mode == "netns" else _user()
        sshd.write_private(self.known_hosts, sshd.render_known_hosts(eps, host_pub), 0o644)
        sshd.write_private(self.ssh_config, sshd.render_ssh_config(eps, self.dir, user), 0o644)
        sshd.write_private(
            self.inventory, sshd.render_inventory([n.name for n in self._state.nodes]), 0o644
        )

    @classmethod
    def open(cls, name: str | None = None) -> Lab:
        """The existing lab ``name`` (see :func:`resolve_name`); LabError if none."""
        name = resolve_name(name)
        labdir = labs_dir() / name
        st = load(labdir)
        if st is None:
            left = netns.discover(name) if os.path.isdir(system.NETNS_DIR) else None
            if left is not None and not left.empty:
                raise LabError(
                    f"lab {name} has no state file but {left.describe()} remain; "
                    f"run: shoal lab down --name {name}"
                )
            raise LabError(f"no lab named {name} (start one with: shoal lab up N --name {name})")
        if st.status != "up":
            raise LabError(
                f"lab {name} is half made (its 'up' was interrupted); "
                f"run: shoal lab down --name {name}"
            )
        return cls(st)

    @staticmethod
    def teardown(name: str) -> TeardownReport:
        """Remove everything of lab ``name``, with or without a state file."""
        validate_name(name)
        labdir = labs_dir() / name
        st = None
        try:
            st = load(labdir)
        except LabError:
            st = None
        namespaces = 0
        links: tuple[str, ...] = ()
        procs = 0
        if st is None or st.mode == "netns":
            if os.geteuid() == 0:
                found = netns.destroy(name, labdir if labdir.exists() else None)
                namespaces, links, procs = len(found.netns), tuple(found.links), len(found.pids)
            elif netns.discover(name).netns:
                raise LabError(f"lab {name} has network namespaces; removing them needs root")
        if labdir.exists() and (st is None or st.mode == "rootless"):
            procs += len(rootless.destroy(name, labdir))
        register.unregister(labdir / SSH_CONFIG)
        removed = labdir.exists()
        if removed:
            shutil.rmtree(labdir)
        return TeardownReport(name, namespaces, links, procs, removed)

    def down(self) -> TeardownReport:
        return Lab.teardown(self.name)

    # ------------------------------------------------------------ inspection

    def status(self) -> LabStatus:
        fresh = load(self.dir)
        if fresh is not None:
            self._state = fresh
        st = self._state
        check = rootless.node_running if self.rootless else netns.node_running
        nodes = tuple(
            NodeStatus(n.name, n.addr, n.port, n.state, check(n), n.shaping, n.pid)
            for n in st.nodes
        )
        return LabStatus(
            name=st.name,
            mode=st.mode,
            dir=self.dir,
            status=st.status,
            subnet=st.subnet,
            controller_addr=st.controller_addr,
            controller=st.controller,
            nodes=nodes,
            site=st.site,
            gateway=next((n.gateway for n in st.nodes if n.gateway), None),
        )

    # ------------------------------------------------------------ changes

    def _mutate(self) -> LabState:
        st = load(self.dir)
        if st is None:
            raise LabError(f"lab {self.name} is gone (no state in {self.dir})")
        self._state = st
        return st

    @contextmanager
    def _changing(self, node: str) -> Iterator[tuple[LabState, LabNode]]:
        """The lab's state and ``node``'s, under the lab lock; saved on the way out."""
        self._node(node)
        with locked(self.dir / ".lock"):
            st = self._mutate()
            yield st, self._node(node)
            save(st)

    def kill(self, node: str) -> None:
        """Crash ``node``: link down, every process killed (rootless: emulated)."""
        with self._changing(node) as (st, n):
            if n.state != "killed":
                (rootless.kill_node if self.rootless else netns.kill_node)(st, n)
                n.state = "killed"

    def revive(self, node: str) -> None:
        """Boot ``node`` again: sshd restarted, link up, its files still there."""
        with self._changing(node) as (st, n):
            (rootless.revive_node if self.rootless else netns.revive_node)(st, n)
            n.state = "up"

    def _require_root(self, what: str) -> None:
        if self.rootless:
            raise LabError(f"{what} {rootless.NEEDS_ROOT}")

    def cut(self, node: str) -> None:
        """Take ``node``'s link down; its processes keep running."""
        refusal = f"{node} is killed (its link is already down)"
        self._set_link(node, up=False, command="cut", refusal=refusal)

    def heal(self, node: str) -> None:
        """Bring ``node``'s link back up after :meth:`cut`."""
        refusal = f"{node} is killed; bring it back with: shoal lab revive {node}"
        self._set_link(node, up=True, command="heal", refusal=refusal)

    def _set_link(self, node: str, *, up: bool, command: str, refusal: str) -> None:
        """Switch ``node``'s link up or down (state ``up`` or ``cut``); LabError(``refusal``)
        for a killed node."""
        self._require_root(command)
        target = "up" if up else "cut"
        with self._changing(node) as (st, n):
            if n.state == "killed":
                raise LabError(refusal)
            if n.state != target:
                netns.set_port(st, n, up=up)
                n.state = target

    def shape(self, target: str, change: ShapeChange) -> list[str]:
        """Change link conditions live of ``target``: a node, ``controller`` or ``all``.

        Returns the names of the links changed.
        """
        self._require_root("shaping")
        if change.empty:
            raise UsageError("shape needs at least one of --rate, --delay, --loss")
        if target not in ("all", "controller"):
            self._node(target)
        if change.delay_us is not None:
            netns.check_netem()
        if change.loss_bp and system.which("nft") is None:
            raise LabError("--loss needs nftables ('nft'), which is not installed")
        with locked(self.dir / ".lock"):
            st = self._mutate()
            if target == "controller":
                netns.set_controller_shaping(st, change.apply(st.controller))
                changed = ["controller"]
            else:
                nodes = st.nodes if target == "all" else [self._node(target)]
                by_new: dict[Shaping, list[LabNode]] = {}
                for n in nodes:
                    by_new.setdefault(change.apply(n.shaping), []).append(n)
                for new, group in by_new.items():
                    netns.set_nodes_shaping(st, group, new)
                changed = [n.name for n in nodes]
            save(st)
        return changed
