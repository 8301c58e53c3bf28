"""``shoal agent``, ``shoal proc``, ``shoal events`` and ``shoal sweep``: parse, call, render.

The library (:mod:`shoal.agentlink.fleet`, :mod:`shoal.ops.sweep`,
:mod:`shoal.agentlink.eventlog`) does the work and returns per-node results; this
module only turns arguments into calls and results into tables. Exit status
is 0 when every node succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shoal.numeric import is_finite, number

from . import exitcodes, viaservice
from .common import add_agent_options, agent_settings, selected_nodes
from .exitcodes import for_results
from .render import (
    NodeProgress,
    outcome_record,
    print_failures,
    print_records,
    print_table,
    tally,
    uptime,
)

if TYPE_CHECKING:
    from shoal.agentlink.fleet import AgentOptions, AgentOutcome
    from shoal.fanout.results import Results
    from shoal.nodes.model import Node
    from shoal.transport.base import Transport


# -- arguments ---------------------------------------------------------------


class _DashDashParser(argparse.ArgumentParser):
    """Everything after ``--`` is the program's command line, even after options.

    (argparse alone cannot mix options after NAME with a trailing ``-- CMD...``.)
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        items = list(sys.argv[1:] if args is None else args)
        tail: list[str] = []
        if "--" in items:
            cut = items.index("--")
            items, tail = items[:cut], items[cut + 1 :]
        ns, extra = super().parse_known_args(items, namespace)
        if tail or hasattr(ns, "command"):
            ns.command = list(getattr(ns, "command", None) or []) + tail
        return ns, extra


def register(sub: Any) -> None:
    agent = sub.add_parser("agent", help="install and manage the node agent")
    asub = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    asub.required = True
    for action, text in (
        ("install", "copy the agent where this build is missing and start it"),
        ("upgrade", "install this build where an agent is already installed"),
        ("status", "version, build, pid and programs of each agent; reports version skew"),
        ("stop", "stop the agents (their programs stop; they come back on start)"),
        ("restart", "restart the agents (their programs come back)"),
        ("start", "start installed agents that are not running"),
    ):
        p = asub.add_parser(action, help=text, description=text)
        add_agent_options(p)
        if action in ("install", "upgrade"):
            p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
        if action == "upgrade":
            p.add_argument(
                "--batch",
                metavar="N|P%",
                help="upgrade N nodes (or P%% of them) at a time, checking each batch"
                " (new build answering, programs kept) before the next; default all at once",
            )
        p.set_defaults(handler=cmd_agent, action=action)

    proc = sub.add_parser("proc", help="supervised programs on the nodes")
    psub = proc.add_subparsers(dest="proc_command", metavar="ACTION", parser_class=_DashDashParser)
    psub.required = True
    start = psub.add_parser(
        "start",
        help="start (or replace) a supervised program",
        description="Start NAME on every selected node: shoal proc start web -- ./server --port 80",
    )
    add_agent_options(start)
    start.add_argument("name", metavar="NAME", help="the program's name on each node")
    start.add_argument(
        "--restart",
        choices=("always", "on-failure", "never"),
        default="always",
        help="when the agent restarts it (default always)",
    )
    start.add_argument("--cwd", metavar="DIR", help="working directory on the node")
    start.add_argument(
        "-e", "--env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    start.add_argument("--health", metavar="CMD", help="health command (exit 0 = healthy)")
    start.add_argument("--health-interval", type=number, metavar="S", help="default 10")
    start.add_argument("--health-timeout", type=number, metavar="S", help="default 5")
    start.add_argument(
        "--health-retries", type=int, metavar="N", help="failures in a row that restart (3)"
    )
    start.add_argument("--stop-grace", type=number, metavar="S", help="before SIGKILL (5)")
    start.add_argument("--fatal-after", type=int, metavar="N", help="rapid failures (5)")
    start.add_argument("--log-max-bytes", type=int, metavar="BYTES", help="default 1 MiB")
    start.add_argument("--log-backups", type=int, metavar="N", help="default 3")
    start.add_argument("command", nargs="*", metavar="CMD", help="after --: the command line")
    start.set_defaults(handler=cmd_proc_start)

    status = psub.add_parser("status", help="one table of the programs on every node")
    add_agent_options(status)
    status.add_argument("name", nargs="?", metavar="NAME", help="one program (default: all)")
    status.set_defaults(handler=cmd_proc_simple, op="proc.status")
    for action in ("stop", "restart", "remove"):
        p = psub.add_parser(action, help=f"{action} a program on the selected nodes")
        add_agent_options(p)
        p.add_argument("name", metavar="NAME", help="the program's name")
        p.set_defaults(handler=cmd_proc_simple, op=f"proc.{action}")
    logs = psub.add_parser("logs", help="a program's output (stdout and stderr)")
    add_agent_options(logs)
    logs.add_argument("name", metavar="NAME", help="the program's name")
    logs.add_argument(
        "-n", "--lines", type=int, default=20, metavar="N", help="last N lines first (20)"
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.set_defaults(handler=cmd_proc_logs)

    ev = sub.add_parser("events", help="agent events pulled into the controller's state")
    add_agent_options(ev)
    ev.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="latest N (50)")
    ev.add_argument("--follow", action="store_true", help="keep pulling and printing")
    ev.add_argument("--interval", type=number, default=2.0, metavar="S", help="follow period")
    ev.add_argument("--no-pull", action="store_true", help="show stored events only")
    ev.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC",
        help="only this topic, repeatable (agent node app sweep service schedule rollout audit)",
    )
    ev.set_defaults(handler=cmd_events)

    sw = sub.add_parser(
        "sweep",
        help="check every agent, revive dead ones, update the failed set",
        description="Check every node's agent; restart it where it died (its programs come "
        "back); mark unreachable nodes failed and answering ones healthy.",
    )
    add_agent_options(sw)
    sw.add_argument("--every", metavar="DURATION", help="repeat (e.g. 30s, 5m, 1h) until Ctrl-C")
    sw.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    sw.set_defaults(handler=cmd_sweep)


# -- helpers -------------------------------------------------------------------

NO_PROGRESS_HELP = "no progress line on a terminal"


def _progress(args: argparse.Namespace) -> bool:
    """Whether to draw a progress line (on a terminal only, see render.ProgressLine)."""
    return not (args.json or getattr(args, "no_progress", False))


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``5m``, ``1h`` → seconds; UsageError otherwise."""
    from shoal.errors import UsageError

    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    body, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(body) * units[unit]
    except ValueError:
        raise UsageError(f"bad duration {text!r}: use e.g. 30s, 5m, 1h") from None
    if not is_finite(value) or value <= 0:
        raise UsageError(f"duration must be positive, got {text!r}")
    return value


def _options(args: argparse.Namespace) -> AgentOptions:
    from shoal.agentlink.fleet import AgentOptions

    return AgentOptions(**agent_settings(args))


def _recorded(results: Results[AgentOutcome], state: Any = None) -> Results[AgentOutcome]:
    """``results`` after recording them in the failed set (unreachable nodes join it)."""
    from shoal.nodes import health

    health.record(results, health.Policy.REACHABILITY, state=state)
    return results


def _transport(nodes: Sequence[Node], opts: AgentOptions) -> Transport:
    from shoal.transport.factory import make_transport
    from shoal.transport.preconnect import start_connects

    return make_transport(opts, start_connects(nodes, limit=opts.parallel or 512))


# -- commands --------------------------------------------------------------------


def cmd_agent(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents

    nodes = selected_nodes(args)
    opts = _options(args)
    tr = _transport(nodes, opts)
    action = args.action
    progress = NodeProgress(len(nodes), action in ("install", "upgrade") and _progress(args))
    if action in ("install", "upgrade"):
        from shoal.content import agentspread  # large fleets: peers serve the zipapp

        coro = agentspread.install_async(
            nodes,
            opts,
            transport=tr,
            upgrade_only=action == "upgrade",
            on_result=progress.update,
            batch=getattr(args, "batch", None),
        )
    elif action == "status":
        coro = agents.status_async(nodes, opts, transport=tr)
    elif action == "stop":
        coro = agents.stop_async(nodes, opts, transport=tr)
    else:
        coro = agents.start_async(nodes, opts, transport=tr, restart=action == "restart")
    try:
        results = _recorded(asyncio.run(coro))
    finally:
        progress.close()
    if args.json:
        print_records(map(outcome_record, results))
        return for_results(results)
    if action == "status":
        rows = []
        for r in results:
            if not r.ok:
                continue
            v: dict[str, Any] = r.value or {}
            programs = v.get("programs", [])
            up = sum(1 for p in programs if p.get("state") == "RUNNING")
            rows.append(
                [
                    r.node,
                    str(v.get("version")),
                    str(v.get("protocol")),
                    str(v.get("build")),
                    str(v.get("pid")),
                    uptime(v.get("uptime")),
                    f"{up}/{len(programs)}",
                    "; ".join(v.get("errors") or []) or "-",
                ]
            )
        header = ["NODE", "VERSION", "PROTO", "BUILD", "PID", "UPTIME", "RUNNING", "ERRORS"]
        if rows:
            print_table(rows, header)
        skew = agents.build_skew(results)
        if len(skew) > 1:
            print("version skew:", file=sys.stderr)
            for key, names in sorted(skew.items(), key=lambda kv: -len(kv[1])):
                print(f"  {key}: {len(names)} node(s): {', '.join(names)}", file=sys.stderr)
    else:
        for r in results:
            if r.ok:
                build_id = r.value.get("build") if isinstance(r.value, dict) else None
                extra = f" (build {build_id})" if build_id else ""
                print(f"{r.node}: {r.action}{extra}")
    print_failures(results)
    ok = len(results) - len(results.failed)
    print(f"{action}: {ok}/{len(results)} nodes ok in {results.duration:.2f}s", file=sys.stderr)
    return for_results(results)


def cmd_proc_start(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents
    from shoal.errors import UsageError
    from shoal.fanout.options import parse_env

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("proc start needs a command: shoal proc start NAME -- CMD...")
    spec = agents.proc_spec(
        args.name,
        command,
        restart=args.restart,
        cwd=args.cwd,
        env=parse_env(args.env) or None,
        health=args.health,
        health_interval=args.health_interval,
        health_timeout=args.health_timeout,
        health_retries=args.health_retries,
        stop_grace=args.stop_grace,
        fatal_after=args.fatal_after,
        log_max_bytes=args.log_max_bytes,
        log_backups=args.log_backups,
    )
    if (code := viaservice.proc(args, "proc.start", {"spec": spec})) is not None:
        return code
    nodes = selected_nodes(args)
    opts = _options(args)
    results = asyncio.run(
        agents.call_async(
            nodes, "proc.start", {"spec": spec}, opts, transport=_transport(nodes, opts)
        )
    )
    _recorded(results)
    return _render_programs(args, results, "proc.start")


def cmd_proc_simple(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents

    payload = {"name": args.name} if args.name else {}
    if (code := viaservice.proc(args, args.op, payload)) is not None:
        return code
    nodes = selected_nodes(args)
    opts = _options(args)
    results = asyncio.run(
        agents.call_async(nodes, args.op, payload, opts, transport=_transport(nodes, opts))
    )
    _recorded(results)
    return _render_programs(args, results, args.op)


def _render_programs(args: argparse.Namespace, results: Results[AgentOutcome], op: str) -> int:
    if args.json:
        print_records(map(outcome_record, results))
        return for_results(results)
    rows = []
    states: list[str] = []
    for r in results:
        if not r.ok:
            continue
        programs = r.value if isinstance(r.value, list) else [r.value]
        for p in programs:
            if not isinstance(p, dict) or "state" not in p:
                continue
            states.append(str(p["state"]))
            rows.append(
                [
                    r.node,
                    str(p["name"]),
                    str(p["state"]),
                    str(p["pid"] or "-"),
                    uptime(p.get("uptime")),
                    str(p.get("restarts", 0)),
                    str(p.get("health") or "-"),
                    str(p.get("last_exit") or "-"),
                ]
            )
    if rows:
        header = ["NODE", "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "LAST EXIT"]
        print_table(rows, header)
    elif op == "proc.status" and results.ok:
        print("no programs", file=sys.stderr)
    print_failures(results)
    summary = tally(states)
    failed = len(results.failed)
    print(
        f"{op}: {len(results)} node(s)"
        + (f"; programs: {summary}" if summary else "")
        + (f"; {failed} node(s) failed" if failed else "")
        + f" in {results.duration:.2f}s",
        file=sys.stderr,
    )
    return for_results(results)


def cmd_proc_logs(args: argparse.Namespace) -> int:
    from shoal.agentlink import fleet as agents

    payload = {"name": args.name, "lines": args.lines}
    if (code := viaservice.proc(args, "proc.logs", payload)) is not None:
        return code
    nodes = selected_nodes(args)
    opts = _options(args)
    many = len(nodes) > 1

    def sink(node: str, text: str) -> None:
        if args.json:
            print_records({"node": node, "line": line} for line in text.splitlines())
            return
        if many:
            text = "".join(f"{node}: {line}\n" for line in text.splitlines())
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.follow:
        try:
            results = asyncio.run(
                agents.follow_logs(
                    nodes,
                    args.name,
                    sink,
                    lines=args.lines,
                    options=opts,
                    transport=_transport(nodes, opts),
                )
            )
        except KeyboardInterrupt:
            return exitcodes.OK  # the way a follow ends
    else:
        results = asyncio.run(
            agents.call_async(
                nodes,
                "proc.logs",
                {"name": args.name, "lines": args.lines},
                opts,
                transport=_transport(nodes, opts),
            )
        )
        for r in results:
            page: dict[str, Any] = r.value or {}
            if r.ok and page["data"]:
                sink(r.node, page["data"])
    _recorded(results)
    print_failures(results, as_json=args.json)
    return for_results(results)


def _event_record(e: Any) -> dict[str, Any]:
    return {
        "node": e.node,
        "seq": e.seq,
        "time": e.time,
        "topic": e.topic,
        "kind": e.kind,
        "program": e.program,
        "detail": e.detail,
    }


def event_filter(args: argparse.Namespace) -> tuple[list[str] | None, bool]:
    """``shoal events``' topics (None: all; UsageError for an unknown one) and whether
    the events of no node (a rollout's, the scheduler's) are shown: only when the
    selection is the whole inventory (no ``-s``, no ``-w``)."""
    from shoal.control.journal import TOPICS
    from shoal.errors import UsageError

    topics = None
    if args.topic:
        topics = [t for text in args.topic for t in text.split(",") if t]
        unknown = sorted(set(topics) - set(TOPICS))
        if unknown:
            raise UsageError(f"unknown topic {unknown[0]!r}: choose from {', '.join(TOPICS)}")
    fleet = args.select is None and getattr(args, "hosts", None) is None
    return topics, fleet


def _print_events(rows: Sequence[Any], json: bool = False) -> None:
    if json:
        print_records(map(_event_record, rows))
        return
    for e in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
        program = e.program or "-"
        where = f"{e.node}  #{e.seq}" if e.node is not None else f"({e.topic})"
        print(f"{stamp}  {where}  {e.kind}  {program}  {e.detail}".rstrip())
    sys.stdout.flush()


def cmd_events(args: argparse.Namespace) -> int:
    from shoal.agentlink import eventlog as events
    from shoal.agentlink import fleet as agents
    from shoal.state import State

    if (code := viaservice.events(args)) is not None:
        return code  # shoal serve stores what agents push: nothing to pull
    topics, fleet = event_filter(args)
    nodes = selected_nodes(args)
    names = [n.name for n in nodes]
    opts = _options(args)
    status = 0
    with State() as state:
        if not args.no_pull:
            pulled = asyncio.run(
                agents.pull_events_async(
                    nodes, opts, transport=_transport(nodes, opts), state=state
                )
            )
            _recorded(pulled, state)
            print_failures(pulled, as_json=args.json)
            status = for_results(pulled)
        rows = events.query(state, names, limit=args.lines, topics=topics, fleet=fleet)
        _print_events(rows, args.json)
        if not args.follow:
            return status

        async def pull() -> None:
            _recorded(await agents.pull_events_async(nodes, opts, state=state), state)

        async def follow() -> None:
            async for fresh in events.follow(
                state,
                names,
                pull=pull,
                after_id=events.cursor_after(state, names, rows),
                interval=args.interval,
                topics=topics,
                fleet=fleet,
            ):
                _print_events(fresh, args.json)

        try:
            asyncio.run(follow())
        except KeyboardInterrupt:
            pass
        return status


def cmd_sweep(args: argparse.Namespace) -> int:
    from shoal.ops.sweep import sweep_every

    every = parse_duration(args.every) if args.every else None
    if (code := viaservice.sweep(args, every)) is not None:
        return code
    opts = _options(args)
    status = 0
    progress = NodeProgress(0, False)

    def chosen() -> list[Node]:
        nonlocal progress
        nodes = selected_nodes(args)
        progress = NodeProgress(len(nodes), _progress(args))  # one bar per round
        return nodes

    async def sweeps() -> None:
        nonlocal status
        async for sweep in sweep_every(
            every or 0.0,
            chosen,
            opts,
            transport_for=lambda nodes: _transport(nodes, opts),
            rounds=None if every else 1,
            record=True,
            on_result=lambda r: progress.update(r),
        ):
            progress.close()
            status = _sweep_status(sweep)
            print_sweep(args, sweep)

    try:
        asyncio.run(sweeps())
    except KeyboardInterrupt:
        pass  # the way --every ends: the last round's status
    finally:
        progress.close()
    return status


def print_sweep(args: argparse.Namespace, sweep: Any) -> None:
    """One sweep round: a table and a summary line, or JSON lines with ``--json``."""
    if args.json:
        print_records(
            {"node": e.node, "status": e.status, "detail": e.detail, "round": sweep.number}
            for e in sweep.entries
        )
        return
    stamp = time.strftime("%H:%M:%S")
    rows = [[e.node, e.status, e.detail] for e in sweep.entries]
    print(f"sweep at {stamp}:")
    print_table(rows, ["NODE", "STATUS", "DETAIL"])
    summary = tally(e.status for e in sweep.entries)
    print(
        f"sweep: {len(sweep.entries)} node(s): {summary} in {sweep.duration:.2f}s",
        file=sys.stderr,
    )
    sys.stdout.flush()


def _sweep_status(sweep: Any) -> int:
    """3 when a node was unreachable (``failed``), 1 when an agent was not made to answer."""
    if any(e.status == "failed" for e in sweep.entries):
        return exitcodes.UNREACHABLE
    return exitcodes.OK if sweep.ok else exitcodes.FAILED
