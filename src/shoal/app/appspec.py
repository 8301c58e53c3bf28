"""The application spec: typed model, loading, schema and semantic checks.

A spec (YAML, or Plush XML through :mod:`.plush`) is checked in two passes,
both reporting ``file:line: what was expected``:

1. against ``schema.json`` (shipped with Shoal, usable by editors);
2. semantically: components named in ``after:`` exist, so do the steps they
   name; barriers used by steps are declared (and declared ones are used);
   software named by a component exists; ``${...}`` variables are known; the
   predecessor graph has no cycle.

Steps of a component run in list order on each of its nodes; ``after:``
adds predecessors in other components (``comp`` = all of its steps, or
``comp.step``) that must be done on every node of that component first.
``prefer:`` ranks a component's candidates before the first ``count`` are
taken (``[{lowest: rtt_ms}, {highest: disk_free_gb}]``: facts or attributes,
earlier entries first, a missing value last, ties in name order). A
``barrier`` step waits until the barrier releases (see :mod:`.barrier`).
A ``lifecycle: S`` step is a service run by software S's own DSMT scripts
(see :mod:`.pkgscripts`): ``start.sh`` starts it, ``stop.sh`` runs before
the stop signal, ``status.sh`` is its health check, ``install.sh`` an
install step of S; S must be in the component's ``software``.

Variables in ``run``/``service``/``health``/``ready``/env values:
``${node}`` ``${index}`` ``${component}`` ``${app}`` ``${dir}`` (the
application's directory on the node) ``${addr}`` ``${count}`` and, for any
component C and software S, ``${addrs.C}`` (comma-separated addresses),
``${addr.C}`` (its first node's address), ``${nodes.C}``, ``${count.C}`` and
``${sw.S}`` (the software's directory on the node).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shoal.content.rollout import RolloutPlan
from shoal.errors import ConfigError, UsageError
from shoal.numeric import is_finite

from .located import Located, PathKey
from .located import load as load_yaml
from .policy import Policy
from .validate import validate

VAR_RE = re.compile(r"\$\{([A-Za-z_]+)(?:\.([A-Za-z0-9_-]+))?\}")
PLAIN_VARS = ("node", "index", "component", "app", "dir", "addr", "count")
COMPONENT_VARS = ("addrs", "addr", "nodes", "count")
REQ_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|>|<|=)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Requirement:
    """``KEY OP VALUE`` on a node's facts or attributes (``mem_available_mb >= 512``)."""

    key: str
    op: str
    value: str
    text: str

    @classmethod
    def parse(cls, text: str) -> Requirement:
        m = REQ_RE.match(text)
        if m is None:
            raise ValueError(f"expected KEY OP VALUE, got {text!r}")
        op = "==" if m.group(2) == "=" else m.group(2)
        return cls(m.group(1), op, m.group(3), f"{m.group(1)} {op} {m.group(3)}")

    def check(self, actual: object) -> bool:
        """True when ``actual`` satisfies it (None: the node lacks the key → False)."""
        if actual is None:
            return False
        want_num, have_num = _number(self.value), _number(actual)
        a: Any
        b: Any
        if want_num is not None and have_num is not None:
            a, b = have_num, want_num
        else:
            a, b = str(actual).lower(), self.value.lower()
        return bool(
            {
                ">=": a >= b,
                "<=": a <= b,
                ">": a > b,
                "<": a < b,
                "==": a == b,
                "!=": a != b,
            }[self.op]
        )


def _number(value: object) -> float | None:
    """``value`` as a finite number (NaN and infinities compare as text)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value))
    except (ValueError, OverflowError):
        return None
    return number if is_finite(number) else None


@dataclass(frozen=True)
class Preference:
    """One ``prefer:`` entry: rank candidates by ``key``, ``lowest`` or ``highest`` first."""

    key: str
    highest: bool

    @property
    def text(self) -> str:
        return f"{'highest' if self.highest else 'lowest'} {self.key}"

    def rank(self, value: object) -> tuple[int, float | str]:
        """Sort key of a node's ``value``: numbers before text, a missing value last."""
        if value is None:
            return (2, 0.0)
        number = _number(value)
        if number is not None:
            return (0, -number if self.highest else number)
        return (1, str(value).lower())


@dataclass(frozen=True)
class Step:
    """One entry of a process block."""

    name: str
    kind: str  # run | service | barrier
    command: str  # the command, or the barrier's name
    after: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    restart: str = "always"
    health: str | None = None
    health_interval: float = 5.0
    ready: str | None = None
    line: int = 0
    lifecycle: str = ""  # software whose start/stop/status scripts run this service


@dataclass(frozen=True)
class Component:
    name: str
    select: str
    count: int | None  # None: every qualifying node
    require: tuple[Requirement, ...]
    on_failure: Policy
    retries: int
    software: tuple[str, ...]
    env: dict[str, str]
    steps: tuple[Step, ...]
    line: int = 0
    prefer: tuple[Preference, ...] = ()

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass(frozen=True)
class Software:
    name: str
    source: Path
    install: tuple[str, ...]
    line: int = 0
    depot: str = ""  # ``depot:NAME@VERSION`` when the software comes from the depot


@dataclass(frozen=True)
class Barrier:
    """A barrier; ``threshold`` is ``all``, a count (int) or a fraction (float)."""

    name: str
    threshold: int | float | None = None
    timeout: float | None = None
    line: int = 0

    def needed(self, participants: int) -> int:
        """Arrivals that release the barrier when ``participants`` nodes take part."""
        if self.threshold is None:
            return participants
        if isinstance(self.threshold, int):
            return min(self.threshold, participants)
        return min(participants, max(1, math.ceil(self.threshold * participants - 1e-9)))


@dataclass(frozen=True)
class AppSpec:
    name: str
    file: str
    components: dict[str, Component]
    software: dict[str, Software] = field(default_factory=dict)
    barriers: dict[str, Barrier] = field(default_factory=dict)
    cleanup: tuple[str, ...] = ()
    description: str = ""
    #: how ``app up`` rolls changed software out under running services (``rollout:``)
    rollout: RolloutPlan = field(default_factory=lambda: RolloutPlan(max_unavailable="25%"))
    document: dict[str, Any] = field(default_factory=dict, compare=False)

    def barrier_components(self, name: str) -> list[str]:
        """Components whose blocks wait at barrier ``name``."""
        return [
            c.name
            for c in self.components.values()
            if any(s.kind == "barrier" and s.command == name for s in c.steps)
        ]


# -- loading -------------------------------------------------------------------


def load(path: str | Path) -> AppSpec:
    """Load a spec file (YAML, or Plush XML by its ``.xml`` suffix or content)."""
    text_path = Path(path)
    if text_path.suffix.lower() == ".xml":
        from .plush import load_plush

        located = load_plush(text_path)
    else:
        located = load_yaml(text_path)
    spec = build(located, text_path.parent)
    for name, sw in spec.software.items():
        if not sw.depot and not sw.source.is_dir():
            where = located.where(("software", name, "source"))
            raise ConfigError(f"{where}: software {name}: {sw.source} is not a local directory")
    return spec


def _rollout(doc: Located, entry: dict[str, Any] | None) -> RolloutPlan:
    """The ``rollout:`` block (default: one stage, a quarter of the nodes at a time)."""
    try:
        return RolloutPlan.from_dict({"max_unavailable": "25%", **(entry or {})})
    except UsageError as exc:
        raise _fail(doc, ("rollout",), str(exc)) from None


def _fail(doc: Located, path: PathKey, message: str) -> ConfigError:
    return ConfigError(f"{doc.where(path)}: {message}")


def _env(value: dict[str, Any] | None) -> dict[str, str]:
    out = {}
    for k, v in (value or {}).items():
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _threshold(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, str):
        fraction = float(value.rstrip("%")) / 100.0
        return None if fraction >= 1.0 else fraction
    if isinstance(value, float):
        return None if value >= 1.0 else value
    return int(value)


def with_selections(spec: AppSpec, overrides: dict[str | None, str]) -> AppSpec:
    """``spec`` with its components' ``select`` replaced (``app up -s``): key ``None``
    for every component, else the component's name. The document is changed too, so
    what is stored (and rebuilt by a monitor or the keeper) keeps the override."""
    unknown = sorted(k for k in overrides if k is not None and k not in spec.components)
    if unknown:
        known = ", ".join(spec.components)
        raise ConfigError(f"{spec.file}: no component {unknown[0]!r} to select for ({known})")
    document = copy.deepcopy(spec.document)
    components = dict(spec.components)
    for name, comp in spec.components.items():
        expr = overrides.get(name, overrides.get(None))
        if expr is not None:
            components[name] = replace(comp, select=expr)
            document["components"][name]["select"] = expr
    return replace(spec, components=components, document=document)


def _software(name: str, entry: dict[str, Any], base: Path, line: int) -> Software:
    source, install = entry["source"], tuple(entry.get("install", []))
    if source.startswith("depot:"):
        return Software(name, Path(source), install, line, depot=source)
    return Software(name, (base / source).resolve(), install, line)


def build(doc: Located, base: Path) -> AppSpec:
    """The typed spec of a located document; ConfigError (file:line) on the first problem."""
    problems = validate(doc.value)
    if problems:
        first = min(problems, key=lambda p: (doc.line(p.path), len(p.path)))
        where = doc.where(first.path)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(f"{where}: {first.dotted()}: {first.message}{more}")
    data = doc.value
    software = {
        name: _software(name, entry, base, doc.line(("software", name)))
        for name, entry in (data.get("software") or {}).items()
    }
    barriers = {
        name: Barrier(
            name,
            _threshold((entry or {}).get("threshold")),
            (entry or {}).get("timeout"),
            doc.line(("barriers", name)),
        )
        for name, entry in (data.get("barriers") or {}).items()
    }
    components = {
        cname: _component(doc, cname, entry) for cname, entry in data["components"].items()
    }
    spec = AppSpec(
        name=data["app"],
        file=doc.file,
        components=components,
        software=software,
        barriers=barriers,
        cleanup=tuple(data.get("cleanup", [])),
        description=data.get("description", ""),
        rollout=_rollout(doc, data.get("rollout")),
        document=data,
    )
    check(spec, doc)
    return spec


def _component(doc: Located, cname: str, entry: dict[str, Any]) -> Component:
    """One validated component entry, typed; its steps in order, names once each."""
    cpath: PathKey = ("components", cname)
    steps = []
    seen: set[str] = set()
    for i, raw in enumerate(entry["processes"]):
        spath = (*cpath, "processes", i)
        if raw["name"] in seen:
            raise _fail(doc, (*spath, "name"), f"duplicate step name {raw['name']!r}")
        seen.add(raw["name"])
        kind = next(k for k in ("run", "service", "barrier", "lifecycle") if k in raw)
        lifecycle = raw.get("lifecycle", "")
        steps.append(
            Step(
                name=raw["name"],
                kind="service" if lifecycle else kind,
                command=f"${{sw.{lifecycle}}}/start.sh" if lifecycle else raw[kind],
                after=tuple(raw.get("after", [])),
                env=_env(raw.get("env")),
                timeout=raw.get("timeout"),
                restart=raw.get("restart", "always"),
                health=raw.get("health"),
                health_interval=float(raw.get("health_interval", 5.0)),
                ready=raw.get("ready"),
                line=doc.line(spath),
                lifecycle=lifecycle,
            )
        )
    require = []
    for i, text in enumerate(entry.get("require", [])):
        try:
            require.append(Requirement.parse(text))
        except ValueError as exc:
            raise _fail(doc, (*cpath, "require", i), str(exc)) from None
    prefer = tuple(
        Preference(item.get("highest") or item["lowest"], "highest" in item)
        for item in entry.get("prefer", [])
    )
    for i, pref in enumerate(prefer):
        if pref.key in {p.key for p in prefer[:i]}:
            raise _fail(doc, (*cpath, "prefer", i), f"prefer: {pref.key!r} is ranked twice")
    count = entry.get("count", 1)
    return Component(
        name=cname,
        select=entry["select"],
        count=None if count == "all" else int(count),
        require=tuple(require),
        on_failure=Policy(entry.get("on_failure", "restart")),
        retries=int(entry.get("retries", 2)),
        software=tuple(entry.get("software", [])),
        env=_env(entry.get("env")),
        steps=tuple(steps),
        line=doc.line(cpath),
        prefer=prefer,
    )


# -- semantic checks -------------------------------------------------------------


def check(spec: AppSpec, doc: Located) -> None:
    """Cross-references, variables and the predecessor graph; ConfigError on the first."""
    used_barriers: set[str] = set()
    for comp in spec.components.values():
        cpath: PathKey = ("components", comp.name)
        for i, sw in enumerate(comp.software):
            if sw not in spec.software:
                known = ", ".join(spec.software) or "none declared"
                raise _fail(doc, (*cpath, "software", i), f"unknown software {sw!r} ({known})")
        for i, step in enumerate(comp.steps):
            spath = (*cpath, "processes", i)
            if step.kind == "barrier":
                if step.command not in spec.barriers:
                    known = ", ".join(spec.barriers) or "none declared"
                    raise _fail(
                        doc,
                        (*spath, "barrier"),
                        f"unknown barrier {step.command!r} (declared under barriers: {known})",
                    )
                used_barriers.add(step.command)
            if step.lifecycle and step.lifecycle not in comp.software:
                listed = ", ".join(comp.software) or "none"
                raise _fail(
                    doc,
                    (*spath, "lifecycle"),
                    f"lifecycle: software {step.lifecycle!r} is not in this component's "
                    f"software ({listed})",
                )
            for j, ref in enumerate(step.after):
                _check_after(spec, doc, comp, ref, (*spath, "after", j))
            for key in ("command", "health", "ready"):
                text = getattr(step, key)
                if text and step.kind != "barrier" and not (key == "command" and step.lifecycle):
                    where = (*spath, step.kind if key == "command" else key)
                    _check_vars(spec, doc, text, where)
            for key, value in step.env.items():
                _check_vars(spec, doc, value, (*spath, "env", key))
        for key, value in comp.env.items():
            _check_vars(spec, doc, value, (*cpath, "env", key))
    for name in spec.barriers:
        if name not in used_barriers:
            raise _fail(doc, ("barriers", name), f"barrier {name!r} is declared but no step waits")
    _check_cycles(spec, doc)


def _check_after(spec: AppSpec, doc: Located, comp: Component, ref: str, path: PathKey) -> None:
    target, _, step = ref.partition(".")
    if not step and target not in spec.components:
        if comp.step(target) is not None:
            return
        known = ", ".join(spec.components)
        raise _fail(doc, path, f"after: unknown component or step {ref!r} (components: {known})")
    if target not in spec.components:
        known = ", ".join(spec.components)
        raise _fail(doc, path, f"after: unknown component {target!r} (components: {known})")
    if step and spec.components[target].step(step) is None:
        steps = ", ".join(s.name for s in spec.components[target].steps)
        raise _fail(doc, path, f"after: component {target} has no step {step!r} ({steps})")


def _check_vars(spec: AppSpec, doc: Located, text: str, path: PathKey) -> None:
    for m in VAR_RE.finditer(text):
        name, arg = m.group(1), m.group(2)
        if arg is None and name in PLAIN_VARS:
            continue
        if arg is not None and name in COMPONENT_VARS and arg in spec.components:
            continue
        if arg is not None and name == "sw" and arg in spec.software:
            continue
        if arg is not None and name in COMPONENT_VARS:
            raise _fail(doc, path, f"variable {m.group(0)}: unknown component {arg!r}")
        if arg is not None and name == "sw":
            raise _fail(doc, path, f"variable {m.group(0)}: unknown software {arg!r}")
        known = ", ".join([*PLAIN_VARS, *(f"{v}.COMPONENT" for v in COMPONENT_VARS), "sw.SOFTWARE"])
        raise _fail(doc, path, f"unknown variable {m.group(0)} (known: {known})")


def graph_node(comp: Component, step: Step) -> str:
    """The predecessor-graph vertex of a step (steps of one barrier share one)."""
    return f"barrier:{step.command}" if step.kind == "barrier" else f"{comp.name}.{step.name}"


def predecessor_edges(spec: AppSpec) -> list[tuple[str, str, int]]:
    """Edges (before, after, line) of the predecessor graph."""
    edges: list[tuple[str, str, int]] = []
    for comp in spec.components.values():
        previous: str | None = None
        for step in comp.steps:
            vertex = graph_node(comp, step)
            if previous is not None:
                edges.append((previous, vertex, step.line))
            for ref in step.after:
                target, _, sname = ref.partition(".")
                if target not in spec.components:
                    target, sname = comp.name, target
                tcomp = spec.components[target]
                chosen = [tcomp.step(sname)] if sname else list(tcomp.steps)
                for t in chosen:
                    if t is not None:
                        edges.append((graph_node(tcomp, t), vertex, step.line))
            previous = vertex
    return edges


def _check_cycles(spec: AppSpec, doc: Located) -> None:
    """Refuse a loop in the predecessor graph (depth-first, iterative: a component
    of thousands of steps is one long path)."""
    succ: dict[str, list[tuple[str, int]]] = {}
    for a, b, line in predecessor_edges(spec):
        succ.setdefault(a, []).append((b, line))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for vertex in sorted(succ):
        if state.get(vertex) is not None:
            continue
        path: list[tuple[str, int]] = [(vertex, 0)]
        todo = [iter(succ.get(vertex, []))]
        state[vertex] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()[0]] = 2
                todo.pop()
                continue
            w, line = nxt
            if state.get(w) == 1:
                start = next(i for i, (x, _) in enumerate(path) if x == w)
                loop = [*path[start:], (w, line)]
                names = " -> ".join(v for v, _ in loop)
                where = max(line for _, line in loop[1:])
                raise ConfigError(f"{doc.file}:{where}: cyclic predecessors: {names}")
            if state.get(w) is None:
                state[w] = 1
                path.append((w, line))
                todo.append(iter(succ.get(w, [])))
