"""The CLI through ``shoal serve``: the same commands, answered by the running service.

When a service runs for the state directory (its socket answers:
:meth:`shoal.client.ServiceClient.locate`), ``run``, ``proc *``, ``events``,
``sweep``, ``nodes failed``, ``logs collect`` (cli/logscmds) and ``app
status|up|down|monitor`` ask it instead of connecting to the nodes: the service
holds one SSH connection per node, so a ``run`` opens none, and it records health
itself (the failed set is the same table). Without a service, or with ``shoal --no-service`` or
``SHOAL_NO_SERVICE=1``, every hook answers None and the command goes to the
nodes directly as before.

Each command handler calls one function here at its top (or where its own
checks are done) and returns its status when that is not None. The output is
made by the handler's own rendering code from the same result objects
(:class:`~shoal.fanout.results.Results` rebuilt from the service's NDJSON), so
stdout, stderr and the exit status are those of the direct path; the
selection is resolved here, by the same :func:`~.common.selected_nodes`, so a
bad selection fails with the same line and caret before the service is asked.
``run`` without a progress bar (not a terminal, ``--no-progress``, ``--json``)
sends the expression as typed instead: the service resolves it by the same
:func:`~shoal.nodes.select.resolve` on the same state (its error answer is the
same exception, fields and caret included), and the CLI never imports the
selection code; unless ``MQ_NODES`` or ``CLUSTERSHELL_CFGDIR`` is set (this
process's environment decides those).

What the service cannot do as asked goes direct: ad-hoc targets (``-w``,
``-l``, ``-i``, ``-o``), ``-s mq``, ``--host-keys accept-new``, ``run
--stream``, ``proc logs -f``, a non-default ``--home``/``--python``, ``app down
--keep/--collect``. ``run``'s path imports no asyncio (start-up is measured).

A ``shoal run`` process seldom gets here: :mod:`.fastpath` asks the service
before the CLI is even imported, and this path answers what it leaves (``-v``,
``--out-dir``, ``main(argv)`` calls, a service without its route).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.client import ServiceClient, error_from

if TYPE_CHECKING:
    from shoal.fanout.options import RunOptions
    from shoal.fanout.results import NodeOutcome, Results
    from shoal.nodes.model import Node

#: The environment variable that, set to 1, keeps every command off the service.
NO_SERVICE_ENV = "SHOAL_NO_SERVICE"
#: Agent options the service's calls use (other values go direct).
SERVICE_HOME, SERVICE_PYTHON = ".shoal", "python3"


def service(args: argparse.Namespace | None = None) -> ServiceClient | None:
    """The running service's client, or None (none runs, or told not to use one)."""
    if args is not None and getattr(args, "no_service", False):
        return None
    if os.environ.get(NO_SERVICE_ENV, "").strip().lower() in ("1", "yes", "true", "on"):
        return None
    return ServiceClient.locate(timeout=3600.0)


def direct_only(args: argparse.Namespace) -> bool:
    """Options only the direct path honours (ad-hoc targets, MQ_NODES, new host keys)."""
    if getattr(args, "hosts", None) is not None or getattr(args, "login", None):
        return True
    if getattr(args, "identity", None) or getattr(args, "ssh_option", None):
        return True
    if getattr(args, "host_keys", "verify") != "verify":
        return True
    if getattr(args, "select", None) == "mq" or getattr(
        getattr(args, "settings", None), "use_mq_nodes", False
    ):
        return True
    return getattr(args, "home", SERVICE_HOME) != SERVICE_HOME or (
        getattr(args, "python", SERVICE_PYTHON) != SERVICE_PYTHON
    )


def _client_for(args: argparse.Namespace) -> ServiceClient | None:
    return None if direct_only(args) else service(args)


def _selection(nodes: Iterable[Node]) -> str:
    """The node set naming exactly ``nodes`` (resolved here, by the CLI's own rules)."""
    from shoal.nodes.nodeset import fold

    return fold([n.name for n in nodes])


def _error(record: dict[str, Any]) -> Any:
    """The ShoalError of a per-node record (``error``, ``error_kind``), or None: the most
    general class of that kind anywhere in the tree (``unreachable`` is a ConnectError)."""
    if record.get("error") is None:
        return None
    from shoal import errors

    kind = record.get("error_kind") or "error"
    level: list[type[errors.ShoalError]] = [errors.ShoalError]
    while level and not any(c.kind == kind for c in level):
        level = [sub for c in level for sub in c.__subclasses__()]
    cls = next((c for c in level if c.kind == kind), errors.ShoalError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(record["error"]))
    exc.node = str(record["node"])
    return exc


def _collect(
    records: Iterator[dict[str, Any]], nodes: list[Node] | None, make: Any, progress: Any = None
) -> Results[Any]:
    """Results in selection order from a per-node NDJSON answer ending with its summary
    (``nodes`` None: the service resolved the selection; its ``index`` is that order)."""
    from shoal.fanout.results import Results

    got: dict[str, Any] = {}
    duration = 0.0
    for record in records:
        if "summary" in record:
            duration = float(record["summary"].get("duration", 0.0))
            continue
        if "error" in record and "node" not in record:  # the stream's own failure
            raise error_from(record["error"], 500)
        outcome = make(record)
        got[outcome.node] = outcome
        if progress is not None:
            progress.update(outcome)
    if nodes is None:
        ordered = sorted(got.values(), key=lambda o: o.index)
        return Results({o.node: o for o in ordered}, duration)
    return Results({n.name: got[n.name] for n in nodes if n.name in got}, duration)


def _outcome(record: dict[str, Any]) -> NodeOutcome[Any]:
    from shoal.fanout.results import NodeOutcome

    return NodeOutcome(
        record["node"],
        value=record.get("value"),
        error=_error(record),
        duration=float(record.get("duration") or 0.0),
        index=int(record.get("index") or 0),
        attempts=int(record.get("attempts") or 1),
    )


def _command_outcome(record: dict[str, Any]) -> NodeOutcome[Any]:
    from shoal.fanout.results import CommandOutcome, CommandOutput

    error = _error(record)
    value = None
    if record.get("exit_code") is not None or record.get("stdout") or record.get("stderr"):
        value = CommandOutput(
            record.get("exit_code"), record.get("stdout") or "", record.get("stderr") or "",
            record.get("signal"), int(record.get("dropped") or 0),
        )  # fmt: skip
    return CommandOutcome(
        record["node"],
        value=value,
        error=error,
        duration=float(record.get("duration") or 0.0),
        index=int(record.get("index") or 0),
        attempts=int(record.get("attempts") or 1),
    )


# -- run -----------------------------------------------------------------------------


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _resolved_here(args: argparse.Namespace) -> list[Node]:
    """The selection resolved by the CLI (a progress bar's total; the environment's
    MQ_NODES or ClusterShell groups). Otherwise the service resolves it, and the
    selection code is not imported: ~10 ms of a warm run's start-up."""
    from .common import selected_nodes

    return selected_nodes(args)


def run(args: argparse.Namespace, command: str, options: RunOptions) -> int | None:
    """``shoal run`` over the service's held connections; None: go direct."""
    if args.stream:
        return None
    client = _client_for(args)
    if client is None:
        return None
    from .render import NodeProgress
    from .runcmds import render_run

    shown = not (args.no_progress or args.json) and _isatty(sys.stderr)
    local = shown or any(os.environ.get(v) for v in ("MQ_NODES", "CLUSTERSHELL_CFGDIR"))
    nodes = _resolved_here(args) if local else None
    body = {
        "selection": args.select if nodes is None else _selection(nodes),
        "command": command,
        "options": service_options(options),
    }
    progress = NodeProgress(len(nodes or ()), shown)
    try:
        records = client.stream("POST", "/api/v1/runs", query={"stream": 1}, body=body)
        result = _collect(records, nodes, _command_outcome, progress)
    finally:
        progress.close()
    return render_run(args, result)


def service_options(options: RunOptions) -> dict[str, Any]:
    """The run options the service honours (its ``POST /api/v1/runs`` ``options``)."""
    return {
        "timeout": options.timeout,
        "parallel": options.parallel,
        "env": options.env,
        "sudo": options.sudo,
        "retries": options.retries,
        "connect_timeout": options.connect_timeout,
        "delay": options.delay,
        "max_output": options.max_output,
    }


# -- proc ----------------------------------------------------------------------------


def proc(args: argparse.Namespace, op: str, payload: dict[str, Any]) -> int | None:
    """``shoal proc ACTION`` (``op`` = ``proc.ACTION``) through the service; None: direct."""
    if getattr(args, "follow", False):
        return None
    client = _client_for(args)
    if client is None:
        return None
    from .agentcmds import _render_programs
    from .common import selected_nodes

    nodes = selected_nodes(args)
    action = op.split(".", 1)[1]
    body = {"selection": _selection(nodes), **payload}
    results = _collect(client.stream("POST", f"/api/v1/proc/{action}", body=body), nodes, _outcome)
    if action != "logs":
        return _render_programs(args, results, op)
    return _render_logs(args, results, many=len(nodes) > 1)


def _render_logs(args: argparse.Namespace, results: Results[Any], *, many: bool) -> int:
    """``proc logs`` output, as the direct path prints it."""
    from .exitcodes import for_results
    from .render import print_failures, print_records

    for r in results:
        page: dict[str, Any] = r.value or {}
        text = page.get("data") if r.ok else ""
        if not text:
            continue
        if args.json:
            print_records({"node": r.node, "line": line} for line in text.splitlines())
            continue
        if many:
            text = "".join(f"{r.node}: {line}\n" for line in text.splitlines())
        sys.stdout.write(text)
        sys.stdout.flush()
    print_failures(results, as_json=args.json)
    return for_results(results)


# -- nodes failed --------------------------------------------------------------------


def failures(args: argparse.Namespace) -> list[Any] | None:
    """The failed set as the service has it; None: no service (read the state)."""
    client = service(args)
    if client is None:
        return None
    from shoal.nodes.health import Failure

    return [
        Failure(f["name"], f["reason"], f["since"], f["updated"])
        for f in client.request("GET", "/api/v1/nodes/failed")
    ]


# -- events ----------------------------------------------------------------------------


def events(args: argparse.Namespace) -> int | None:
    """``shoal events``: no pull (the service stores what agents push); ``--follow``
    streams the service's journal as it commits (nothing polls). None: go direct."""
    client = _client_for(args)
    if client is None:
        return None
    from shoal.agentlink import eventlog
    from shoal.state import State

    from .agentcmds import _print_events, event_filter
    from .common import selected_nodes
    from .render import print_failures

    topics, fleet = event_filter(args)
    nodes = selected_nodes(args)
    names = [n.name for n in nodes]
    unreached = _unreached(client, nodes)
    print_failures(unreached, as_json=args.json)
    from .exitcodes import for_results

    status = for_results(unreached)
    with State() as state:
        rows = eventlog.query(state, names, limit=args.lines, topics=topics, fleet=fleet)
        after = eventlog.cursor_after(state, names, rows)
    _print_events(rows, args.json)
    if not args.follow:
        return status
    wanted = set(names)
    node = names[0] if len(names) == 1 and not fleet else None
    topic = topics[0] if topics is not None and len(topics) == 1 else None
    try:
        for record in client.follow(after, node=node, topic=topic):
            if "seq" not in record:
                continue  # heartbeats, lost notices
            if record.get("node") not in wanted and not (fleet and record.get("node") is None):
                continue  # other nodes' events
            if topics is not None and (record.get("topic") or "agent") not in topics:
                continue
            _print_events([_event_row(record)], args.json)
    except KeyboardInterrupt:
        pass  # the way a follow ends
    return status


def _unreached(client: ServiceClient, nodes: list[Node]) -> Results[Any]:
    """The selected nodes the service cannot reach now (its links down or refused)."""
    from shoal.errors import ConnectError
    from shoal.fanout.results import NodeOutcome, Results

    out: dict[str, NodeOutcome[Any]] = {}
    for i, rec in enumerate(
        client.request("GET", "/api/v1/nodes", query={"selection": _selection(nodes)})
    ):
        if rec.get("link") in ("down", "refused"):
            error = ConnectError(rec.get("link_reason") or rec.get("failed") or "link down")
            error.node = rec["name"]
            out[rec["name"]] = NodeOutcome(rec["name"], error=error, index=i)
    return Results(out)


def _event_row(record: dict[str, Any]) -> Any:
    from shoal.agentlink.eventlog import EventRow

    return EventRow(
        id=record["seq"],
        node=record.get("node"),
        seq=record.get("agent_seq"),
        time=record["time"],
        kind=record["kind"],
        program=record.get("program"),
        detail=record.get("detail") or "",
        topic=record.get("topic") or "agent",
        agent=record.get("agent"),
        stored=record.get("stored") or 0.0,
    )


# -- sweep -----------------------------------------------------------------------------


def sweep(args: argparse.Namespace, every: float | None) -> int | None:
    """``shoal sweep [--every]`` over the service's connections; None: go direct."""
    client = _client_for(args)
    if client is None:
        return None
    from shoal.ops.sweep import SweepEntry, SweepRound

    from .agentcmds import _sweep_status, print_sweep
    from .common import selected_nodes

    status, number = 0, 0
    try:
        while True:
            began = time.monotonic()
            nodes = selected_nodes(args)  # again each round: "failed" changes as sweeps run
            answer = client.request("POST", "/api/v1/sweep", body={"selection": _selection(nodes)})
            number += 1
            found = [SweepEntry(e["node"], e["status"], e["detail"]) for e in answer["entries"]]
            round_ = SweepRound(number, found, float(answer["duration"]))
            status = _sweep_status(round_)
            print_sweep(args, round_)
            if every is None:
                return status
            time.sleep(max(0.0, every - (time.monotonic() - began)))
    except KeyboardInterrupt:
        return status


# -- applications --------------------------------------------------------------------


def app_status(args: argparse.Namespace, name: str) -> Any:
    """The application's AppStatus as the service reads it; None: go direct."""
    client = service(args)
    if client is None:
        return None
    from shoal.app.lifecycle import AppStatus, NodeState
    from shoal.app.store import BarrierRecord
    from shoal.client import quote

    got = client.request("GET", f"/api/v1/apps/{quote(name)}")
    listed = {a["app"]: a for a in client.request("GET", "/api/v1/apps")}.get(name, {})
    return AppStatus(
        got["app"],
        got["status"],
        got.get("phase", listed.get("phase", "")),
        got.get("file", listed.get("file", "")),
        nodes=[NodeState(**n) for n in got["nodes"]],
        barriers={
            k: BarrierRecord(k, b["released"], b["arrived"], b["needed"])
            for k, b in got["barriers"].items()
        },
        versions=dict(got["versions"]),
    )


def app_up(args: argparse.Namespace, spec: Any, select: dict[str | None, str]) -> Any:
    """``app up`` through the service's keeper (progress lines as they come); the
    UpReport, or None: go direct. The service keeps the application from then on."""
    client = service(args)
    if client is None or args.host_keys != "verify" or getattr(args, "plain_data", False):
        return None  # what the keeper does not honour (accept-new, --plain-data): direct
    from shoal.app.runtime import UpReport

    chosen = {c: select.get(c, select.get(None)) for c in spec.components}
    body = {
        "spec": str(Path(args.spec).resolve()),
        "select": {c: e for c, e in chosen.items() if e is not None} or None,
        "stream": True,
    }
    for record in client.stream("POST", "/api/v1/apps", body=body):
        if "line" in record and not args.json:
            print(f"  {record['line']}", file=sys.stderr, flush=True)
        elif "error" in record:
            raise error_from(record["error"], 500)
        elif "report" in record:
            r = record["report"]
            return UpReport(
                r["app"],
                phases=r["phases"],
                members=r["members"],
                replaced=[tuple(x) for x in r["replaced"]],
                failed=r["failed"],
                stopped=[tuple(x) for x in r.get("stopped", [])],
                shortfalls=list(r.get("shortfalls", [])),
                barriers=r["barriers"],
                steps_run=r["steps_run"],
                steps_cached=r["steps_cached"],
                wall=r["wall"],
            )
    from shoal.errors import ServiceError

    raise ServiceError("the service ended app up without a report")


def app_down(args: argparse.Namespace, name: str) -> Any:
    """``app down`` through the service's keeper (it stops keeping it); None: direct."""
    if args.keep or args.collect:
        return None
    client = service(args)
    if client is None:
        return None
    from shoal.app.lifecycle import DownReport
    from shoal.client import quote

    got = client.request("POST", f"/api/v1/apps/{quote(name)}/down")
    return DownReport(got["app"], dict(got["nodes"]))


def app_monitor(args: argparse.Namespace, name: str) -> int | None:
    """``app monitor`` when the service keeps the application: its rounds are the
    keeper's. ``--once`` asks for one round now; otherwise the keeper's actions on
    the application are printed as they are journaled, until Ctrl-C or ``--for``."""
    client = service(args)
    if client is None:
        return None
    from shoal.errors import ServiceError

    from .render import print_object, print_records

    if getattr(args, "once", False):
        rounds = client.request("POST", "/api/v1/sweep")["apps"]
        mine = [r for r in rounds if r["app"] == name]
        converged = sum(1 for r in mine if r["converged"])
        if args.json:
            print_object({"app": name, "rounds": 1, "converged": converged, "last": None})
        else:
            for r in mine:
                for problem in r["problems"]:
                    print(f"  {problem}", file=sys.stderr)
            print(f"1 check(s), {converged} convergence(s)")
        return 0
    pid = client.status().get("pid")
    if not args.json:
        print(f"{name} is kept by shoal serve (pid {pid}); its actions follow (Ctrl-C to stop)")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    if args.duration is not None:  # no line for that long ends the follow too
        client.timeout = max(1.0, float(args.duration))
    try:
        for record in client.follow(None, topic="app"):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if "seq" not in record or not str(record.get("detail", "")).startswith(name):
                continue
            if args.json:
                print_records([record])
            else:
                print(f"  {record['kind']}: {record['detail']}", flush=True)
    except KeyboardInterrupt:
        pass
    except ServiceError:
        if deadline is None or time.monotonic() < deadline:
            raise
    return 0
