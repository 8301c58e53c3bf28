"""Evaluation of selection expressions, and :func:`resolve` used by every command.

Evaluation is pure over a :class:`Universe` (what ``all``, ``@group``,
``failed``, ``%plan`` and attribute keys mean): :class:`StateUniverse` reads the
state database lazily (only the groups, plans and attribute keys an expression
mentions are loaded), :class:`MemoryUniverse` holds everything in memory (unit
tests, and the ``MQ_NODES`` fallback).

Meaning of the words:
* a node-set literal (``n[1-4]``) is exactly those names, in the inventory or
  not; :func:`resolve` refuses a result that names nodes the inventory lacks;
* ``all`` (also ``@all``, ``@*``) is every node; ``failed`` the nodes of the
  failed set that are in ``all``; ``healthy`` is ``all`` minus ``failed``;
* ``[KEY OP VALUE]`` alone filters ``all``; after an operand it filters that
  operand. KEY is looked up as a node attribute, then as a fact, then as the
  node's ``host``/``user``/``port``/``name``; ``fact.KEY`` / ``facts.KEY`` reads
  only facts. A node without KEY never satisfies a comparison (``!=``
  included); ``[KEY]`` tests presence, ``[!KEY]`` absence. Comparisons are
  numeric when both sides read as numbers, else textual; ``~`` / ``!~`` are
  regular-expression searches; booleans read as ``true`` / ``false``.
* ``limit(E, N)``: the first N of E in natural order; ``random(E, N[, seed])``:
  N drawn at random (reproducible with a seed); ``spread(E, N, by=KEY)``: N
  nodes taken round-robin over the distinct values of KEY (sorted; nodes
  without KEY form one last bucket), so as many values as possible are covered.
  N may be a percentage of E's size (``10%``, rounded up).

``MQ_NODES`` (CoDeploy's convention) names a plain node list, with
``MQ_SLICE`` as the user of every node whose line names none. It is the
universe when asked for: ``-s mq`` (all of it) or ``use_mq=True`` (the
``use_mq_nodes`` setting), and, as before, when the inventory holds no node at
all. Otherwise it is ignored, and :func:`mq_ignored` says so (the CLI warns).
Groups are those the list's ``groups=`` give; plans and the failed set still
come from the state database.

Ad-hoc targets (:class:`AdHoc`, the CLI's ``-w HOSTS -l USER``): ``-w`` takes
a node set (``web[1-4],db1``) whose items may carry ``user@`` and ``:port``
(``root@10.0.0.[1-8]:2222``); its hosts need not be in the inventory and are
not added to it. A host that is an inventory name is that record (``user@`` and
``:port`` still win); any other is a node of that name, reached as ``ssh HOST``
would. An item ``@group`` (``@source:group``) stands for the group's members,
as ``clush -w @group``: the inventory's group of that name, else ClusterShell's
(:mod:`.groupsources`). With ``-w``, a selection narrows the listed hosts: it is
evaluated over them (``all`` is them; ``failed``, plans, the inventory records'
groups and ClusterShell's groups and attributes still count).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random as _random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shoal.errors import EmptySelectionError, PlanCycleError, SelectionError, UnknownNameError
from shoal.nodes import grammar
from shoal.nodes.grammar import (
    MAX_PLAN_DEPTH,
    BinOp,
    Call,
    Condition,
    Expr,
    Filter,
    Group,
    Keyword,
    Names,
    PlanRef,
)
from shoal.nodes.model import AttrValue, Node
from shoal.nodes.nodeset import MAX_NAMES, NodeSet, expand, fold, natural_key, natural_sorted
from shoal.state import State, opened

FIELDS = ("host", "user", "port", "name")


class Universe(Protocol):
    """What an expression is evaluated against."""

    def all_names(self) -> set[str]: ...

    def group(self, name: str) -> set[str]:
        """Members of a group; UnknownNameError when there is no such group."""
        ...

    def failed(self) -> set[str]:
        """Names in the failed set that are also in the universe."""
        ...

    def plan(self, name: str) -> str | None:
        """The plan's expression, or None when there is no such plan."""
        ...

    def values(self, key: str) -> Mapping[str, AttrValue]:
        """``{node: value}`` for every node that has attribute/fact ``key``."""
        ...

    def nodes(self, names: Iterable[str]) -> list[Node]:
        """Records of the named nodes that exist, in natural order."""
        ...


class MemoryUniverse:
    """Everything in memory: nodes, facts (``{node: {key: value}}``), failed, plans."""

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        failed: Iterable[str] = (),
        plans: Mapping[str, str] | None = None,
        facts: Mapping[str, Mapping[str, AttrValue]] | None = None,
        groups: Iterable[str] = (),
    ) -> None:
        self.by_name = {n.name: n for n in nodes}
        self._failed = set(failed)
        self.plans = dict(plans or {})
        self.facts = {k: dict(v) for k, v in (facts or {}).items()}
        self._groups: dict[str, set[str]] = {g: set() for g in groups}
        for n in self.by_name.values():
            for g in n.groups:
                self._groups.setdefault(g, set()).add(n.name)

    def all_names(self) -> set[str]:
        return set(self.by_name)

    def group(self, name: str) -> set[str]:
        if name not in self._groups:
            raise UnknownNameError(f"unknown group: @{name}")
        return set(self._groups[name])

    def failed(self) -> set[str]:
        return {n for n in self._failed if n in self.by_name}

    def plan(self, name: str) -> str | None:
        return self.plans.get(name)

    def values(self, key: str) -> Mapping[str, AttrValue]:
        return _merge_values(
            key,
            lambda k: {n: v.attrs[k] for n, v in self.by_name.items() if k in v.attrs},
            lambda k: {n: f[k] for n, f in self.facts.items() if k in f},
            lambda k: {
                n: v for n, node in self.by_name.items() if (v := getattr(node, k)) is not None
            },
            lambda: self.by_name,
        )

    def nodes(self, names: Iterable[str]) -> list[Node]:
        found = [self.by_name[n] for n in names if n in self.by_name]
        found.sort(key=lambda n: natural_key(n.name))
        return found


def _merge_values(
    key: str,
    attrs: Callable[[str], Mapping[str, AttrValue]],
    facts: Callable[[str], Mapping[str, AttrValue]],
    fields: Callable[[str], Mapping[str, AttrValue]],
    names: Callable[[], Iterable[str]],
) -> dict[str, AttrValue]:
    """Attribute, then fact, then record field: the first that a node has wins."""
    for prefix in ("fact.", "facts."):
        if key.startswith(prefix):
            return dict(facts(key[len(prefix) :]))
    out: dict[str, AttrValue] = {}
    if key in FIELDS:
        out.update({n: n for n in names()} if key == "name" else fields(key))
    out.update(facts(key))
    out.update(attrs(key))
    return out


def _clustershell_group(name: str) -> set[str] | None:
    """``@name`` from ClusterShell's group sources; None when no source is configured for
    it (InventoryError when one is and says no)."""
    from shoal.nodes import groupsources

    sources = groupsources.configured()
    return sources.members(name) if sources.knows(name) else None


class StateUniverse:
    """The inventory, failed set, plans and facts of a state database, read lazily."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._all: set[str] | None = None

    def all_names(self) -> set[str]:
        from shoal.nodes import inventory

        if self._all is None:
            self._all = inventory.all_names(self.state)
        return set(self._all)

    def group(self, name: str) -> set[str]:
        from shoal.nodes import inventory

        try:
            return inventory.group_members(self.state, name)
        except UnknownNameError:  # not the inventory's: a ClusterShell group (groups.conf)?
            found = _clustershell_group(name)
            if found is None:
                raise
            return found

    def failed(self) -> set[str]:
        from shoal.nodes import health

        return health.failed_names(self.state, in_inventory=True)

    def plan(self, name: str) -> str | None:
        from shoal.nodes import plans

        return plans.plan_expr(self.state, name)

    def values(self, key: str) -> Mapping[str, AttrValue]:
        from shoal.nodes import facts, inventory

        return _merge_values(
            key,
            lambda k: inventory.attr_values(self.state, k),
            lambda k: facts.fact_values(self.state, k),
            lambda k: inventory.field_values(self.state, k),
            self.all_names,
        )

    def nodes(self, names: Iterable[str]) -> list[Node]:
        from shoal.nodes import inventory

        return inventory.load_nodes(self.state, names)


class ListUniverse(MemoryUniverse):
    """Nodes listed outside the inventory (``MQ_NODES``, ``-w``) as the universe
    (groups from their records); failed set and plans from the state."""

    def __init__(self, nodes: Iterable[Node], state: State) -> None:
        super().__init__(nodes)
        self.backing = StateUniverse(state)

    def group(self, name: str) -> set[str]:
        try:
            return super().group(name)
        except UnknownNameError:  # not the listed records': a ClusterShell group?
            found = _clustershell_group(name)
            if found is None:
                raise
            return found & self.by_name.keys()  # -s narrows what is listed

    def failed(self) -> set[str]:
        from shoal.nodes import health

        return {n for n in health.failed_names(self.backing.state) if n in self.by_name}

    def plan(self, name: str) -> str | None:
        return self.backing.plan(name)


class MqUniverse(ListUniverse):
    """The ``MQ_NODES`` list as the universe (groups from its ``groups=``)."""

    def __init__(self, nodes: Iterable[Node], state: State) -> None:
        super().__init__(nodes, state)
        self.path = os.environ.get("MQ_NODES", "")


# --- attribute tests ---------------------------------------------------------


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return None if math.isnan(f) else f
    return None


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_test(cond: Condition) -> Callable[[AttrValue], bool]:
    """A predicate over one node's value (the node has the key) for ``cond``."""
    op, want = cond.op, cond.value
    if op == "has":
        return lambda v: True
    if op in ("~", "!~"):
        rx = re.compile(want)
        if op == "~":
            return lambda v: rx.search(_as_text(v)) is not None
        return lambda v: rx.search(_as_text(v)) is None
    num = _as_number(want)
    compare: dict[str, Callable[[object, object], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,  # type: ignore[operator]
        "<=": lambda a, b: a <= b,  # type: ignore[operator]
        ">": lambda a, b: a > b,  # type: ignore[operator]
        ">=": lambda a, b: a >= b,  # type: ignore[operator]
    }
    fn = compare[op]

    def test(value: AttrValue) -> bool:
        if num is not None:
            kind = type(value)
            if kind is int or kind is float:
                return fn(value, num)
            n = _as_number(value)
            if n is not None:
                return fn(n, num)
        return fn(_as_text(value), want)

    return test


# --- evaluation --------------------------------------------------------------


class Evaluator:
    """Evaluates ASTs against one universe; caches per-expression lookups."""

    def __init__(self, universe: Universe) -> None:
        self.u = universe
        self._all: set[str] | None = None
        self._failed: set[str] | None = None
        self._groups: dict[str, set[str]] = {}
        self._values: dict[str, Mapping[str, AttrValue]] = {}
        self._plans: dict[str, set[str]] = {}
        self._stack: list[str] = []
        #: names the plans still to be parsed may stand for (grammar.parse's bound)
        self.budget = MAX_NAMES

    def all(self) -> set[str]:
        if self._all is None:
            self._all = self.u.all_names()
        return self._all

    def failed(self) -> set[str]:
        if self._failed is None:
            self._failed = self.u.failed()
        return self._failed

    def eval(self, node: Expr) -> set[str]:
        """The names of ``node``, evaluated over an explicit stack (post-order): a list
        of 5,000 names joined by ``,`` is an operator chain 5,000 deep."""
        results: list[set[str]] = []  # every set here is a fresh one, ours to change
        todo: list[tuple[Expr, bool]] = [(node, False)]
        while todo:
            n, operands_done = todo.pop()
            inner = _operands(n)
            if inner and not operands_done:
                todo.append((n, True))
                todo.extend((o, False) for o in reversed(inner))
            elif isinstance(n, BinOp):
                right = results.pop()
                left = results[-1]
                if n.op == "union":
                    left |= right
                elif n.op == "difference":
                    left -= right
                elif n.op == "intersection":
                    left &= right
                else:
                    left ^= right
            elif isinstance(n, Filter):
                base = self.all() if n.operand is None else results.pop()
                results.append(self.filter(base, n.condition))
            elif isinstance(n, Call):
                results.append(self.call(n, results.pop()))
            else:
                results.append(self.leaf(n))
        return results[0]

    def leaf(self, node: Names | Keyword | Group | PlanRef) -> set[str]:
        """The names of an expression without operands."""
        if isinstance(node, Names):
            self.budget -= len(node.names)
            return set(node.names)
        if isinstance(node, Keyword):
            if node.word == "all":
                return set(self.all())
            if node.word == "failed":
                return set(self.failed())
            return self.all() - self.failed()
        if isinstance(node, Group):
            if node.name not in self._groups:
                self._groups[node.name] = self.u.group(node.name)
            return set(self._groups[node.name])
        return set(self.plan(node.name))

    def plan(self, name: str) -> set[str]:
        if name in self._stack:
            loop = [*self._stack[self._stack.index(name) :], name]
            raise PlanCycleError("plan cycle: " + " -> ".join(loop))
        if name in self._plans:
            return self._plans[name]
        if len(self._stack) >= MAX_PLAN_DEPTH:
            chain = " -> ".join(f"%{p}" for p in [*self._stack, name])
            raise SelectionError(f"plans nested deeper than {MAX_PLAN_DEPTH}: {chain}")
        expr = self.u.plan(name)
        if expr is None:
            raise UnknownNameError(f"unknown plan: %{name}")
        self._stack.append(name)
        try:
            result = self.eval(grammar.parse(expr, max(self.budget, 0)))
        finally:
            self._stack.pop()
        self._plans[name] = result
        return result

    def values(self, key: str) -> Mapping[str, AttrValue]:
        if key not in self._values:
            self._values[key] = self.u.values(key)
        return self._values[key]

    def filter(self, base: set[str], cond: Condition) -> set[str]:
        values = self.values(cond.key)
        if cond.op == "lacks":
            return {n for n in base if n not in values}
        test = make_test(cond)
        if len(base) < len(values):
            return {n for n in base if n in values and test(values[n])}
        return {n for n, v in values.items() if n in base and test(v)}

    def call(self, node: Call, members: set[str]) -> set[str]:
        """``node`` applied to the names of its argument, ``members``."""
        n = node.count.of(len(members))
        if n >= len(members):
            return members
        if node.func == "limit":
            return set(natural_sorted(members)[:n])
        if node.func == "random":
            rng = _random.Random(node.seed) if node.seed is not None else _random.Random()
            return set(rng.sample(natural_sorted(members), n))
        assert node.by is not None
        return spread(members, n, self.values(node.by))


def _operands(node: Expr) -> tuple[Expr, ...]:
    """The sub-expressions ``node`` is computed from, left to right."""
    if isinstance(node, BinOp):
        return (node.left, node.right)
    if isinstance(node, Filter):
        return () if node.operand is None else (node.operand,)
    if isinstance(node, Call):
        return (node.arg,)
    return ()


def spread(members: Iterable[str], n: int, values: Mapping[str, AttrValue]) -> set[str]:
    """``n`` of ``members`` round-robin over the distinct values of an attribute."""
    buckets: dict[str | None, list[str]] = {}
    for name in natural_sorted(members):
        v = values.get(name)
        buckets.setdefault(None if v is None else _as_text(v), []).append(name)
    order = sorted((k for k in buckets if k is not None), key=natural_key)
    if None in buckets:
        order.append(None)  # type: ignore[arg-type]
    queues = [buckets[k] for k in order]
    out: list[str] = []
    depth = 0
    while len(out) < n:
        for q in queues:
            if depth < len(q):
                out.append(q[depth])
                if len(out) == n:
                    break
        depth += 1
    return set(out)


def evaluate(expr: str | Expr, universe: Universe) -> NodeSet:
    """The names an expression selects (no check that they exist)."""
    ast = grammar.parse(expr) if isinstance(expr, str) else expr
    return NodeSet._wrap(Evaluator(universe).eval(ast))


# --- the universe commands use ------------------------------------------------


def mq_nodes() -> list[Node] | None:
    """The ``MQ_NODES`` list (users defaulting to ``MQ_SLICE``), None when unset."""
    path = os.environ.get("MQ_NODES")
    if not path:
        return None
    from shoal.nodes.importers import read_plain_file
    from shoal.nodes.inventory import with_defaults

    slice_user = os.environ.get("MQ_SLICE") or None
    return [with_defaults(n, slice_user) for n in read_plain_file(path)]


#: The selection that means the whole ``MQ_NODES`` list.
MQ_WORD = "mq"


def universe(state: State, *, use_mq: bool = False) -> Universe:
    """The inventory of ``state``, or the MQ_NODES list when asked for or the inventory is
    empty."""
    from shoal.nodes import inventory

    if use_mq or inventory.count(state) == 0:
        listed = mq_nodes()
        if listed is not None:
            return MqUniverse(listed, state)
        if use_mq:
            raise SelectionError("the MQ_NODES list was asked for but MQ_NODES is not set")
    return StateUniverse(state)


def mq_ignored(expr: str | None, *, use_mq: bool = False, state: State | None = None) -> str | None:
    """A one-line warning when ``MQ_NODES`` is set but this selection does not use it."""
    if not os.environ.get("MQ_NODES") or use_mq or expr == MQ_WORD:
        return None
    from shoal.nodes import inventory

    with opened(state) as st:
        if inventory.count(st) == 0:
            return None
    return (
        "warning: MQ_NODES is set but ignored (the inventory has nodes): "
        "select its list with -s mq, or set use_mq_nodes"
    )


@dataclass(frozen=True)
class AdHoc:
    """Targets named on the command line: ``-w HOSTS`` and ``-l USER``."""

    #: a node set whose items may be ``user@host:port`` (None: the inventory)
    hosts: str | None = None
    #: the user of every node that names none (``-l``)
    user: str | None = None


def _split_items(text: str) -> list[str]:
    """``-w``'s comma-separated items (commas inside ``[...]`` belong to a range)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parse_hosts(text: str, groups: Callable[[str], set[str]] | None = None) -> list[Node]:
    """The nodes of ``-w`` (``[user@]NODESET[:port]`` items), in the order given; an
    ``@group`` item is ``groups(group)``'s names, in natural order (refused without
    ``groups``)."""
    found: dict[str, Node] = {}
    grouped: set[str] = set()  # names only a group gave: a user@/:port item may refine them
    had_group = False
    for item in _split_items(text):
        if item.startswith("@"):
            if len(item) == 1:
                raise SelectionError("-w '@': a group needs a name")
            if groups is None:
                raise SelectionError(f"-w {item!r}: groups are read by resolve(), not here")
            had_group = True
            for name in natural_sorted(groups(item[1:])):
                if name not in found:
                    found[name] = Node(name=name)
                    grouped.add(name)
            continue
        user, at, rest = item.rpartition("@")
        if at and not user:
            raise SelectionError(f"-w {item!r}: empty user before '@'")
        port: int | None = None
        head, colon, tail = rest.rpartition(":")
        if colon and not tail.endswith("]"):
            if not tail.isdigit() or not 0 < int(tail) < 65536:
                raise SelectionError(f"-w {item!r}: the port must be a number from 1 to 65535")
            rest, port = head, int(tail)
        for name in expand(rest):
            node = Node(name=name, user=user or None, port=port)
            seen = None if name in grouped else found.get(name)
            grouped.discard(name)
            if seen is not None and (seen.user, seen.port) != (node.user, node.port):
                raise SelectionError(f"-w: host {name} given twice with different user or port")
            found[name] = node
    if not found:
        why = " (its groups are empty)" if had_group else ""
        raise SelectionError(f"-w {text!r}: no host given{why}")
    return list(found.values())


def _adhoc_nodes(hosts: str, state: State) -> list[Node]:
    """``-w``'s nodes: an inventory name is its record (``user@``/``:port`` still win)."""
    from shoal.nodes import inventory

    listed = parse_hosts(hosts, StateUniverse(state).group)
    known = {n.name: n for n in inventory.load_nodes(state, [n.name for n in listed])}
    out = []
    for node in listed:
        record = known.get(node.name)
        if record is not None:
            node = dataclasses.replace(
                record, user=node.user or record.user, port=node.port or record.port
            )
        out.append(node)
    return out


def _mq_text(expr: str | None, use_mq: bool) -> tuple[bool, str]:
    """Whether the MQ_NODES list is the universe, and the expression to evaluate over it."""
    mq = use_mq or (expr == MQ_WORD and bool(os.environ.get("MQ_NODES")))
    return mq, "all" if expr is None or (expr == MQ_WORD and mq) else expr


def select(expr: str | None, *, state: State | None = None, use_mq: bool = False) -> NodeSet:
    """The names ``expr`` selects (all nodes when None); may be empty."""

    mq, text = _mq_text(expr, use_mq)
    with opened(state) as st:
        return evaluate(text, universe(st, use_mq=mq))


def resolve(
    expr: str | None,
    *,
    state: State | None = None,
    adhoc: AdHoc | None = None,
    use_mq: bool = False,
) -> list[Node]:
    """The nodes a command should act on, in natural order.

    ``expr`` None means all nodes (of ``adhoc.hosts`` when given); ``mq`` the
    MQ_NODES list. ``adhoc.user`` is the user of every node that names none.
    Raises SelectionSyntaxError, UnknownNameError (unknown group, plan, or node
    names not in the inventory), PlanCycleError, and EmptySelectionError naming
    the expression when nothing matches.
    """

    adhoc = adhoc or AdHoc()
    mq, text = _mq_text(expr, use_mq)
    with opened(state) as st:
        u: Universe
        if adhoc.hosts is not None:
            u = ListUniverse(_adhoc_nodes(adhoc.hosts, st), st)
        else:
            u = universe(st, use_mq=mq)
        names = evaluate(text, u)
        if not names:
            hint = ""
            if adhoc.hosts is not None:
                hint = f" (among -w {adhoc.hosts})"
            elif expr is None or not u.all_names():
                hint = " (the inventory is empty: shoal nodes import FILE, or -w HOSTS)"
            raise EmptySelectionError(f"selection matched no nodes: {text}{hint}")
        found = u.nodes(names.names())
    if len(found) != len(names):
        missing = names - {n.name for n in found}
        where = "-w's hosts" if adhoc.hosts is not None else "the inventory"
        raise UnknownNameError(f"unknown node(s) not in {where}: {fold(missing)}")
    if adhoc.user:
        found = [n if n.user else dataclasses.replace(n, user=adhoc.user) for n in found]
    return found
