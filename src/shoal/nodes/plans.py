"""Named plans: stored selection expressions, evaluated each time they are used.

``%goodNodes`` in an expression stands for the plan's expression, so a plan
``all - failed`` follows the failures as they change (DSMT's plans). Setting a
plan parses it first and refuses definitions that would close a loop between
plans; evaluation checks again (``select.py``) and reports the loop by name,
``a -> b -> a``.

Table (owned here)::

    plans(name PK, expr, created, updated)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shoal.errors import PlanCycleError, UnknownNameError, UsageError
from shoal.nodes import grammar
from shoal.state import State, opened

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    name TEXT PRIMARY KEY,
    expr TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""

PLAN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]*$")


@dataclass(frozen=True)
class Plan:
    name: str
    expr: str
    created: float
    updated: float


def ensure(state: State) -> None:
    state.ensure("plans", SCHEMA)


def find_cycle(start: str, lookup: Callable[[str], str | None]) -> list[str] | None:
    """The first loop reachable from plan ``start`` (``[a, b, a]``), or None.

    ``lookup`` gives a plan's expression, None for unknown plans (which are not
    a cycle; using them fails later with UnknownNameError). Depth first over an
    explicit stack; a chain longer than MAX_PLAN_DEPTH is refused (UsageError).
    """
    path: list[str] = []
    todo: list[tuple[list[str], Iterator[str]]] = []  # per plan on the path: refs, cursor
    on_path: set[str] = set()
    height: dict[str, int] = {}  # plans done: the longest chain of plans they start

    def enter(name: str) -> list[str] | None:
        if name in on_path:
            return [*path[path.index(name) :], name]
        expr = None if name in height else lookup(name)
        if expr is None:
            height.setdefault(name, 0)
            return None
        refs = grammar.plan_refs(grammar.parse(expr))
        path.append(name)
        on_path.add(name)
        todo.append((refs, iter(refs)))
        return None

    loop = enter(start)
    while todo and loop is None:
        refs, cursor = todo[-1]
        ref = next(cursor, None)
        if ref is not None:
            loop = enter(ref)
            continue
        todo.pop()
        name = path.pop()
        on_path.discard(name)
        height[name] = 1 + max((height[r] for r in refs), default=0)
        if height[name] > grammar.MAX_PLAN_DEPTH:
            raise UsageError(f"plan %{name}: plans nested deeper than {grammar.MAX_PLAN_DEPTH}")
    return loop


def cycle_message(loop: list[str]) -> str:
    return "plan cycle: " + " -> ".join(loop)


def set_plan(name: str, expr: str, *, state: State | None = None) -> Plan:
    """Store (or replace) plan ``name``; the expression must parse and close no loop."""
    if not PLAN_NAME.match(name):
        raise UsageError(f"invalid plan name {name!r}: use letters, digits, '_', '.', '-', ':'")
    grammar.parse(expr)
    with opened(state) as st:
        ensure(st)
        stored = {r[0]: r[1] for r in st.db.execute("SELECT name, expr FROM plans")}
        stored[name] = expr
        loop = find_cycle(name, stored.get)
        if loop:
            raise PlanCycleError(cycle_message(loop))
        now = time.time()
        with st.transaction() as db:
            db.execute(
                "INSERT INTO plans(name, expr, created, updated) VALUES (?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET expr=excluded.expr, updated=excluded.updated",
                (name, expr, now, now),
            )
        return get_plan(name, state=st)


def get_plan(name: str, *, state: State | None = None) -> Plan:
    with opened(state) as st:
        ensure(st)
        row = st.db.execute(
            "SELECT name, expr, created, updated FROM plans WHERE name=?", (name,)
        ).fetchone()
    if row is None:
        raise UnknownNameError(f"unknown plan: %{name}")
    return Plan(row[0], row[1], row[2], row[3])


def plan_expr(state: State, name: str) -> str | None:
    ensure(state)
    row = state.db.execute("SELECT expr FROM plans WHERE name=?", (name,)).fetchone()
    return None if row is None else str(row[0])


def list_plans(*, state: State | None = None) -> list[Plan]:
    with opened(state) as st:
        ensure(st)
        rows = st.db.execute(
            "SELECT name, expr, created, updated FROM plans ORDER BY name"
        ).fetchall()
    return [Plan(r[0], r[1], r[2], r[3]) for r in rows]


def remove_plan(name: str, *, state: State | None = None) -> None:
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            cur = db.execute("DELETE FROM plans WHERE name=?", (name,))
            if cur.rowcount == 0:
                raise UnknownNameError(f"unknown plan: %{name}")
