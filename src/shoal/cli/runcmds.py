"""``shoal run`` and ``shoal cp``: parse, call :mod:`shoal.fanout`, render.

Start-up time is part of what ``run`` is measured on, so the SSH library is
imported only after the TCP connections to the nodes have been started
(:mod:`shoal.transport.preconnect`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.numeric import byte_size, number

from . import viaservice
from .common import add_connection_options, connection_settings, selected_nodes
from .exitcodes import for_results
from .render import NodeProgress, outcome_record, print_records

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.fanout.options import FanoutOptions, RunOptions
    from shoal.fanout.results import CommandOutcome, Results
    from shoal.transport.base import Transport


def _add_fanout_options(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)
    p.add_argument(
        "--delay",
        type=number,
        default=0.0,
        metavar="SECONDS",
        help="pause between successive launches (default 0)",
    )
    p.add_argument(
        "-t",
        "--timeout",
        type=number,
        metavar="SECONDS",
        help="per-node limit; a command that overruns is killed on the node",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="retry failed connections N times with backoff (default 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes to spread a large fan-out over (default: one per core)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a shell command on many nodes",
        description="Run a shell command on every selected node in parallel.",
    )
    _add_fanout_options(run)
    run.add_argument("--sudo", action="store_true", help="run the command with sudo -n")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="export a variable to the command (repeatable)",
    )
    run.add_argument(
        "--stream",
        action="store_true",
        help="print lines live, prefixed with the node name (with --json: one "
        '{"node", "stream", "line"} object per line, then the per-node results)',
    )
    run.add_argument(
        "--max-output",
        type=byte_size,
        metavar="SIZE",
        help="bytes of each node's stdout and of its stderr to keep, e.g. 1M (default 64M; "
        "0: all); beyond it output is counted, not kept, and the summary says so",
    )
    run.add_argument(
        "--out-dir",
        metavar="DIR",
        help="also write each node's stdout to DIR/NODE (stderr to DIR/NODE.err)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="the shell command")
    run.set_defaults(handler=cmd_run)

    cp = sub.add_parser(
        "cp",
        help="copy files to or from many nodes (@ = node name, @: = remote side)",
        description="Copy to nodes: cp FILE... @:DIR; from nodes: cp '@:PATH' out/@/; "
        "one local copy per node: cp DIR @.",
    )
    _add_fanout_options(cp)
    cp.add_argument(
        "paths",
        nargs="+",
        metavar="SRC... DST",
        help="sources then the destination; @ stands for each node's name, @: for its side",
    )
    cp.set_defaults(handler=cmd_cp)


def _options(args: argparse.Namespace, cls: type) -> Any:
    return cls(
        delay=args.delay,
        timeout=args.timeout,
        retries=args.retries,
        workers=args.workers,
        **connection_settings(args),
    )


def _preconnect(nodes: list, args: argparse.Namespace) -> Any:
    """Start TCP connects on a thread, import the SSH library meanwhile; the sockets.

    Called once the options are validated and the nodes selected, before
    asyncio, the fan-out machinery and asyncssh are imported (~0.25 s of CPU
    that now overlaps the nodes' sshds forking for these connections).
    """
    from shoal.transport.preconnect import Preconnect

    pre = None if args.delay else Preconnect(nodes, limit=args.parallel or 512)
    import shoal.transport.ssh  # noqa: F401 - the slow import, overlapping the connects

    return pre.sockets() if pre is not None else {}  # a launch delay must not be front-run


def _with_progress(
    call: Callable[[Transport, Callable[[CommandOutcome], None]], Results[CommandOutcome]],
    nodes: list,
    options: FanoutOptions,
    pre: dict,
    *,
    shown: bool,
) -> Results[CommandOutcome]:
    """``call(transport, on_result)`` over the preconnected sockets ``pre``, with a
    progress line (when ``shown``); the line and every socket closed after."""
    from shoal.transport.factory import make_transport

    progress = NodeProgress(len(nodes), shown)
    try:
        return call(make_transport(options, pre), progress.update)
    finally:
        progress.close()
        for sock in pre.values():
            sock.close()


def run_command(args: argparse.Namespace) -> tuple[str, RunOptions]:
    """``run``'s command line and options, checked before any packet leaves (UsageError)."""
    from shoal.errors import UsageError

    command = " ".join(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if not command.strip():
        raise UsageError("run needs a command, e.g. shoal run 'uptime'")
    from shoal.fanout.options import RunOptions, parse_env

    options = _options(args, RunOptions)
    options.sudo = args.sudo
    options.env = parse_env(args.env)
    if args.max_output is not None:
        options.max_output = args.max_output
    settings = getattr(args, "settings", None)  # relay_tree has no flag (a setting)
    options.relay_tree = settings.relay_tree if settings is not None else None
    options.validate()
    return command, options


def render_run(args: argparse.Namespace, result: Results[CommandOutcome]) -> int:
    """What ``run`` writes of its results (``--out-dir``; JSON records, or the grouped
    output unless streamed; the summary on stderr) and its exit status. The one
    rendering of every path: direct, through the service, the service's fast path."""
    if args.out_dir:
        _write_out_dir(result, Path(args.out_dir))
    if args.json:
        print_records(map(outcome_record, result))
        return for_results(result)
    if not args.stream:
        _print_groups(result)
    _print_summary(result)
    return for_results(result)


def cmd_run(args: argparse.Namespace) -> int:
    command, options = run_command(args)
    if (code := viaservice.run(args, command, options)) is not None:
        return code  # answered by shoal serve over its held connections
    nodes = selected_nodes(args)
    pre = _preconnect(nodes, args)

    from shoal.fanout.commands import run

    on_line = (_stream_record if args.json else _stream_line) if args.stream else None
    result = _with_progress(
        lambda transport, on_result: run(
            nodes, command, options, transport=transport, on_result=on_result, on_line=on_line
        ),
        nodes,
        options,
        pre,
        shown=not (args.no_progress or args.stream or args.json),
    )
    _record(result)
    return render_run(args, result)


def cmd_cp(args: argparse.Namespace) -> int:
    from shoal.fanout.copies import plan_copy
    from shoal.fanout.options import FanoutOptions

    plan_copy(args.paths)  # refuse a bad form before touching any node
    options = _options(args, FanoutOptions)
    options.validate()
    nodes = selected_nodes(args)
    pre = _preconnect(nodes, args)

    from shoal.fanout.copies import copy

    result = _with_progress(
        lambda transport, on_result: copy(
            nodes, args.paths, options, transport=transport, on_result=on_result
        ),
        nodes,
        options,
        pre,
        shown=not (args.no_progress or args.json),
    )
    _record(result)
    if args.json:
        print_records(map(outcome_record, result))
    else:
        _print_summary(result)
    return for_results(result)


def _record(result: Results[CommandOutcome]) -> None:
    """Update the failed set: nodes that did not succeed join it, the others leave it."""
    from shoal.nodes import health

    health.record(result, health.Policy.OUTCOME)


def _stream_line(node: str, stream: str, line: bytes) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(f"{node}: {line.decode('utf-8', errors='replace')}\n")
    out.flush()


def _stream_record(node: str, stream: str, line: bytes) -> None:
    text = line.decode("utf-8", errors="replace")
    print_records([{"node": node, "stream": stream, "line": text}])


def _print_groups(result: Results[CommandOutcome]) -> None:
    from shoal.fanout.output import group_outputs

    for group in group_outputs(result):
        if not group.stdout and not group.stderr and not group.outcome:
            continue
        header = f"---- {group.label}" + (f" — {group.outcome}" if group.outcome else "")
        print(header)
        if group.stdout:
            sys.stdout.write(group.stdout if group.stdout.endswith("\n") else group.stdout + "\n")
        if group.stderr:
            for line in group.stderr.rstrip("\n").split("\n"):
                print(f"[stderr] {line}")
    sys.stdout.flush()


def _print_summary(result: Results[CommandOutcome]) -> None:
    from shoal.fanout.output import summary_lines

    for line in summary_lines(result):
        print(line, file=sys.stderr)


def _write_out_dir(result: Results[CommandOutcome], out: Path) -> None:
    from shoal.fanout.copies import safe_component

    out.mkdir(parents=True, exist_ok=True)
    for r in result:
        if not safe_component(r.node):
            continue
        (out / r.node).write_text(r.stdout)
        if r.stderr:
            (out / f"{r.node}.err").write_text(r.stderr)
