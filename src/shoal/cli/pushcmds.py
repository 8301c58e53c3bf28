"""``shoal push``, ``shoal rollback`` and ``shoal versions``: parse, call, render.

The library (:mod:`shoal.content.push`) does the work and returns per-node
results; this module turns arguments into :class:`PushOptions`, shows a live
progress line on a terminal (bytes, nodes done, rate, ETA) and prints the
closing per-node summary. Exit status is 0 when every node succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, TextIO

from shoal.numeric import is_finite

from .common import add_agent_options, agent_settings, selected_nodes
from .exitcodes import for_results
from .render import (
    ProgressLine,
    outcome_record,
    print_failures,
    print_records,
    print_table,
    size,
)

if TYPE_CHECKING:
    from shoal.agentlink.fleet import AgentOptions, AgentOutcome
    from shoal.content.push import PushProgress, PushResult
    from shoal.fanout.results import Results


def register(sub: Any) -> None:
    push = sub.add_parser(
        "push",
        help="push a directory to many nodes (manifest, P2P chunks, atomic switch)",
        description="Push LOCAL_DIR to REMOTE_DIR on every selected node: nodes fetch only "
        "the chunks they lack, from each other, verify them, and switch REMOTE_DIR (a "
        "symlink) to the new version atomically.",
    )
    add_agent_options(push)
    push.add_argument(
        "local_dir",
        metavar="LOCAL_DIR",
        help="the directory to push, or depot:NAME@VERSION (@latest) from 'shoal depot'",
    )
    push.add_argument("remote_dir", metavar="REMOTE_DIR", help="relative to the remote home")
    push.add_argument(
        "-a", "--pack", action="store_true", help="pack small files into compressed chunks"
    )
    push.add_argument("--keep", type=int, default=3, metavar="K", help="versions kept (3)")
    push.add_argument("--rate-limit", metavar="RATE", help="per-node cap, e.g. 50mbit")
    push.add_argument("--source-rate", metavar="RATE", help="cap on the controller's egress")
    push.add_argument("--allow-setuid", action="store_true", help="keep setuid/setgid bits")
    push.add_argument(
        "--replace-empty-dir",
        action="store_true",
        help="replace an existing empty directory at REMOTE_DIR (refused otherwise)",
    )
    push.add_argument("--no-fsync", action="store_true", help="do not flush to disk first")
    push.add_argument(
        "--plain-data",
        action="store_true",
        help="chunks and token in clear TCP, no TLS (trusted networks only)",
    )
    push.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    push.set_defaults(handler=cmd_push)

    rollback = sub.add_parser(
        "rollback",
        help="switch REMOTE_DIR back to an earlier version",
        description="Switch REMOTE_DIR on every selected node back to a kept version (the "
        "one before the current, or --to VERSION) with one atomic symlink swap.",
    )
    add_agent_options(rollback)
    rollback.add_argument("remote_dir", metavar="REMOTE_DIR", help="relative to the remote home")
    rollback.add_argument("--to", metavar="VERSION", help="a kept version id (or prefix)")
    rollback.set_defaults(handler=cmd_rollback)

    versions = sub.add_parser(
        "versions",
        help="which version of REMOTE_DIR each node runs",
        description="Show, per node, the version REMOTE_DIR points at and the versions kept "
        "for rollback; a fleet running several versions is summed up.",
    )
    add_agent_options(versions)
    versions.add_argument("remote_dir", metavar="REMOTE_DIR", help="relative to the remote home")
    versions.set_defaults(handler=cmd_versions)


def parse_rate(text: str | None) -> float | None:
    """``50mbit``, ``10MB`` … → bytes per second (None for None)."""
    if text is None:
        return None
    from shoal.errors import UsageError
    from shoal.lab.labspec import parse_rate as parse_bits

    units = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1.0}
    low = text.strip().lower()
    for unit, factor in units.items():
        if low.endswith(unit) and low[: -len(unit)].replace(".", "", 1).isdigit():
            value = float(low[: -len(unit)]) * factor
            if not is_finite(value):
                break
            return value
    try:
        return parse_bits(text) / 8.0
    except Exception:
        raise UsageError(f"bad rate {text!r}: use e.g. 50mbit or 5MB") from None


def _progress_text(p: PushProgress) -> str:
    """The push's progress line: bytes, nodes done, rate, source egress, ETA."""
    eta = f"{p.eta:.0f}s" if p.eta is not None else "-"
    return (
        f"{size(p.received)}/{size(p.needed)}  nodes {p.nodes_done}/{p.nodes_total}"
        f" failed {p.nodes_failed}  {size(p.rate)}/s  source {size(p.source_sent)}"
        f"  eta {eta}   "
    )


def cmd_push(args: argparse.Namespace) -> int:
    from shoal.content.push import PushOptions, push

    nodes = selected_nodes(args)
    opts: PushOptions = PushOptions(**agent_settings(args))
    opts.pack = args.pack
    opts.keep = args.keep
    opts.rate_limit = parse_rate(args.rate_limit)
    opts.source_rate = parse_rate(args.source_rate)
    opts.allow_setuid = args.allow_setuid
    opts.replace_empty_dir = args.replace_empty_dir
    opts.durable = not args.no_fsync
    opts.plain_data = args.plain_data
    live = ProgressLine(not (args.no_progress or args.json))
    try:
        result = push(
            nodes,
            args.local_dir,
            args.remote_dir,
            opts,
            on_progress=lambda p: live.show(_progress_text(p)),
        )
    finally:
        live.close()
    _record(result)
    if args.json:
        print_records({**_push_record(n), "version": result.version} for n in result)
    else:
        render_push(result)
    return for_results(result)


def _record(results: Results[Any]) -> None:
    """Update the failed set: unreachable nodes join it, answering ones leave it."""
    from shoal.nodes import health

    health.record(results, health.Policy.REACHABILITY)


def _push_record(n: Any) -> dict[str, Any]:
    return {
        **outcome_record(n),
        "previous": n.previous,
        "current": n.current,
        "received": n.received,
        "from_source": n.from_source,
        "from_peers": n.from_peers,
        "reused": n.reused,
        "path": n.path or None,
    }


def render_push(result: PushResult, out: TextIO = sys.stdout) -> None:
    rows = [
        [
            n.node,
            n.kind,
            (n.current or "-")[:12],
            size(n.received),
            size(n.from_source),
            n.path or "-",
            size(n.reused),
            f"{n.duration:.1f}s",
            n.reason,
        ]
        for n in result
    ]
    header = [
        "NODE",
        "STATUS",
        "VERSION",
        "RECEIVED",
        "FROM SOURCE",
        "PATH",
        "REUSED",
        "TIME",
        "ERROR",
    ]
    print_table(rows, header, file=out)
    ok = sum(1 for n in result if n.ok)
    print(
        f"version {result.version}: {ok}/{len(result)} nodes ok, "
        f"{size(result.total_bytes)} in {result.files} files, source sent "
        f"{size(result.source_sent)} ({result.source_sent / max(1, result.total_bytes):.2f}x), "
        f"{result.duration:.1f}s (scan {result.scan_seconds:.1f}s)",
        file=out,
    )
    if result.skipped:
        print(f"skipped (not files, dirs or symlinks): {', '.join(result.skipped[:10])}", file=out)


def _render_versions(results: Results[AgentOutcome]) -> None:
    from shoal.content.depot import origins
    from shoal.state import State

    rows = []
    groups: dict[str, list[str]] = {}
    currents = [str((r.value or {}).get("current")) for r in results if r.ok]
    with State() as st:
        depot = origins(st, currents)
    for r in results:
        if not r.ok:
            continue
        value = r.value or {}
        current = value.get("current") or "(none)"
        groups.setdefault(current, []).append(r.node)
        kept = ", ".join(v["version"][:12] for v in value.get("versions", []))
        rows.append([r.node, current[:16], depot.get(current, "-"), kept])
    print_table(rows, ["NODE", "CURRENT", "DEPOT", "KEPT (oldest first)"])
    if len(groups) > 1:
        summary = "; ".join(f"{v[:12]}: {len(n)} nodes" for v, n in sorted(groups.items()))
        print(f"mixed fleet: {summary}")


def _finish(results: Results[AgentOutcome], args: argparse.Namespace) -> int:
    _record(results)
    if args.json:
        print_records(map(outcome_record, results))
    else:
        print_failures(results)
    return for_results(results)


def cmd_versions(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.content.push import versions_async

    nodes = selected_nodes(args)
    opts: AgentOptions = AgentOptions(**agent_settings(args))
    results = asyncio.run(versions_async(nodes, args.remote_dir, opts))
    if not args.json:
        _render_versions(results)
    return _finish(results, args)


def cmd_rollback(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.content.push import rollback_async

    nodes = selected_nodes(args)
    opts: AgentOptions = AgentOptions(**agent_settings(args))
    results = asyncio.run(rollback_async(nodes, args.remote_dir, args.to, opts))
    if not args.json:
        for r in results:
            if r.ok:
                switched: dict[str, Any] = r.value or {}
                prev = (switched.get("previous") or "none")[:12]
                print(f"{r.node}: {prev} -> {switched['current'][:12]}")
    return _finish(results, args)
