"""``shoal lab``: a local lab of real SSH nodes (adapter: parse, call, render).

Values (N, rates, delays, losses) are taken as strings and parsed by
:mod:`shoal.lab.labspec`, so bad input is one ``shoal: error:`` line, not an
argparse usage dump.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .render import JSON_HELP, print_object, print_records

HELP_UP = """\
Bring up N nodes n1..nN. As root each node is a network namespace on a bridge
with no uplink, with its own sshd, hostname, home and /tmp; otherwise (or with
--rootless) each node is an sshd on its own loopback port with its own home.
Afterwards: ssh -F LABDIR/ssh_config n1 (the path is printed)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="a local lab of real SSH nodes on this machine")
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    lsub.required = True

    def add(
        name: str, help: str, handler: object, desc: str | None = None
    ) -> argparse.ArgumentParser:
        q = lsub.add_parser(name, help=help, description=desc or help)
        q.add_argument(
            "--name", default=None, help="lab name (default: the only lab, or 'default')"
        )
        q.add_argument("--json", action="store_true", help=JSON_HELP)
        q.set_defaults(handler=handler)
        return q

    up = add("up", "bring up a lab of N nodes", _up, HELP_UP)
    up.add_argument("n", metavar="N", help="number of nodes (1-1000)")
    up.add_argument("--rate", help="per-node rate limit, each direction (e.g. 100mbit)")
    up.add_argument("--delay", help="per-node one-way delay, each direction (needs netem)")
    up.add_argument("--loss", help="per-node packet loss, each direction (e.g. 1%%)")
    up.add_argument("--controller-rate", help="rate limit of the controller's own link")
    up.add_argument("--controller-delay", help="delay of the controller's own link")
    up.add_argument("--controller-loss", help="packet loss of the controller's own link")
    up.add_argument(
        "--rootless",
        action="store_true",
        help="sshd on loopback ports, no namespaces (automatic when not root)",
    )
    up.add_argument(
        "--site",
        type=int,
        default=0,
        metavar="K",
        help="the last K nodes sit behind a gateway (the node before them), "
        "unreachable from the controller except through it",
    )

    add("down", "remove a lab and everything it made (also after a crash)", _down)
    add("status", "nodes, addresses, state and shaping of a lab", _status)
    lab_list = lsub.add_parser(
        "list", help="labs on this machine", description="labs on this machine"
    )
    lab_list.add_argument("--json", action="store_true", help=JSON_HELP)
    lab_list.set_defaults(handler=_list)
    for name, help in (
        ("kill", "crash NODE: its processes die and its link goes down"),
        ("revive", "boot NODE again after kill: link up, sshd restarted, files kept"),
        ("cut", "take NODE's link down (processes untouched)"),
        ("heal", "bring NODE's link back up after cut"),
    ):
        q = add(name, help, _node_action)
        q.add_argument("node", metavar="NODE", help="a node of the lab (n1, n2, ...)")
    shape = add("shape", "change rate/delay/loss of a node, the controller or all, live", _shape)
    shape.add_argument(
        "target",
        metavar="NODE|controller|all",
        help="one node, the controller's own link, or every node",
    )
    shape.add_argument("--rate", help="rate limit each direction, or 'none'")
    shape.add_argument("--delay", help="one-way delay each direction, or 'none' (needs netem)")
    shape.add_argument("--loss", help="packet loss each direction (0 removes it)")


def _shaping(rate: str | None, delay: str | None, loss: str | None) -> object:
    from shoal.lab.labspec import Shaping, parse_delay, parse_loss, parse_rate

    return Shaping(
        rate_bps=parse_rate(rate) if rate else None,
        delay_us=parse_delay(delay) if delay else None,
        loss_bp=parse_loss(loss) if loss else 0,
    )


def _up(args: argparse.Namespace) -> int:
    from shoal.lab import Lab
    from shoal.lab.labspec import DEFAULT_NAME, LabSpec, Shaping, lab_net, parse_count

    n = parse_count(args.n)
    shaping = _shaping(args.rate, args.delay, args.loss)
    controller = _shaping(args.controller_rate, args.controller_delay, args.controller_loss)
    assert isinstance(shaping, Shaping) and isinstance(controller, Shaping)
    spec = LabSpec(
        n=n,
        name=args.name or DEFAULT_NAME,
        shaping=shaping,
        controller=controller,
        rootless=args.rootless,
        net=lab_net(),
        site=args.site,
    )
    t0 = time.monotonic()
    lab = Lab.up(spec)
    took = time.monotonic() - t0
    st = lab.status()
    if args.json:
        print_object(
            {
                **_status_json(st),
                "seconds": round(took, 3),
                "inventory": str(lab.inventory),
                "ssh_config": str(lab.ssh_config),
            }
        )
        return 0
    where = f"{st.subnet}, controller {st.controller_addr}" if st.subnet else "rootless, 127.0.0.1"
    print(f"lab {lab.name}: {n} nodes up in {took:.1f}s ({where})")
    if not shaping.empty:
        print(f"  node links:      {shaping.describe()}")
    if not controller.empty:
        print(f"  controller link: {controller.describe()}")
    if st.site:
        print(f"  site:       last {args.site} nodes on {st.site}, behind gateway {st.gateway}")
    print(f"  inventory:  {lab.inventory}")
    print(f"  ssh_config: {lab.ssh_config}")
    print(f"  try:        ssh -F {lab.ssh_config} n1 hostname")
    print(f"  remove:     shoal lab down --name {lab.name}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from shoal.lab import Lab
    from shoal.lab.labctl import resolve_name

    name = resolve_name(args.name)
    t0 = time.monotonic()
    rep = Lab.teardown(name)
    took = time.monotonic() - t0
    if args.json:
        print_object(
            {
                "lab": name,
                "namespaces": rep.namespaces,
                "links": list(rep.links),
                "processes": rep.processes,
                "removed_dir": rep.removed_dir,
                "seconds": round(took, 3),
            }
        )
        return 0
    if not rep.anything:
        print(f"lab {name}: nothing to remove")
        return 0
    parts = []
    if rep.namespaces:
        parts.append(f"{rep.namespaces} namespaces")
    if rep.links:
        parts.append(f"links {', '.join(rep.links)}")
    if rep.processes:
        parts.append(f"{rep.processes} processes")
    if rep.removed_dir:
        parts.append("its directory")
    print(f"lab {name}: removed {', '.join(parts)} in {took:.1f}s")
    return 0


def _status(args: argparse.Namespace) -> int:
    from shoal.lab import Lab

    st = Lab.open(args.name).status()
    if args.json:
        print_object(_status_json(st))
        return 0
    head = f"lab {st.name} ({st.mode}, {st.status})"
    if st.subnet:
        head += f" {st.subnet}, controller {st.controller_addr} [{st.controller.describe()}]"
    print(head)
    print(f"  dir: {st.dir}")
    if st.site:
        print(f"  site: {st.site}, reached only through gateway {st.gateway}")
    width = max([4] + [len(n.name) for n in st.nodes])
    print(f"  {'NODE':<{width}}  {'ADDRESS':<21}  {'STATE':<7}  {'SSHD':<7}  SHAPING")
    for n in st.nodes:
        addr = n.addr if n.port == 22 else f"{n.addr}:{n.port}"
        sshd = "running" if n.running else "down"
        print(f"  {n.name:<{width}}  {addr:<21}  {n.state:<7}  {sshd:<7}  {n.shaping.describe()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from shoal.lab import list_labs

    labs = list_labs()
    if args.json:
        print_records(
            {
                "lab": s.name,
                "mode": s.mode,
                "status": s.status,
                "nodes": s.nodes,
                "dir": str(s.dir) if s.dir else None,
            }
            for s in labs
        )
        return 0
    if not labs:
        print("no labs (start one with: shoal lab up N)")
        return 0
    for s in labs:
        where = str(s.dir) if s.dir else "-"
        print(f"{s.name:<12} {s.mode:<9} {s.status:<9} {s.nodes:>5} nodes  {where}")
    return 0


def _node_action(args: argparse.Namespace) -> int:
    from shoal.lab import Lab

    lab = Lab.open(args.name)
    action = args.lab_command
    getattr(lab, action)(args.node)
    past = {"kill": "killed", "revive": "revived", "cut": "cut", "heal": "healed"}[action]
    if args.json:
        print_object({"lab": lab.name, "node": args.node, "action": past})
        return 0
    print(f"lab {lab.name}: {args.node} {past}")
    return 0


def _shape(args: argparse.Namespace) -> int:
    from shoal.lab import Lab, ShapeChange
    from shoal.lab.labspec import is_none_word, parse_delay, parse_loss, parse_rate

    rate, delay, loss = args.rate, args.delay, args.loss
    change = ShapeChange(
        rate_bps=parse_rate(rate) if rate and not is_none_word(rate) else None,
        delay_us=parse_delay(delay) if delay and not is_none_word(delay) else None,
        loss_bp=(0 if is_none_word(loss) else parse_loss(loss)) if loss else None,
        clear_rate=bool(rate) and is_none_word(rate),
        clear_delay=bool(delay) and is_none_word(delay),
    )
    lab = Lab.open(args.name)
    changed = lab.shape(args.target, change)
    st = lab.status()
    if args.json:
        shaping = {n.name: n.shaping.describe() for n in st.nodes if n.name in changed}
        if "controller" in changed:
            shaping["controller"] = st.controller.describe()
        print_object({"lab": lab.name, "changed": list(changed), "shaping": shaping})
        return 0
    if changed == ["controller"]:
        print(f"lab {lab.name}: controller link now {st.controller.describe()}")
    else:
        shown = {n.name: n.shaping.describe() for n in st.nodes if n.name in changed}
        kinds = sorted(set(shown.values()))
        what = args.target if args.target != "all" else f"all {len(changed)} nodes"
        print(f"lab {lab.name}: {what} now {', '.join(kinds)}")
    return 0


def _status_json(st: Any) -> dict[str, Any]:
    """A lab's status as one object, its nodes inside (``lab up``, ``lab status``)."""
    return {
        "lab": st.name,
        "mode": st.mode,
        "status": st.status,
        "subnet": st.subnet,
        "controller": st.controller_addr,
        "controller_shaping": st.controller.describe(),
        "dir": str(st.dir),
        **({"site": st.site, "gateway": st.gateway} if st.site else {}),
        "nodes": [
            {
                "node": n.name,
                "address": n.addr,
                "port": n.port,
                "state": n.state,
                "sshd": "running" if n.running else "down",
                "shaping": n.shaping.describe(),
            }
            for n in st.nodes
        ],
    }
