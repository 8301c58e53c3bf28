"""``shoal audit``: files compared across the fleet by majority and quorum, and repaired.

Theory of operation. Every selected node's agent hashes the files under the
paths asked (:mod:`shoal.agent.filehash`: globs, directories recursive,
symlinks reported and never followed, a stat cache so a re-audit hashes only
what changed); agents are installed first where missing or old, as a push
does. By default the paths are every directory pushed to the node and every
app software tree (both recorded by the push: ``depot_deployed``), each
compared among the nodes that hold it.

The decision is pure (:func:`decide`, unit-tested): per file, each answering
node votes for what it holds there (type, sha256 or link target, mode), or
for "absent". The majority is the most-voted answer; it has a quorum when its
votes reach :meth:`Quorum.needed` of the nodes that answered (default: more
than half, and at least :attr:`Quorum.minimum`), and a tie never has one.
Every node outside the majority of a file is listed with what differs:
``digest``, ``mode``, ``type``, ``missing`` (the majority has the file) or
``extra`` (the majority does not). Nodes that did not answer are reported
apart with their reason, never counted and never dropped.

Repair (:func:`repair_async`) acts only on files with a quorum: each file's
bytes are read once from one majority node over SFTP and checked against the
majority's sha256 here; the verified files (named by digest) are then pushed
through the content data plane (:func:`shoal.content.push.push_async`: P2P,
TLS, per-chunk verification, the SSH tunnel fallback) to a fresh staging
deployment ``~/.shoal-audit-repair/<id>`` (:data:`shoal.agent.filehash.STAGING`)
on the minority nodes that need bytes, and each agent puts them in place
(``audit.replace``: only from that staging directory, verified again, the old
file kept aside as ``FILE.shoal-audit-<unix time>``). The staging root is
removed from those nodes afterwards, success or failure (a leftover of a killed
controller goes with the next repair's), and is never recorded as deployed.
Modes are set, extra files moved aside, symlinks remade without bytes. A file
without a quorum is never repaired and the report says so.

The minority nodes are stored as the plan :data:`MINORITY_PLAN`
(``-s %audit-minority``) by :func:`remember_minority`. Nothing is printed;
``on_event(kind, node, message)`` is told of minorities, missing quorums and
repairs (the CLI and the service record them as topic ``audit`` events).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from shoal.agent.filehash import STAGING
from shoal.agentlink.agentclient import AgentClient
from shoal.agentlink.fleet import (
    AgentOptions,
    AgentOutcome,
    connect_agent,
    each_agent,
    for_each,
    install_async,
)
from shoal.content.depot import SCHEMA as DEPOT_SCHEMA
from shoal.content.push import PushOptions, PushResult, push_async
from shoal.content.scan import scan as scan_tree
from shoal.errors import ContentError, UsageError
from shoal.fanout.results import NodeOutcome, Results
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Connection, Transport

#: The plan holding the last audit's minority nodes.
MINORITY_PLAN = "audit-minority"
#: An audit event hook: (kind, node or None, one-line message).
EventHook = Callable[[str, "str | None", str], None]


@dataclass(frozen=True)
class Quorum:
    """How many agreeing nodes a majority needs: ``count`` if given, else more than
    ``share`` of the nodes that answered; never fewer than ``minimum``."""

    count: int | None = None
    share: float = 0.5
    minimum: int = 2

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise UsageError(f"--quorum {self.count}: at least 1 node")
        if not 0 <= self.share < 1:
            raise UsageError(f"--quorum-share {self.share}: a share in [0, 1)")

    def needed(self, answered: int) -> int:
        if self.count is not None:
            return max(self.count, 1)
        return max(self.minimum, int(answered * self.share) + 1)


class Entry(NamedTuple):
    """What one node holds at a path: type (``f d l s``), digest or link target, mode
    (a tuple: hashed and compared in C, 160,000 of them per decision)."""

    kind: str
    digest: str | None = None
    mode: int = 0
    size: int = 0

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> Entry:
        return cls(str(value["t"]), value.get("d"), int(value.get("m", 0)), int(value.get("s", 0)))

    def differs(self, other: Entry | None) -> list[str]:
        """What differs from ``other`` (the majority; None: absent there)."""
        if other is None:
            return ["extra"]
        if self.kind != other.kind:
            return ["type"]
        what = ["digest"] if self.digest != other.digest else []
        return [*what, "mode"] if self.mode != other.mode else what

    def describe(self) -> str:
        if self.kind == "f":
            return f"file {(self.digest or '')[:12]} {self.mode:o}"
        if self.kind == "l":
            return f"symlink -> {self.digest}"
        return {"d": "directory", "s": "special file"}.get(self.kind, self.kind) + f" {self.mode:o}"


@dataclass(frozen=True)
class FileVerdict:
    """One path the nodes do not all agree on."""

    path: str
    majority: Entry | None  # None: the majority does not have it
    votes: int
    answered: int
    needed: int
    #: node → what differs there (``missing``, ``extra``, ``digest``, ``mode``, ``type``)
    minority: dict[str, list[str]]
    #: node → what it holds there (None: absent), for the minority nodes
    held: dict[str, Entry | None]
    tied: bool = False  # another answer has as many votes: no majority
    agreeing: tuple[str, ...] = ()  # the nodes holding the majority's answer

    @property
    def quorum(self) -> bool:
        return self.votes >= self.needed and not self.tied

    def to_json(self) -> dict[str, Any]:
        major = self.majority
        return {
            "path": self.path,
            "quorum": self.quorum,
            "votes": self.votes,
            "answered": self.answered,
            "needed": self.needed,
            "tied": self.tied,
            "majority": None if major is None else _entry_json(major),
            "minority": [
                {"node": n, "differs": d, "held": _entry_json(self.held.get(n))}
                for n, d in sorted(self.minority.items())
            ],
        }


def _entry_json(entry: Entry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"type": entry.kind, "digest": entry.digest, "mode": f"{entry.mode:o}"}


def decide(
    listings: Mapping[str, Mapping[str, Entry]], quorum: Quorum = Quorum()
) -> list[FileVerdict]:
    """The paths the answering nodes (``node → path → Entry``) disagree on, sorted."""
    answered = len(listings)
    if answered == 0:
        return []
    needed = quorum.needed(answered)
    paths = sorted(set().union(*listings.values()))
    names = list(listings)
    maps = [listings[n] for n in names]
    verdicts = []
    for path in paths:
        values = [m.get(path) for m in maps]
        if values.count(values[0]) == answered:  # all agree (the common case, in C)
            continue
        held = dict(zip(names, values, strict=True))
        tally = Counter(values)
        ranked = tally.most_common()
        top, votes = ranked[0]
        minority = {n: _differs(e, top) for n, e in held.items() if e != top}
        verdicts.append(
            FileVerdict(
                path,
                top,
                votes,
                answered,
                needed,
                minority,
                {n: held[n] for n in minority},
                tied=len(ranked) > 1 and ranked[1][1] == votes,
                agreeing=tuple(sorted(n for n, e in held.items() if e == top)),
            )
        )
    return verdicts


def _differs(entry: Entry | None, majority: Entry | None) -> list[str]:
    return ["missing"] if entry is None else entry.differs(majority)


# -- the fan-out -----------------------------------------------------------------


@dataclass
class AuditOptions(AgentOptions):
    """Agent fan-out options plus the audit's own."""

    install: bool = True  # install or upgrade agents first
    scan_timeout: float = 3600.0  # one node's whole hashing (1 GB at disk speed and more)
    #: Listings compared as this many bucket digests first, entries fetched only for the
    #: buckets the nodes disagree on (0: every entry from every node).
    buckets: int = 4096


@dataclass(frozen=True)
class NodeScan:
    """One node's answer: per path asked, its entries; counts of the hashing."""

    groups: dict[str, dict[str, Entry]]
    total: int
    hashed: int
    cached: int
    hashed_bytes: int
    errors: list[str]
    absent: list[str]
    seconds: float = 0.0  # the node's walk and hashing


@dataclass
class AuditReport:
    """The audit's outcome: disagreements per path asked, who answered, who did not."""

    #: path asked → the files there the nodes disagree on
    verdicts: dict[str, list[FileVerdict]]
    #: node → its scan (the nodes that answered)
    scans: dict[str, NodeScan]
    #: node → why it did not answer (never counted in a quorum)
    unanswered: dict[str, NodeOutcome[Any]]
    duration: float = 0.0
    repaired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files(self) -> list[FileVerdict]:
        return [v for vs in self.verdicts.values() for v in vs]

    @property
    def minority_nodes(self) -> list[str]:
        """Nodes in the minority of a file that has a quorum."""
        return sorted({n for v in self.files if v.quorum for n in v.minority})

    @property
    def no_quorum(self) -> list[FileVerdict]:
        return [v for v in self.files if not v.quorum]

    @property
    def checked(self) -> int:
        """Paths listed on the node that listed most."""
        return max((s.total for s in self.scans.values()), default=0)


def default_paths(nodes: Sequence[Node], state: State) -> dict[str, list[str]]:
    """node → the directories pushed there (app software trees included), as recorded."""
    from shoal.content.depot import SCHEMA

    state.ensure("depot", SCHEMA)
    names = {n.name for n in nodes}
    out: dict[str, list[str]] = {}
    for node, folder in state.db.execute("SELECT node, dir FROM depot_deployed ORDER BY dir"):
        if node in names:
            out.setdefault(node, []).append(folder)
    return out


async def audit_async(
    nodes: Sequence[Node],
    paths: Sequence[str] = (),
    options: AuditOptions | None = None,
    *,
    quorum: Quorum = Quorum(),
    transport: Transport | None = None,
    state: State | None = None,
    on_event: EventHook | None = None,
) -> AuditReport:
    """Hash ``paths`` (default: :func:`default_paths`) on every node and decide."""
    opts = options or AuditOptions()
    with opened(state) as st:
        asked = {n.name: list(paths) for n in nodes} if paths else default_paths(nodes, st)
        if not any(asked.values()):
            raise UsageError("nothing to audit: no PATH given and nothing pushed to these nodes")
        targets = [n for n in nodes if asked.get(n.name)]
        unanswered: dict[str, NodeOutcome[Any]] = {}
        duration = 0.0
        if opts.install:
            installed = await install_async(targets, opts, transport=transport, state=st)
            unanswered.update({r.node: r for r in installed.failed})
            duration += installed.duration
            targets = [n for n in targets if n.name not in unanswered]
        rv = None
        if opts.buckets and (opts.parallel is None or opts.parallel >= len(targets)):
            rv = _Rendezvous(len(targets), opts.buckets)
        step = partial(_scan_step, asked=asked, rv=rv)
        results = await each_agent(
            targets,
            step,
            opts,
            transport=transport,
            state=st,
            on_result=None if rv is None else rv.finished,
        )
    duration += results.duration
    unanswered.update({r.node: r for r in results.failed})
    scans: dict[str, NodeScan] = {r.node: r.value for r in results if r.ok and r.value}
    verdicts: dict[str, list[FileVerdict]] = {}
    for pattern in dict.fromkeys(p for ps in asked.values() for p in ps):
        group = {n: s.groups.get(pattern, {}) for n, s in scans.items() if pattern in asked[n]}
        verdicts[pattern] = decide(group, quorum)
    report = AuditReport(verdicts, scans, unanswered, duration)
    if on_event is not None:
        _tell(report, on_event)
    return report


class _Rendezvous:
    """Every node's bucket digests, then the buckets they disagree on (all nodes' steps
    run at once: the fan-out's parallel is at least the node count)."""

    def __init__(self, total: int, buckets: int) -> None:
        self.total = total
        self.buckets = buckets
        self.digests: dict[str, list[str]] = {}
        self.gone: set[str] = set()
        self.differing: list[int] = []
        self.done = asyncio.Event()

    def arrive(self, node: str, digests: list[str]) -> None:
        self.digests[node] = digests
        self._check()

    def leave(self, node: str) -> None:
        self.gone.add(node)
        self._check()

    def finished(self, outcome: AgentOutcome) -> None:
        if not outcome.ok:  # failed before (or without) arriving: nobody waits for it
            self.leave(outcome.node)

    def _check(self) -> None:
        if self.done.is_set() or len(set(self.digests) | self.gone) < self.total:
            return
        views = list(self.digests.values())
        self.differing = [
            i for i in range(self.buckets) if len({v[i] if i < len(v) else "" for v in views}) > 1
        ]
        self.done.set()


async def _scan_step(
    client: AgentClient,
    node: Node,
    st: State,
    opts: AgentOptions,
    *,
    asked: dict[str, list[str]],
    rv: _Rendezvous | None,
) -> AgentOutcome:
    timeout = opts.scan_timeout if isinstance(opts, AuditOptions) else 3600.0
    patterns = asked[node.name]
    groups: dict[str, dict[str, Entry]] = {p: {} for p in patterns}
    if rv is None:
        reply = page = await client.call("audit.scan", timeout=timeout, paths=patterns)
    else:
        try:
            reply = await client.call(
                "audit.scan", timeout=timeout, paths=patterns, buckets=rv.buckets
            )
        except BaseException:
            rv.leave(node.name)
            raise
        rv.arrive(node.name, list(reply.get("buckets") or []))
        await asyncio.wait_for(rv.done.wait(), timeout)
        if not rv.differing:  # every node agrees: no entries to fetch (the agent forgets
            page = {"entries": [], "next": None}  # the listing by itself)
        else:
            page = await client.call(
                "audit.page", timeout=opts.call_timeout, scan=reply["scan"], buckets=rv.differing
            )
    while True:
        for item in page.get("entries") or []:
            groups[patterns[int(item["g"])]][str(item["p"])] = Entry.from_wire(item)
        if page.get("next") is None:
            break
        page = await client.call(
            "audit.page", timeout=opts.call_timeout, scan=reply["scan"], offset=page["next"]
        )
    scan = NodeScan(
        groups,
        int(reply.get("total", 0)),
        int(reply.get("hashed", 0)),
        int(reply.get("cached", 0)),
        int(reply.get("hashed_bytes", 0)),
        list(reply.get("errors") or []),
        list(reply.get("absent") or []),
        float(reply.get("seconds") or 0.0),
    )
    return NodeOutcome(node.name, value=scan)


def _tell(report: AuditReport, on_event: EventHook) -> None:
    for verdict in report.files:
        if not verdict.quorum:
            on_event("no quorum", None, no_quorum_message(verdict))
            continue
        for node, what in sorted(verdict.minority.items()):
            on_event("minority", node, f"{verdict.path}: {', '.join(what)}")
    for node, outcome in sorted(report.unanswered.items()):
        on_event("unanswered", node, outcome.reason)


def no_quorum_message(verdict: FileVerdict) -> str:
    tie = ", tied" if verdict.tied else ""
    return (
        f"{verdict.path}: no quorum ({verdict.votes} of {verdict.answered} node(s) agree{tie},"
        f" {verdict.needed} needed): not repaired"
    )


def remember_minority(report: AuditReport, state: State | None = None) -> str:
    """Store the minority nodes as plan :data:`MINORITY_PLAN`; its expression."""
    from shoal.nodes import plans
    from shoal.nodes.nodeset import fold

    minority = report.minority_nodes
    expr = fold(minority) if minority else "all - all"
    plans.set_plan(MINORITY_PLAN, expr, state=state)
    return expr


# -- repair ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fix:
    """One repair on one node: ``action`` (write, link, chmod, aside) at ``path``."""

    node: str
    path: str
    action: str
    entry: Entry | None
    source: str | None = None  # a majority node holding the bytes (write)


def plan_repairs(report: AuditReport) -> tuple[list[Fix], list[FileVerdict]]:
    """The fixes that bring every minority node to its file's majority, and the files
    left alone (no quorum). A directory the majority lacks is not removed."""
    fixes: list[Fix] = []
    for verdict in report.files:
        if not verdict.quorum:
            continue
        major = verdict.majority
        sources = [n for n in verdict.agreeing if n in report.scans]
        for node, what in sorted(verdict.minority.items()):
            held = verdict.held.get(node)
            if major is None:
                if held is not None and held.kind != "d":
                    fixes.append(Fix(node, verdict.path, "aside", held))
            elif major.kind == "f" and (what != ["mode"]):
                fixes.append(Fix(node, verdict.path, "write", major, sources[0]))
            elif major.kind == "l":
                fixes.append(Fix(node, verdict.path, "link", major))
            elif what == ["mode"]:
                fixes.append(Fix(node, verdict.path, "chmod", major))
    return fixes, report.no_quorum


async def repair_async(
    nodes: Sequence[Node],
    report: AuditReport,
    options: AuditOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_event: EventHook | None = None,
) -> Results[AgentOutcome]:
    """Apply :func:`plan_repairs`; per minority node, the fixes done (or its error)."""
    opts = options or AuditOptions()
    fixes, _ = plan_repairs(report)
    by_name = {n.name: n for n in nodes}
    with tempfile.TemporaryDirectory(prefix="shoal-audit-") as tmp, opened(state) as st:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        wanted: dict[str, dict[str, str]] = {}  # source → path → digest
        for fix in fixes:
            if fix.action == "write" and fix.source and fix.entry and fix.entry.digest:
                wanted.setdefault(fix.source, {})[fix.path] = fix.entry.digest
        got = await for_each(
            [by_name[s] for s in wanted],
            partial(_fetch_step, wanted=wanted, folder=Path(tmp)),
            opts,
            transport=transport,
            state=st,
        )
        fetched: dict[str, Path | str] = {}
        for r in got:
            if r.ok and r.value:
                fetched.update(r.value)
            else:  # the reason, for the nodes waiting on this source
                fetched.update({p: f"source {r.node}: {r.reason}" for p in wanted[r.node]})
        per_node: dict[str, list[Fix]] = {}
        for fix in fixes:
            per_node.setdefault(fix.node, []).append(fix)
        needy = sorted(
            {f.node for f in fixes if f.action == "write" and isinstance(fetched.get(f.path), Path)}
        )
        stage = f"{STAGING}/{int(time.time())}-{secrets.token_hex(4)}"
        try:
            staged = await _stage(
                [by_name[n] for n in needy], tree, stage, opts, transport, st, on_event
            )
            results = await for_each(
                [by_name[n] for n in per_node],
                partial(_fix_step, per_node=per_node, fetched=fetched, staged=staged, stage=stage),
                opts,
                transport=transport,
                state=st,
            )
        finally:
            await for_each(
                [by_name[n] for n in needy], _unstage_step, opts, transport=transport, state=st
            )
    report.repaired = [{"node": r.node, **d} for r in results if r.ok and r.value for d in r.value]
    if on_event is not None:
        for r in results:
            for done in r.value or []:
                on_event("repaired", r.node, f"{done['path']}: {done['action']}")
            if not r.ok:
                on_event("repair failed", r.node, r.reason)
    return results


async def _stage(
    nodes: Sequence[Node],
    tree: Path,
    stage: str,
    opts: AuditOptions,
    transport: Transport | None,
    st: State,
    on_event: EventHook | None,
) -> dict[str, str]:
    """Push the fetched files to ``stage`` on ``nodes`` (agents are up: the audit
    installed them); node → "" when staged, else the reason. Recorded neither as
    deployed nor in the scan cache."""
    if not nodes:
        return {}
    base = {f.name: getattr(opts, f.name) for f in fields(AgentOptions)}
    scanned = await asyncio.to_thread(scan_tree, tree)  # not through the scan cache: a temp dir
    pushed: PushResult = await push_async(
        nodes,
        tree,
        stage,
        PushOptions(**base, install=False, keep=1),
        transport=transport,
        state=st,
        tree=scanned,
    )
    st.ensure("depot", DEPOT_SCHEMA)
    with st.transaction() as db:
        db.execute("DELETE FROM depot_deployed WHERE dir=?", (stage,))
    out: dict[str, str] = {}
    for n in nodes:
        r = pushed[n.name]
        out[n.name] = "" if r.ok else f"staging push: {r.reason}"
        if on_event is not None:
            said = f"{r.received} B ({r.from_peers} from peers, {r.path})" if r.ok else r.reason
            on_event("staged" if r.ok else "staging failed", n.name, f"{stage}: {said}")
    return out


async def _fetch_step(
    conn: Connection,
    node: Node,
    st: State,
    opts: AgentOptions,
    *,
    wanted: dict[str, dict[str, str]],
    folder: Path,
) -> AgentOutcome:
    """Read each wanted file from a majority node; keep it (in ``folder/tree``, named by
    its digest) only if its sha256 is right."""
    out: dict[str, Path] = {}
    for path, digest in wanted[node.name].items():
        local = folder / "tree" / digest
        if local.exists():
            out[path] = local
            continue
        part = folder / f"{digest}.{secrets.token_hex(4)}"
        await conn.get(path, str(part))
        got = await asyncio.to_thread(_sha256, part)
        if got != digest:
            part.unlink()
            raise ContentError(
                f"{path} changed on the majority node while read ({got[:12]}, not {digest[:12]})",
                node=node.name,
            )
        part.chmod(0o600)  # the majority's mode is set by audit.replace
        os.replace(part, local)
        out[path] = local
    return NodeOutcome(node.name, value=out)


async def _fix_step(
    conn: Connection,
    node: Node,
    st: State,
    opts: AgentOptions,
    *,
    per_node: dict[str, list[Fix]],
    fetched: dict[str, Path | str],
    staged: dict[str, str],
    stage: str,
) -> AgentOutcome:
    client = await connect_agent(conn, node, st, opts)
    done: list[dict[str, Any]] = []
    try:
        for fix in per_node[node.name]:
            args: dict[str, Any] = {"path": fix.path, "action": fix.action}
            if fix.entry is not None:
                args["mode"] = fix.entry.mode
            if fix.action == "write":
                local = fetched.get(fix.path)
                why = str(local) if not isinstance(local, Path) else staged.get(node.name, "")
                if why or fix.entry is None:
                    done.append({**args, "action": "skipped", "why": why})
                    continue
                args.update(staged=f"{stage}/{fix.entry.digest}", digest=fix.entry.digest)
            elif fix.action == "link" and fix.entry is not None:
                args["target"] = fix.entry.digest
            result = await client.call("audit.replace", timeout=opts.call_timeout, **args)
            done.append({**result, "via": "push"} if fix.action == "write" else dict(result))
    finally:
        await client.close()
    return NodeOutcome(node.name, value=done, action=f"{len(done)} repaired")


async def _unstage_step(
    conn: Connection, node: Node, st: State, opts: AgentOptions
) -> AgentOutcome:
    """Remove the staging root (this repair's deployment and any leftover) from a node."""
    await conn.run(f"rm -rf -- ~/{STAGING}", timeout=opts.call_timeout)
    return NodeOutcome(node.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def audit_scheduled(nodes: Sequence[Node], database: Path) -> str:
    """One scheduled audit (the service's ``audit`` job, run in a worker thread) of the
    pushed directories, with a state connection and an event loop of its own: events
    recorded (topic ``audit``), the minority plan stored; a summary line."""
    from shoal.agentlink.eventlog import recorder

    with State(database) as st:
        if not any(default_paths(nodes, st).values()):
            return "nothing pushed to audit"
        report = asyncio.run(audit_async(nodes, state=st, on_event=recorder(st, "audit")))
        expr = remember_minority(report, st)
    minority = f"minority {expr}" if report.minority_nodes else "no minority"
    quorum = f", {len(report.no_quorum)} without quorum" if report.no_quorum else ""
    silent = f", {len(report.unanswered)} unanswered" if report.unanswered else ""
    return f"{report.checked} path(s) on {len(report.scans)} node(s): {minority}{quorum}{silent}"
