"""``shoal audit PATH... [--repair]``: files compared across nodes (:mod:`shoal.ops.audit`).

Prints one row per node in the minority of a file (or per file without a
quorum), the unanswered nodes on stderr, and a summary line naming the plan
that now holds the minority (``-s %audit-minority``). ``--json``: one record
per node that answered (``record: node``: files, hashed, cached), one per
file that differs (``record: file``), one per unanswered node (an ``outcome_record``), one
per repair. Every minority, missing quorum and repair is also stored as an
``audit`` event. Exit 0 when every node answered and agrees (or was repaired),
1 when files differ, 3 when a node did not answer (3 wins).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from shoal.numeric import number

from . import exitcodes
from .common import add_agent_options, agent_settings, selected_nodes
from .render import outcome_record, print_records, print_table


def register(sub: Any) -> None:
    text = (
        "hash files on every node (stat-cached), decide per file the majority and its "
        "quorum, name the minority nodes and what differs; --repair gives them the "
        "majority's bytes"
    )
    audit = sub.add_parser("audit", help=text, description=text)
    add_agent_options(audit)
    audit.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files, directories (recursive) or globs on the nodes; relative to the remote "
        "home (default: every pushed directory and app software tree)",
    )
    group = audit.add_mutually_exclusive_group()
    group.add_argument(
        "--quorum", type=int, metavar="N", help="agreeing nodes a majority needs (default: "
        "more than half of those that answered, at least 2)"
    )  # fmt: skip
    group.add_argument(
        "--quorum-share",
        type=number,
        metavar="F",
        help="a majority needs more than this share of the nodes that answered (default 0.5)",
    )
    audit.add_argument(
        "--min-quorum", type=int, default=2, metavar="N", help="never fewer agreeing (default 2)"
    )
    audit.add_argument(
        "--repair",
        action="store_true",
        help="minority nodes get the majority's files, read once from a majority node and "
        "pushed P2P (verified by hash; the replaced file kept as FILE.shoal-audit-<time>); "
        "no quorum, no repair",
    )
    audit.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from shoal.agentlink.eventlog import recorder
    from shoal.fanout.results import NodeOutcome
    from shoal.nodes import health
    from shoal.ops import audit as au
    from shoal.state import State

    from .agentcmds import _transport

    nodes = selected_nodes(args)
    quorum = au.Quorum(
        count=args.quorum,
        share=0.5 if args.quorum_share is None else args.quorum_share,
        minimum=args.min_quorum,
    )
    opts = au.AuditOptions(**agent_settings(args))
    with State() as st:
        hook = recorder(st, "audit")
        tr = _transport(nodes, opts)
        report = asyncio.run(
            au.audit_async(
                nodes, args.paths, opts, quorum=quorum, transport=tr, state=st, on_event=hook
            )
        )
        reached: list[NodeOutcome[Any]] = [NodeOutcome(n) for n in report.scans]
        health.record([*report.unanswered.values(), *reached], health.Policy.REACHABILITY, state=st)
        expr = au.remember_minority(report, state=st)
        repairs = None
        if args.repair and report.minority_nodes:
            repairs = asyncio.run(
                au.repair_async(
                    nodes, report, opts, transport=_transport(nodes, opts), state=st, on_event=hook
                )
            )
    _show(report, args.json)
    if repairs is not None:
        _show_repairs(report, repairs, args.json)
    _summary(report, expr, args.repair)
    return _status(report, repairs)


def _show(report: Any, as_json: bool) -> None:
    from shoal.ops.audit import no_quorum_message

    if as_json:
        print_records(
            {"record": "node", "node": n, "total": s.total, "hashed": s.hashed,
             "cached": s.cached, "hashed_bytes": s.hashed_bytes, "errors": s.errors}
            for n, s in sorted(report.scans.items())
        )  # fmt: skip
        print_records({"record": "file", **v.to_json()} for v in report.files)
        print_records(outcome_record(r) for r in report.unanswered.values())
        return
    rows = []
    for v in report.files:
        major = v.majority.describe() if v.majority is not None else "absent"
        if not v.quorum:
            rows.append(["-", v.path, "no quorum", f"{v.votes}/{v.answered}", "-"])
            continue
        for node, what in sorted(v.minority.items()):
            held = v.held.get(node)
            rows.append(
                [
                    node,
                    v.path,
                    ",".join(what),
                    f"{v.votes}/{v.answered}",
                    f"{held.describe() if held else 'absent'} (majority: {major})",
                ]
            )
    if rows:
        print_table(rows, ["NODE", "PATH", "DIFFERS", "MAJORITY", "HELD"])
    for v in report.no_quorum:
        print(f"audit: {no_quorum_message(v)}", file=sys.stderr)
    for r in report.unanswered.values():
        print(f"{r.node}: {r.kind}: not audited: {r.reason}", file=sys.stderr)


def _show_repairs(report: Any, repairs: Any, as_json: bool) -> None:
    if as_json:
        print_records({"record": "repair", **d} for d in report.repaired)
        print_records(outcome_record(r) for r in repairs.failed)
        return
    for d in report.repaired:
        aside = f" (old kept at {d['aside']})" if d.get("aside") else ""
        why = f": {d['why']}" if d.get("why") else ""
        print(f"{d['node']}: {d['path']}: {d['action']}{aside}{why}", file=sys.stderr)
    for r in repairs.failed:
        print(f"{r.node}: {r.kind}: repair failed: {r.reason}", file=sys.stderr)


def _summary(report: Any, expr: str, repair: bool) -> None:
    scans = report.scans.values()
    hashed = sum(s.hashed for s in scans)
    cached = sum(s.cached for s in scans)
    minority = report.minority_nodes
    parts = [
        f"audit: {report.checked} path(s) on {len(report.scans)} node(s)",
        f"{hashed} file(s) hashed, {cached} unchanged (stat cache)",
        f"{len(report.files)} differ",
    ]
    if minority:
        parts.append(f"minority: {expr} (plan %audit-minority: -s %audit-minority)")
    else:
        parts.append("no minority (plan %audit-minority is empty)")
    if report.no_quorum:
        parts.append(f"{len(report.no_quorum)} without a quorum: not repaired")
    if report.unanswered:
        parts.append(f"{len(report.unanswered)} node(s) did not answer")
    if repair and minority:
        parts.append(f"{len(report.repaired)} repair(s)")
    print("; ".join(parts) + f" in {report.duration:.2f}s", file=sys.stderr)


def _status(report: Any, repairs: Any) -> int:
    if report.unanswered:
        return exitcodes.UNREACHABLE
    if repairs is not None:
        skipped = any(d.get("action") == "skipped" for d in report.repaired)
        failed = exitcodes.for_results(repairs)
        if failed or skipped or report.no_quorum:
            return failed or exitcodes.FAILED
        return exitcodes.OK
    return exitcodes.FAILED if report.files else exitcodes.OK
