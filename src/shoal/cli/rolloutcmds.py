"""``shoal rollout start|status|resume|abort``: parse, call :mod:`shoal.content.rollout`, print.

Each event of the rollout is printed as one line as it happens and stored in
the state as a ``rollout`` event (:func:`shoal.agentlink.eventlog.recorder`:
``shoal events`` shows a node's, a running service's journal all of them,
``/api/v1/events?topic=rollout``); ``status`` shows
the stored state machine (rollout, stages, each node's step). Exit status 0 when
the rollout is done (or paused at a human gate), 1 when it was rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from .common import add_agent_options, agent_settings, selected_nodes
from .render import print_records, print_table

if TYPE_CHECKING:
    from shoal.content.rollout import EventHook, RolloutResult
    from shoal.content.rolloutstate import Record
    from shoal.nodes.model import Node
    from shoal.state import State


def register(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="roll new content out by stages, health-gated, rolled back on failure",
        description="Stage LOCAL_DIR on every selected node (one P2P push, nothing switched), "
        "then stage by stage stop each node's programs, switch REMOTE_DIR, restart them and "
        "wait until they stay healthy; a failed gate or an exhausted failure budget switches "
        "every touched node back and restarts it.",
    )
    verbs = rollout.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    start = verbs.add_parser("start", help="start a rollout")
    add_agent_options(start)
    start.add_argument("local_dir", metavar="LOCAL_DIR", help="directory or depot:NAME@VERSION")
    start.add_argument("remote_dir", metavar="REMOTE_DIR", help="the pushed directory on the nodes")
    start.add_argument(
        "--programs",
        required=True,
        metavar="NAMES",
        help="comma-separated supervised programs (shoal proc) that use REMOTE_DIR",
    )
    start.add_argument(
        "--stages",
        default="100%",
        help="selections and cumulative shares, e.g. '@alpha,10%%,50%%,100%%' (default 100%%)",
    )
    start.add_argument("--max-unavailable", default="1", help="N or N%% per stage (default 1)")
    start.add_argument(
        "--failure-budget", type=int, default=0, help="failed nodes tolerated (default 0)"
    )
    start.add_argument(
        "--min-healthy-time", type=float, default=2.0, help="seconds healthy to pass (default 2)"
    )
    start.add_argument(
        "--stage-deadline", type=float, default=120.0, help="seconds per stage (default 120)"
    )
    start.add_argument(
        "--pause",
        default="0",
        help="seconds between stages, or 'manual': wait for 'shoal rollout resume' (default 0)",
    )
    start.add_argument(
        "--plain-data",
        action="store_true",
        help="chunks and token in clear TCP, no TLS (trusted networks only)",
    )
    start.set_defaults(handler=cmd_start)
    for name, helptext in (
        ("status", "a rollout's stages and node steps (default: the latest)"),
        ("resume", "carry a stopped or paused rollout on (default: the latest unfinished)"),
        ("abort", "switch every node a rollout touched back (default: the latest unfinished)"),
    ):
        verb = verbs.add_parser(name, help=helptext)
        verb.add_argument("id", nargs="?", metavar="ID", help="the rollout's id")
        if name != "status":
            add_agent_options(verb)
        else:
            verb.add_argument("--json", action="store_true", help="JSON lines, one per node")
        verb.set_defaults(
            handler={"status": cmd_status, "resume": cmd_resume, "abort": cmd_abort}[name]
        )


def _say(kind: str, node: str | None, message: str) -> None:
    print(f"{node}: {message}" if node else message, flush=True)


def _journaled(st: State) -> EventHook:
    """Each event printed as a line, then stored as a ``rollout`` event in ``st``."""
    from shoal.agentlink.eventlog import recorder

    record = recorder(st, "rollout")

    def say(kind: str, node: str | None, message: str) -> None:
        _say(kind, node, message)
        record(kind, node, message)

    return say


def cmd_start(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.content.rollout import RolloutPlan, parse_stages, rollout_async
    from shoal.state import State

    plan = RolloutPlan.from_dict(
        {
            "stages": parse_stages(args.stages),
            "max_unavailable": args.max_unavailable,
            "failure_budget": args.failure_budget,
            "min_healthy_time": args.min_healthy_time,
            "stage_deadline": args.stage_deadline,
            "pause": args.pause,
        }
    )
    plan.plain_data = args.plain_data
    nodes = selected_nodes(args)
    programs = [p.strip() for p in args.programs.split(",") if p.strip()]
    opts = AgentOptions(**agent_settings(args))
    with State() as st:
        result = asyncio.run(
            rollout_async(
                nodes, args.local_dir, args.remote_dir, programs, plan, opts,
                state=st, on_event=_journaled(st),
            )
        )  # fmt: skip
    return _finish(result)


def _finish(result: RolloutResult) -> int:
    for node, why in sorted(result.failed.items()):
        print(f"{node}: {why}", file=sys.stderr)
    return 0 if result.ok else 1


def _pick(rid: str | None, unfinished: bool) -> tuple[str, list[Node]]:
    from shoal.content.rolloutstate import RolloutStore
    from shoal.errors import UsageError
    from shoal.nodes.select import resolve
    from shoal.state import State

    with State() as st:
        store = RolloutStore(st)
        rid = rid or store.latest(unfinished=unfinished)
        if rid is None:
            raise UsageError("no rollout to act on" + (" with work left" if unfinished else ""))
        names = set(store.get(rid).nodes)
    return rid, [n for n in resolve(None) if n.name in names]


def cmd_resume(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.content.rollout import resume_async
    from shoal.state import State

    rid, nodes = _pick(args.id, True)
    opts = AgentOptions(**agent_settings(args))
    with State() as st:
        result = asyncio.run(resume_async(rid, nodes, opts, state=st, on_event=_journaled(st)))
    return _finish(result)


def cmd_abort(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.content.rollout import abort_async
    from shoal.state import State

    rid, nodes = _pick(args.id, True)
    opts = AgentOptions(**agent_settings(args))
    with State() as st:
        result = asyncio.run(abort_async(rid, nodes, opts, state=st, on_event=_journaled(st)))
    return 0 if result.state == "rolled_back" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from shoal.content.rolloutstate import RolloutStore
    from shoal.state import State

    rid, _ = _pick(args.id, False)
    with State() as st:
        rec = RolloutStore(st).get(rid)
    if args.json:
        print_records(_records(rec))
        return 0
    print(f"rollout {rec.id}: {rec.state} ({rec.target} -> {rec.version[:12]})")
    if rec.reason:
        print(f"reason: {rec.reason}")
    for idx, (label, sstate) in enumerate(rec.stages):
        print(f"stage {idx + 1} ({label}): {sstate}")
    rows = [
        [s.node, str(s.stage + 1), s.step, (s.previous or "-")[:12], s.detail]
        for s in rec.nodes.values()
    ]
    print_table(rows, ["NODE", "STAGE", "STEP", "PREVIOUS", "DETAIL"])
    return 0


def _records(rec: Record) -> list[dict[str, Any]]:
    return [
        {
            "rollout": rec.id,
            "state": rec.state,
            "version": rec.version,
            "node": s.node,
            "stage": s.stage + 1,
            "step": s.step,
            "previous": s.previous,
            "detail": s.detail,
        }
        for s in rec.nodes.values()
    ]
