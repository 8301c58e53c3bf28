"""The failed set: nodes the last command could not reach, with reason and time.

Selections read it through the words ``failed`` (failed nodes that are in the
inventory) and ``healthy`` (every other node). Nothing below the adapters
writes it on its own: the CLI (later the service) passes each command's
per-node results to :func:`record`, once, with the command's :class:`Policy`:

* ``Policy.OUTCOME`` (``run``, ``cp``, ``nodes facts --refresh``): a node that
  did not succeed joins the set with ``"KIND: REASON"`` — unreachable, timed
  out, host key or authentication refused, or its command exited non-zero or
  was killed; a node that succeeded leaves it.
* ``Policy.REACHABILITY`` (agent and program operations, ``push``,
  ``rollback``, ``versions``, ``events``, ``sweep``, ``app``): a node that
  could not be reached or commanded over SSH (a
  :class:`~shoal.errors.TransportError`) joins; every node that answered
  leaves, whatever its agent said (a refusal, a missing agent or a failed
  push say nothing about the node's health).
* Under both, a :class:`~shoal.errors.LocalError` (the controller's own side
  failed: a closed pipe, an unwritable destination) leaves the node as it was.

:func:`mark_failed` and :func:`mark_healthy` are the storage underneath.

Table (owned here)::

    node_health(name PK, reason, since, updated)
        since   when the node was first marked failed in its current failure
        updated when it was last marked failed (the reason is the latest one)

The table is keyed by name, not tied to the inventory, so nodes known only
through ``MQ_NODES`` are tracked too.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shoal.errors import LocalError, ShoalError, TransportError
from shoal.nodes.nodeset import natural_key
from shoal.state import State, opened

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_health (
    name TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    since: float
    updated: float


def ensure(state: State) -> None:
    state.ensure("health", SCHEMA)


class Policy(enum.Enum):
    """Which nodes a command's results move into or out of the failed set (see above)."""

    OUTCOME = "outcome"
    REACHABILITY = "reachability"


class Outcome(Protocol):
    """What :func:`record` reads of one node's result (``shoal.fanout.results``)."""

    @property
    def node(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> ShoalError | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def reason(self) -> str: ...


def verdicts(results: Iterable[Outcome], policy: Policy) -> tuple[dict[str, str], list[str]]:
    """(nodes that join the failed set with their reasons, nodes that leave it); pure."""
    failed: dict[str, str] = {}
    healthy: list[str] = []
    for r in results:
        if isinstance(r.error, LocalError):
            continue
        joins = not r.ok if policy is Policy.OUTCOME else isinstance(r.error, TransportError)
        if joins:
            failed[r.node] = f"{r.kind}: {r.reason}"
        else:
            healthy.append(r.node)
    return failed, healthy


def record(results: Iterable[Outcome], policy: Policy, *, state: State | None = None) -> None:
    """Update the failed set from one command's per-node results under ``policy``."""
    failed, healthy = verdicts(results, policy)
    if failed:
        mark_failed(failed, state=state)
    if healthy:
        mark_healthy(healthy, state=state)


def mark_failed(
    failures: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    state: State | None = None,
    now: float | None = None,
) -> None:
    """Record nodes as failed with a one-line reason each (``{name: reason}``)."""
    items = list(failures.items() if isinstance(failures, Mapping) else failures)
    if not items:
        return
    t = time.time() if now is None else now
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            db.executemany(
                "INSERT INTO node_health(name, reason, since, updated) VALUES (?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET reason=excluded.reason,"
                " updated=excluded.updated",
                [(name, reason, t, t) for name, reason in items],
            )


def mark_healthy(names: Iterable[str], *, state: State | None = None) -> list[str]:
    """Clear the failure of the nodes that answered; the names that were failed."""
    wanted = list(names)
    if not wanted:
        return []
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            failed = {r[0] for r in db.execute("SELECT name FROM node_health")}
            healed = [n for n in wanted if n in failed]
            db.executemany("DELETE FROM node_health WHERE name=?", [(n,) for n in healed])
    return sorted(healed, key=natural_key)


def clear_failed(names: Iterable[str] | None = None, *, state: State | None = None) -> list[str]:
    """Forget failures: of ``names``, or all when None. The names cleared."""
    with opened(state) as st:
        ensure(st)
        if names is None:
            with st.transaction() as db:
                gone = [r[0] for r in db.execute("SELECT name FROM node_health")]
                db.execute("DELETE FROM node_health")
            return sorted(gone, key=natural_key)
    return mark_healthy(names, state=state)


def failed_names(state: State, *, in_inventory: bool = False) -> set[str]:
    """Names in the failed set (only those in the inventory when ``in_inventory``)."""
    ensure(state)
    if in_inventory:
        from shoal.nodes.inventory import ensure as ensure_inventory

        ensure_inventory(state)
        rows = state.db.execute("SELECT h.name FROM node_health h JOIN inv_nodes n USING (name)")
        return {r[0] for r in rows}
    return {r[0] for r in state.db.execute("SELECT name FROM node_health")}


def failures(state: State | None = None) -> list[Failure]:
    """Every recorded failure, in natural order of the node names."""
    with opened(state) as st:
        ensure(st)
        rows = st.db.execute("SELECT name, reason, since, updated FROM node_health").fetchall()
    out = [Failure(r[0], r[1], r[2], r[3]) for r in rows]
    out.sort(key=lambda f: natural_key(f.name))
    return out
