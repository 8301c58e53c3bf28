"""CLI adapter for ``shoal nodes``, ``shoal select``, ``shoal plan`` and ``shoal facts``.

Parses arguments, calls ``shoal.nodes``, renders text or ``--json``. Library
modules are imported inside the handlers so ``shoal --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from shoal.cli.common import (
    add_hosts_options,
    add_link_options,
    add_select_option,
    add_target_options,
    adhoc_of,
)
from shoal.cli.render import JSON_HELP, ago, print_object, print_records, print_table
from shoal.nodes.model import Node
from shoal.numeric import number


def _node_json(node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "host": node.host,
        "address": node.address,
        "user": node.user,
        "port": node.port,
        "groups": list(node.groups),
        "attrs": dict(node.attrs),
        "ssh_config": node.ssh_config,
        "identity_file": node.identity_file,
        "become": node.become,
        "python": node.python,
        "ssh_options": list(node.ssh_options),
    }


def _named(record: dict[str, Any], key: str = "node") -> dict[str, Any]:
    """``record`` with its ``name`` under ``key`` first (the JSON convention: ``node``)."""
    rest = {k: v for k, v in record.items() if k != "name"}
    return {key: record["name"], **rest}


def _parse_attrs(items: Sequence[str] | None) -> dict[str, Any]:
    from shoal.errors import UsageError
    from shoal.nodes.importers import typed

    attrs: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--attr expects KEY=VALUE, got {item!r}")
        attrs[key] = typed(value)
    return attrs


# --- nodes ---------------------------------------------------------------------


def cmd_nodes_list(args: argparse.Namespace) -> int:
    from shoal.nodes import health
    from shoal.nodes.select import resolve

    nodes = resolve(args.select, adhoc=adhoc_of(args))
    failed = {f.name for f in health.failures()}
    if args.json:
        print_records(_named({**_node_json(n), "failed": n.name in failed}) for n in nodes)
        return 0
    rows = [
        (
            n.name,
            n.address if n.host else "",
            n.user or "",
            str(n.port or ""),
            ",".join(n.groups),
            "failed" if n.name in failed else "",
        )
        for n in nodes
    ]
    print_table(rows, ("NAME", "HOST", "USER", "PORT", "GROUPS", "STATE"))
    print(f"{len(nodes)} nodes")
    return 0


def cmd_nodes_add(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from shoal.errors import UsageError
    from shoal.nodes.importers import parse_plain
    from shoal.nodes.inventory import import_nodes

    nodes: list[Node] = []
    for spec in args.spec:
        nodes.extend(parse_plain(spec, "argument"))
    if args.name:
        if len(nodes) != 1:
            raise UsageError("--name needs exactly one node")
        nodes = [replace(nodes[0], name=args.name, host=nodes[0].host or nodes[0].name)]
    attrs = _parse_attrs(args.attr)
    nodes = [
        replace(
            n,
            groups=tuple(sorted({*n.groups, *(args.group or ())})),
            attrs={**n.attrs, **attrs},
            user=args.user or n.user,
            port=args.port or n.port,
            ssh_config=args.ssh_config or n.ssh_config,
        )
        for n in nodes
    ]
    report = import_nodes(nodes)
    if args.json:
        print_object({"added": list(report.added), "updated": list(report.updated)})
        return 0
    print(f"added {len(report.added)}, updated {len(report.updated)}")
    return 0


def cmd_nodes_rm(args: argparse.Namespace) -> int:
    from shoal.nodes.inventory import remove_nodes
    from shoal.nodes.nodeset import fold
    from shoal.nodes.select import resolve

    names = [n.name for n in resolve(args.expr)]
    gone = remove_nodes(names)
    if args.json:
        print_object({"removed": list(gone)})
        return 0
    print(f"removed {len(gone)}: {fold(gone)}")
    return 0


def _refused_ssh_options(nodes: Sequence[Node], source: str) -> list[str]:
    """One warning per stored ssh option Shoal will refuse at connect (Ansible's
    ``-o StrictHostKeyChecking=no``, a ProxyCommand), the hosts folded: the import
    keeps them, as read, and every connection to those hosts fails until they change."""
    from shoal.errors import UsageError
    from shoal.nodes.nodeset import fold
    from shoal.transport.sshconfig import parse_option

    refused: dict[str, tuple[str, list[str]]] = {}
    for node in nodes:
        for option in node.ssh_options:
            try:
                parse_option(option)
            except UsageError as exc:
                refused.setdefault(option, (str(exc), []))[1].append(node.name)
    return [
        f"{source}: {fold(hosts)}: {why} (stored as read: connecting there fails until it is "
        "changed)"
        for why, hosts in refused.values()
    ]


def cmd_nodes_import(args: argparse.Namespace) -> int:
    import sys

    from shoal.nodes.importers import parse_inventory, read_inventory, with_group
    from shoal.nodes.inventory import import_nodes

    if args.file == "-":  # ansible-inventory --list | shoal nodes import -
        inv = parse_inventory(sys.stdin.read(), "<stdin>", args.format)
    else:
        inv = read_inventory(args.file, args.format)
    for warning in [*inv.warnings, *_refused_ssh_options(inv.nodes, args.file)]:
        print(f"warning: {warning}", file=sys.stderr)
    nodes = with_group(inv.nodes, args.group) if args.group and not args.replace else inv.nodes
    replace_group = args.group if args.replace else None
    report = import_nodes(nodes, replace_group=replace_group, group_vars=inv.group_vars)
    if args.json:
        print_object(
            {
                "added": list(report.added),
                "updated": list(report.updated),
                "removed": list(report.removed),
                "groups": list(report.groups),
            }
        )
        return 0
    print(
        f"imported {len(inv.nodes)} nodes from {args.file}: {len(report.added)} added, "
        f"{len(report.updated)} updated, {len(report.removed)} removed; "
        f"groups: {', '.join(report.groups) or '-'}"
    )
    return 0


def cmd_nodes_show(args: argparse.Namespace) -> int:
    from shoal.nodes import facts, health
    from shoal.nodes.select import resolve

    nodes = resolve(args.name)
    failed = {f.name: f for f in health.failures()}
    stored = facts.load_facts([n.name for n in nodes])
    out = []
    for n in nodes:
        item = _node_json(n)
        f = failed.get(n.name)
        item["failed"] = None if f is None else {"reason": f.reason, "since": f.since}
        rec = stored.get(n.name)
        item["facts"] = None if rec is None else facts.as_json(rec)
        out.append(_named(item))
    if args.json:
        print_records(out)
        return 0
    now = time.time()
    for i, n in enumerate(nodes):
        if i:
            print()
        print(f"{n.name}")
        print(f"  address   {n.address}" + (f":{n.port}" if n.port else ""))
        print(f"  user      {n.user or '-'}")
        print(f"  groups    {', '.join(n.groups) or '-'}")
        if n.ssh_config:
            print(f"  ssh       {n.ssh_config}")
        if n.identity_file:
            print(f"  key       {n.identity_file}")
        if n.become:
            print("  become    sudo -n (shoal run)")
        if n.python:
            print(f"  python    {n.python}")
        for option in n.ssh_options:
            print(f"  -o        {option}")
        for k, v in sorted(n.attrs.items()):
            print(f"  attr      {k}={v}")
        f = failed.get(n.name)
        print(f"  state     {'failed: ' + f.reason if f else 'healthy'}")
        rec = stored.get(n.name)
        if rec is not None:
            stale = " (stale)" if rec.stale() else ""
            print(f"  facts     gathered {ago(now - rec.gathered)}{stale}, rtt {rec.rtt_ms} ms")
            for k, v in rec.facts.items():
                print(f"    {k:<16} {v}")
    return 0


def cmd_nodes_groups(args: argparse.Namespace) -> int:
    from shoal.nodes import inventory
    from shoal.state import State

    with State() as st:
        groups = inventory.groups(st)
    if args.json:
        print_records({"group": g.name, "size": g.size, "vars": g.vars} for g in groups)
        return 0
    print_table([(g.name, str(g.size)) for g in groups], ("GROUP", "NODES"))
    return 0


def cmd_nodes_failed(args: argparse.Namespace) -> int:
    from shoal.cli import viaservice
    from shoal.nodes import health

    items = viaservice.failures(args)
    items = health.failures() if items is None else items
    if args.json:
        print_records(
            {"node": f.name, "reason": f.reason, "since": f.since, "updated": f.updated}
            for f in items
        )
        return 0
    now = time.time()
    rows = [(f.name, ago(now - f.since), ago(now - f.updated), f.reason) for f in items]
    print_table(rows, ("NAME", "SINCE", "LAST", "REASON"))
    print(f"{len(items)} failed")
    return 0


def cmd_nodes_clear_failed(args: argparse.Namespace) -> int:
    from shoal.nodes import health
    from shoal.nodes.nodeset import fold
    from shoal.nodes.select import select

    if args.select is None:
        cleared = health.clear_failed()
    else:
        cleared = health.clear_failed(list(select(args.select)))
    if args.json:
        print_object({"cleared": list(cleared)})
        return 0
    print(f"cleared {len(cleared)}" + (f": {fold(cleared)}" if cleared else ""))
    return 0


# --- select / plan -------------------------------------------------------------------


def cmd_select(args: argparse.Namespace) -> int:
    from shoal.nodes.nodeset import fold
    from shoal.nodes.select import resolve

    nodes = resolve(args.expr, adhoc=adhoc_of(args))
    names = [n.name for n in nodes]
    if args.json:
        print_object(
            {"expression": args.expr, "nodeset": fold(names), "count": len(names), "nodes": names}
        )
        return 0
    print(fold(names))
    print(f"{len(names)} nodes")
    return 0


def cmd_plan_set(args: argparse.Namespace) -> int:
    from shoal.nodes.plans import set_plan

    plan = set_plan(args.name, args.expr)
    if args.json:
        print_object({"plan": plan.name, "expr": plan.expr})
        return 0
    print(f"plan %{plan.name} = {plan.expr}")
    return 0


def cmd_plan_list(args: argparse.Namespace) -> int:
    from shoal.nodes.plans import list_plans

    items = list_plans()
    if args.json:
        print_records({"plan": p.name, "expr": p.expr, "updated": p.updated} for p in items)
        return 0
    print_table([(p.name, p.expr) for p in items], ("PLAN", "EXPRESSION"))
    return 0


def cmd_plan_show(args: argparse.Namespace) -> int:
    from shoal.nodes.nodeset import fold
    from shoal.nodes.plans import get_plan
    from shoal.nodes.select import select

    plan = get_plan(args.name)
    names = select(f"%{plan.name}")
    if args.json:
        print_object(
            {
                "plan": plan.name,
                "expr": plan.expr,
                "nodeset": fold(names),
                "count": len(names),
                "nodes": list(names),
            }
        )
        return 0
    print(f"%{plan.name} = {plan.expr}")
    print(f"{fold(names) or '(empty)'}")
    print(f"{len(names)} nodes now")
    return 0


def cmd_plan_rm(args: argparse.Namespace) -> int:
    from shoal.nodes.plans import remove_plan

    remove_plan(args.name)
    if args.json:
        print_object({"removed": args.name})
        return 0
    print(f"removed plan %{args.name}")
    return 0


# --- facts -----------------------------------------------------------------------


def _max_age(args: argparse.Namespace) -> float:
    from shoal.nodes.facts import default_max_age

    return args.max_age if args.max_age is not None else default_max_age()


def cmd_facts_refresh(args: argparse.Namespace) -> int:
    from shoal.cli.common import selected_nodes
    from shoal.fanout import RunOptions, factgather

    nodes = selected_nodes(args)
    kwargs: dict[str, Any] = {"connect_timeout": args.connect_timeout, "host_keys": args.host_keys}
    if args.parallel is not None:
        kwargs["parallel"] = args.parallel
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    options = RunOptions(**kwargs)
    from shoal.cli.render import NodeProgress
    from shoal.nodes import health

    progress = NodeProgress(len(nodes), not (args.json or args.no_progress))
    try:
        gathered = factgather.gather(nodes, options=options, on_result=progress.update)
    finally:
        progress.close()
    health.record(gathered, health.Policy.OUTCOME)
    report = factgather.store(gathered, None)
    if args.json:
        print_records(_refresh_records(gathered, report))
    else:
        _print_facts(list(report.refreshed), _max_age(args))
        for name, reason in report.failed.items():
            print(f"{name}: failed: {reason}")
        print(f"{len(report.refreshed)} refreshed, {len(report.failed)} failed")
    from shoal.cli.exitcodes import FAILED, for_results

    status = for_results(gathered)
    return status or (FAILED if report.failed else 0)


def _refresh_records(gathered: Any, report: Any) -> list[dict[str, Any]]:
    """One record per node, in selection order: its new facts, or why it has none."""
    from shoal.nodes import facts

    refreshed = {r.name: r for r in report.refreshed}
    out = []
    for r in gathered:
        rec = refreshed.get(r.node)
        if rec is not None:
            out.append({"node": r.node, "ok": True, "status": "ok", **_named(facts.as_json(rec))})
            continue
        kind = r.kind if not r.ok else "failed"
        reason = report.failed.get(r.node, r.reason)
        out.append({"node": r.node, "ok": False, "status": kind, "error": reason})
    return out


def _print_facts(records: list[Any], max_age: float) -> None:
    now = time.time()
    rows = []
    for r in records:
        f = r.facts
        rows.append(
            (
                r.name,
                str(f.get("os", f.get("os_id", "?"))),
                str(f.get("kernel", "?")),
                str(f.get("cpus", "?")),
                str(f.get("mem_total_mb", "?")),
                str(f.get("disk_free_gb", "?")),
                str(f.get("load1", "?")),
                str(f.get("python_version", "-")),
                "" if r.rtt_ms is None else f"{r.rtt_ms:.0f}",
                ago(now - r.gathered) + (" STALE" if r.stale(max_age, now) else ""),
            )
        )
    header = ("NAME", "OS", "KERNEL", "CPUS", "MEM_MB", "DISK_GB", "LOAD1", "PYTHON", "RTT_MS")
    print_table(rows, (*header, "GATHERED"))


def cmd_facts_show(args: argparse.Namespace) -> int:
    from shoal.nodes import facts
    from shoal.nodes.select import resolve

    names = [n.name for n in resolve(args.select, adhoc=adhoc_of(args))]
    records = facts.load_facts(names)
    max_age = _max_age(args)
    if args.json:
        print_records(_named(facts.as_json(r, max_age)) for r in records.values())
        return 0
    _print_facts(list(records.values()), max_age)
    missing = len(names) - len(records)
    stale = sum(1 for r in records.values() if r.stale(max_age))
    print(f"{len(records)} with facts ({stale} stale), {missing} never gathered")
    return 0


# --- registration ------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_nodes(sub)
    p = sub.add_parser(
        "select",
        help="evaluate a selection: compact node set and count",
        description="Evaluate a selection expression against the inventory and print the "
        "nodes it names as a folded node set (n[1-4,7]) and their count; nothing is "
        "contacted. See README 'Selecting nodes'.",
    )
    p.add_argument("expr", metavar="EXPR", help="the selection expression, e.g. '@web - failed'")
    add_hosts_options(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_select)
    _register_plan(sub)
    _register_facts(sub)


def _register_nodes(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nodes = sub.add_parser("nodes", help="the inventory: list, add, rm, import, show, failed")
    nsub = nodes.add_subparsers(dest="nodes_command", metavar="ACTION")
    nsub.required = True

    p = nsub.add_parser("list", help="list nodes")
    add_select_option(p)
    add_hosts_options(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_list)

    p = nsub.add_parser("add", help="add nodes: [user@]host[:port] (host may be n[1-4])")
    p.add_argument(
        "spec", nargs="+", metavar="[USER@]HOST[:PORT]", help="hosts to add (ranges: n[1-4])"
    )
    p.add_argument("--name", help="inventory name (default: the host)")
    p.add_argument("--user", help="SSH user for these nodes (default: ssh_config's or yours)")
    p.add_argument("--port", type=int, help="SSH port for these nodes (default 22)")
    p.add_argument("-g", "--group", action="append", help="add to group (repeatable)")
    p.add_argument("-a", "--attr", action="append", metavar="KEY=VALUE", help="attribute")
    p.add_argument("--ssh-config", help="extra ssh_config file for these nodes")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_add)

    p = nsub.add_parser("rm", help="remove the nodes a selection names")
    p.add_argument("expr", metavar="EXPR", help="selection of the nodes to remove")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_rm)

    p = nsub.add_parser(
        "import",
        help="import a node list, an Ansible INI/YAML inventory or ansible-inventory --list JSON",
    )
    p.add_argument("file", help="the inventory file; - reads standard input")
    p.add_argument(
        "-f",
        "--format",
        default="auto",
        choices=("auto", "list", "ini", "yaml", "json"),
        help="the file's format (default: from its name and content)",
    )
    p.add_argument("-g", "--group", help="also put every imported node in this group")
    p.add_argument(
        "--replace",
        action="store_true",
        help="with --group: the group becomes exactly this file's nodes (others are deleted)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_import)

    p = nsub.add_parser(
        "show",
        help="one node (or a selection) in detail, with facts",
        description="Show each selected node in detail: address, user, groups, attributes, "
        "whether it is in the failed set (and why), and its stored facts with their age.",
    )
    p.add_argument("name", metavar="NAME_OR_EXPR", help="a node name or a selection expression")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_show)

    p = nsub.add_parser("groups", help="list groups and their sizes")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_groups)

    p = nsub.add_parser("failed", help="the failed set, with reasons and times")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_failed)

    p = nsub.add_parser("clear-failed", help="forget failures (all, or those -s selects)")
    add_select_option(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_nodes_clear_failed)


def _register_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser("plan", help="named selections evaluated when used (%%NAME)")
    psub = plan.add_subparsers(dest="plan_command", metavar="ACTION")
    psub.required = True
    p = psub.add_parser("set", help="store a plan")
    p.add_argument("name", help="the plan's name (used as %%NAME)")
    p.add_argument("expr", metavar="EXPR", help="the selection it stands for")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_plan_set)
    p = psub.add_parser("list", help="list plans")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_plan_list)
    p = psub.add_parser("show", help="a plan and what it selects now")
    p.add_argument("name", help="the plan's name")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_plan_show)
    p = psub.add_parser("rm", help="remove a plan")
    p.add_argument("name", help="the plan's name")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_plan_rm)


def _register_facts(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    facts = sub.add_parser("facts", help="gather and show node facts (OS, CPUs, memory, disk)")
    fsub = facts.add_subparsers(dest="facts_command", metavar="ACTION")
    fsub.required = True
    p = fsub.add_parser("refresh", help="gather facts over SSH, in parallel")
    add_select_option(p)
    add_target_options(p)
    p.add_argument("-p", "--parallel", type=int, help="connections at once")
    p.add_argument("--timeout", type=number, help="seconds per node")
    add_link_options(p)
    p.add_argument("--max-age", type=number, help="seconds before facts count as stale")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    p.set_defaults(handler=cmd_facts_refresh)
    p = fsub.add_parser("show", help="stored facts, stale ones marked")
    add_select_option(p)
    add_hosts_options(p)
    p.add_argument("--max-age", type=number, help="seconds before facts count as stale")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_facts_show)
