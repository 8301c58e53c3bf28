"""``shoal push``, ``shoal rollback`` and ``shoal versions``: parse, call, render.

The library (:mod:`shoal.content.push`) does the work and returns per-node
results; this module turns arguments into :class:`PushOptions`, shows a live
progress line on a terminal (bytes, nodes done, rate, ETA) and prints the
closing per-node summary. Exit status is 0 when every node succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from shoal.numeric import is_finite, number

from .common import add_select_option, connection_settings, selected_nodes
from .terminal import unescaped

if TYPE_CHECKING:
    from shoal.content.push import PushProgress, PushResult
    from shoal.ops.agents import AgentOptions, AgentResults


def _common(p: argparse.ArgumentParser) -> None:
    add_select_option(p)
    p.add_argument("--home", default=".shoal", metavar="DIR", help="agent working area (.shoal)")
    p.add_argument("--python", default="python3", help="python3 on the nodes")
    p.add_argument("-p", "--parallel", type=int, metavar="N", help="nodes at once")
    p.add_argument("--connect-timeout", type=number, default=10.0, metavar="SECONDS")
    p.add_argument("--host-keys", choices=("verify", "accept-new"), default="verify")
    p.add_argument("--json", action="store_true", help="one JSON record per node")


def register(sub: Any) -> None:
    push = sub.add_parser(
        "push",
        help="push a directory to many nodes (manifest, P2P chunks, atomic switch)",
        description="Push LOCAL_DIR to REMOTE_DIR on every selected node: nodes fetch only "
        "the chunks they lack, from each other, verify them, and switch REMOTE_DIR (a "
        "symlink) to the new version atomically.",
    )
    _common(push)
    push.add_argument("local_dir", metavar="LOCAL_DIR")
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
    push.add_argument("--no-progress", action="store_true")
    push.set_defaults(handler=cmd_push)

    rollback = sub.add_parser("rollback", help="switch REMOTE_DIR back to an earlier version")
    _common(rollback)
    rollback.add_argument("remote_dir", metavar="REMOTE_DIR")
    rollback.add_argument("--to", metavar="VERSION", help="a kept version id (or prefix)")
    rollback.set_defaults(handler=cmd_rollback)

    versions = sub.add_parser("versions", help="which version of REMOTE_DIR each node runs")
    _common(versions)
    versions.add_argument("remote_dir", metavar="REMOTE_DIR")
    versions.set_defaults(handler=cmd_versions)


def parse_rate(text: str | None) -> float | None:
    """``50mbit``, ``10MB`` … → bytes per second (None for None)."""
    if text is None:
        return None
    from shoal.errors import UsageError
    from shoal.lab.spec import parse_rate as parse_bits

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


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Live:
    """One progress line on a terminal: bytes, nodes done, rate, ETA."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled and stream.isatty()
        self.stream = unescaped(stream)  # its own \r, not a node's

    def update(self, p: PushProgress) -> None:
        if not self.enabled:
            return
        eta = f"{p.eta:.0f}s" if p.eta is not None else "-"
        self.stream.write(
            f"\r{human(p.received)}/{human(p.needed)}  nodes {p.nodes_done}/{p.nodes_total}"
            f" failed {p.nodes_failed}  {human(p.rate)}/s  source {human(p.source_sent)}"
            f"  eta {eta}   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _agent_options(args: argparse.Namespace, cls: type) -> Any:
    return cls(home=args.home, python=args.python, **connection_settings(args))


def cmd_push(args: argparse.Namespace) -> int:
    from shoal.content.push import PushOptions, push

    nodes = selected_nodes(args)
    opts: PushOptions = _agent_options(args, PushOptions)
    opts.pack = args.pack
    opts.keep = args.keep
    opts.rate_limit = parse_rate(args.rate_limit)
    opts.source_rate = parse_rate(args.source_rate)
    opts.allow_setuid = args.allow_setuid
    opts.replace_empty_dir = args.replace_empty_dir
    opts.durable = not args.no_fsync
    live = _Live(not (args.no_progress or args.json))
    try:
        result = push(nodes, args.local_dir, args.remote_dir, opts, on_progress=live.update)
    finally:
        live.close()
    if args.json:
        for n in result:
            print(json.dumps({"version": result.version, **_node_json(n)}))
    else:
        render_push(result)
    return 0 if result.ok else 1


def _node_json(n: Any) -> dict[str, Any]:
    return {
        "node": n.node,
        "status": n.kind,
        "error": n.reason or None,
        "previous": n.previous,
        "current": n.current,
        "received": n.received,
        "from_source": n.from_source,
        "from_peers": n.from_peers,
        "reused": n.reused,
        "seconds": round(n.duration, 3),
    }


def render_push(result: PushResult, out: TextIO = sys.stdout) -> None:
    from .agent import table

    rows = [
        [
            n.node,
            n.kind,
            (n.current or "-")[:12],
            human(n.received),
            human(n.from_source),
            human(n.reused),
            f"{n.duration:.1f}s",
            n.reason,
        ]
        for n in result
    ]
    header = ["NODE", "STATUS", "VERSION", "RECEIVED", "FROM SOURCE", "REUSED", "TIME", "ERROR"]
    for line in table(rows, header):
        print(line, file=out)
    ok = sum(1 for n in result if n.ok)
    print(
        f"version {result.version}: {ok}/{len(result.nodes)} nodes ok, "
        f"{human(result.total_bytes)} in {result.files} files, source sent "
        f"{human(result.source_sent)} ({result.source_sent / max(1, result.total_bytes):.2f}x), "
        f"{result.duration:.1f}s (scan {result.scan_seconds:.1f}s)",
        file=out,
    )
    if result.skipped:
        print(f"skipped (not files, dirs or symlinks): {', '.join(result.skipped[:10])}", file=out)


def _render_versions(results: AgentResults) -> None:
    from .agent import table

    rows = []
    groups: dict[str, list[str]] = {}
    for r in results:
        if not r.ok:
            continue
        value = r.value or {}
        current = value.get("current") or "(none)"
        groups.setdefault(current, []).append(r.node)
        kept = ", ".join(v["version"][:12] for v in value.get("versions", []))
        rows.append([r.node, current[:16], kept])
    for line in table(rows, ["NODE", "CURRENT", "KEPT (oldest first)"]):
        print(line)
    if len(groups) > 1:
        summary = "; ".join(f"{v[:12]}: {len(n)} nodes" for v, n in sorted(groups.items()))
        print(f"mixed fleet: {summary}")


def _finish(results: AgentResults, args: argparse.Namespace) -> int:
    if args.json:
        for r in results:
            print(json.dumps({"node": r.node, "ok": r.ok, "value": r.value, "error": r.reason}))
    for r in results.failed:
        print(f"{r.node}: {r.kind}: {r.reason}", file=sys.stderr)
    return 0 if results.ok else 1


def cmd_versions(args: argparse.Namespace) -> int:
    from shoal.content.push import versions_async
    from shoal.ops.agents import AgentOptions

    nodes = selected_nodes(args)
    opts: AgentOptions = _agent_options(args, AgentOptions)
    results = asyncio.run(versions_async(nodes, args.remote_dir, opts))
    if not args.json:
        _render_versions(results)
    return _finish(results, args)


def cmd_rollback(args: argparse.Namespace) -> int:
    from shoal.content.push import rollback_async
    from shoal.ops.agents import AgentOptions

    nodes = selected_nodes(args)
    opts: AgentOptions = _agent_options(args, AgentOptions)
    results = asyncio.run(rollback_async(nodes, args.remote_dir, args.to, opts))
    if not args.json:
        for r in results:
            if r.ok:
                prev = (r.value.get("previous") or "none")[:12]
                print(f"{r.node}: {prev} -> {r.value['current'][:12]}")
    return _finish(results, args)
