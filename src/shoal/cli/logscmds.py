"""``shoal logs collect|tail|grep|prune``: the central log store (:mod:`shoal.ops.logcollect`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from shoal.numeric import number

from . import exitcodes
from .agentcmds import _options, _recorded, _transport
from .common import add_agent_options, selected_nodes
from .exitcodes import for_results
from .render import print_failures, print_object, print_records, print_table, size


def register(sub: Any) -> None:
    logs = sub.add_parser("logs", help="collect the nodes' logs centrally, follow, search")
    lsub = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    lsub.required = True

    text = (
        "pull every program's and step's logs (rotated files included) into the state "
        "directory, incrementally, compressed on the node, checksummed end to end; through "
        "shoal serve when one runs (its held connections), else (or with --no-service) direct"
    )
    collect = lsub.add_parser("collect", help=text, description=text)
    add_agent_options(collect)
    collect.add_argument("--app", metavar="NAME", help="only this application's logs")
    collect.add_argument(
        "--free",
        action="store_true",
        help="delete rotated files on the nodes once stored and verified here",
    )
    collect.set_defaults(handler=cmd_collect)

    text = "the last lines of programs' logs on the nodes, prefixed by node; -f follows"
    tail = lsub.add_parser("tail", help=text, description=text)
    add_agent_options(tail)
    tail.add_argument("names", nargs="+", metavar="NAME", help="program name(s)")
    tail.add_argument("-n", "--lines", type=int, default=10, help="lines to show first")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    tail.set_defaults(handler=cmd_tail)

    text = "search the collected logs (a regular expression), lines prefixed by node"
    grep = lsub.add_parser("grep", help=text, description=text)
    grep.add_argument("pattern", metavar="PATTERN", help="a Python regular expression")
    grep.add_argument("--node", action="append", metavar="NAME", help="only this node")
    grep.add_argument(
        "--since",
        type=number,
        metavar="SECONDS",
        help="only lines the nodes wrote in the last SECONDS (to the span of one collected"
        " range: a range still written since then shows whole)",
    )
    grep.add_argument("--json", action="store_true", help="one JSON record per line")
    grep.set_defaults(handler=cmd_grep)

    text = (
        "retention: delete collected files, least recently written first, past a total size"
        " or an age; never a file not yet acked (still on its node, not verified whole)"
    )
    prune = lsub.add_parser("prune", help=text, description=text)
    prune.add_argument("--max-bytes", type=int, metavar="N", help="keep at most N bytes stored")
    prune.add_argument(
        "--max-age", type=number, metavar="SECONDS", help="drop files older than this"
    )
    prune.add_argument("--json", action="store_true", help="the result as JSON")
    prune.set_defaults(handler=cmd_prune)


def _collected_by_service(args: argparse.Namespace, nodes: list[Any]) -> Any:
    """``logs collect`` through ``shoal serve`` (its held connections, its store; it
    records health), as :mod:`.viaservice` does for ``run``; None: go direct."""
    from shoal.ops.logcollect import Collected

    from .viaservice import _client_for, _collect, _outcome, _selection

    client = _client_for(args)
    if client is None:
        return None
    body = {"selection": _selection(nodes), "app": args.app, "free": args.free}
    results = _collect(client.stream("POST", "/api/v1/logs/collect", body=body), nodes, _outcome)
    for r in results:
        if r.value is not None:
            r.value = Collected.from_json(r.value)
    return results


def cmd_collect(args: argparse.Namespace) -> int:
    from shoal.ops import logcollect

    nodes = selected_nodes(args)
    results = _collected_by_service(args, nodes)
    if results is None:
        opts = _options(args)
        options = logcollect.CollectOptions(app=args.app, free=args.free)
        results = asyncio.run(
            logcollect.collect_async(nodes, options, opts, transport=_transport(nodes, opts))
        )
        _recorded(results)
    if args.json:
        print_records({"node": r.node, **r.value.to_json()} for r in results if r.ok and r.value)
    else:
        rows = [
            [
                r.node,
                str(r.value.files),
                str(r.value.segments),
                size(r.value.raw),
                size(r.value.stored),
                str(len(r.value.freed)),
            ]
            for r in results
            if r.ok and r.value
        ]
        if rows:
            print_table(rows, ["NODE", "FILES", "RANGES", "NEW", "STORED", "FREED"])
    print_failures(results, as_json=args.json)
    raw = sum(r.value.raw for r in results if r.ok and r.value)
    stored = sum(r.value.stored for r in results if r.ok and r.value)
    ratio = f" ({raw / stored:.1f}x compressed)" if stored else ""
    print(
        f"logs collect: {len(results)} node(s), {size(raw)} new{ratio} in {results.duration:.2f}s"
        + (f"; {len(results.failed)} node(s) failed" if results.failed else ""),
        file=sys.stderr,
    )
    return for_results(results)


def cmd_tail(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents

    nodes = selected_nodes(args)
    opts = _options(args)
    several = len(args.names) > 1

    def sink_for(name: str) -> Any:
        def sink(node: str, text: str) -> None:
            prefix = f"{node} {name}: " if several else f"{node}: "
            sys.stdout.write("".join(prefix + line + "\n" for line in text.splitlines()))
            sys.stdout.flush()

        return sink

    async def follow() -> list[Any]:
        transport = _transport(nodes, opts)
        return await asyncio.gather(
            *(
                agents.follow_logs(
                    nodes,
                    name,
                    sink_for(name),
                    lines=args.lines,
                    options=opts,
                    transport=transport,
                    rounds=None if args.follow else 0,
                )
                for name in args.names
            )
        )

    try:
        all_results = asyncio.run(follow())
    except KeyboardInterrupt:
        return exitcodes.OK  # the way a follow ends
    code = exitcodes.OK
    for results in all_results:
        _recorded(results)
        print_failures(results)
        code = max(code, for_results(results))
    return code


def cmd_grep(args: argparse.Namespace) -> int:
    from shoal.ops import logcollect

    since = None
    if args.since is not None:
        since = time.time() - args.since
    found = 0
    for hit in logcollect.grep(args.pattern, nodes=args.node, since=since):
        found += 1
        if args.json:
            print_records([{"node": hit.node, "stream": hit.stream, "line": hit.line}])
        else:
            print(f"{hit.node} {hit.stream}: {hit.line}")
    return exitcodes.OK if found else exitcodes.FAILED


def cmd_prune(args: argparse.Namespace) -> int:
    from shoal.ops import logcollect

    result = logcollect.prune(max_bytes=args.max_bytes, max_age=args.max_age)
    if args.json:
        print_object({"files": result.files, "bytes": result.bytes, "over": result.over})
    else:
        over = f"; {size(result.over)} over, not yet acked: kept" if result.over else ""
        print(
            f"logs prune: {result.files} file(s), {size(result.bytes)} deleted{over}",
            file=sys.stderr,
        )
    return exitcodes.OK
