"""Fact gathering: :data:`~shoal.nodes.facts.GATHER_COMMAND` on many nodes, parsed and stored.

The pure parts (the command, :func:`~shoal.nodes.facts.parse_facts`, storage
and staleness) live in :mod:`shoal.nodes.facts`; this module only runs the
command as a fan-out and hands each node's output to them. There is one
refresh: :func:`refresh_async` inside an event loop (``app up`` gathers the
facts its requirements need over its connection pool), :func:`refresh` from
synchronous code, which goes through :func:`~shoal.fanout.run` so large
fleets are spread over worker processes like any other run. A caller that
also wants the run's per-node results (to record health from them: ``shoal
nodes facts --refresh``, ``app up``) calls :func:`gather` (or
:func:`gather_async`) and :func:`store` itself.

``rtt_ms`` is the wall time of the whole gathering command as the controller
measured it (``NodeOutcome.duration``): it includes the SSH connection when the
fan-out opens a new one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from shoal.errors import InventoryError
from shoal.nodes.facts import GATHER_COMMAND, FactRecord, RefreshReport, parse_facts, store_facts
from shoal.nodes.model import Node
from shoal.nodes.nodeset import natural_key
from shoal.state import State
from shoal.transport.base import Transport

from .commands import run, run_async
from .options import RunOptions
from .results import CommandOutcome, Results
from .scheduler import ResultCallback


async def refresh_async(
    nodes: Sequence[Node],
    *,
    options: RunOptions | None = None,
    state: State | None = None,
    transport: Transport | None = None,
) -> RefreshReport:
    """Gather facts from ``nodes`` in parallel (one round trip each) and store them."""
    return store(await gather_async(nodes, options=options, transport=transport), state)


def refresh(
    nodes: Sequence[Node],
    *,
    options: RunOptions | None = None,
    state: State | None = None,
) -> RefreshReport:
    """:func:`refresh_async` for synchronous callers (spread over workers when large)."""
    return store(gather(nodes, options=options), state)


async def gather_async(
    nodes: Sequence[Node],
    *,
    options: RunOptions | None = None,
    transport: Transport | None = None,
) -> Results[CommandOutcome]:
    """Run the gathering command on ``nodes``; the run's results (nothing stored)."""
    return await run_async(nodes, GATHER_COMMAND, options, transport=transport)


def gather(
    nodes: Sequence[Node],
    *,
    options: RunOptions | None = None,
    on_result: ResultCallback[CommandOutcome] | None = None,
) -> Results[CommandOutcome]:
    """:func:`gather_async` for synchronous callers (spread over workers when large);
    ``on_result`` is called with each node's outcome as it finishes (a progress line)."""
    return run(nodes, GATHER_COMMAND, options, on_result=on_result)


def store(result: Results[CommandOutcome], state: State | None) -> RefreshReport:
    """Parse every node's output, store the facts that parsed, report the rest."""
    now = time.time()
    records: list[FactRecord] = []
    failed: dict[str, str] = {}
    for name, res in result.results.items():
        if not res.ok:
            failed[name] = res.error.located() if res.error else f"exit status {res.exit_status}"
            continue
        try:
            data = parse_facts(res.stdout)
        except InventoryError as exc:
            failed[name] = str(exc)
            continue
        records.append(FactRecord(name, now, round(res.duration * 1000.0, 2), data))
    records.sort(key=lambda r: natural_key(r.name))
    store_facts(records, state=state)
    return RefreshReport(tuple(records), dict(sorted(failed.items())))
