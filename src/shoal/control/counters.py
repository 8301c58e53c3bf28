"""What the service's metrics report, read from the live objects when asked.

Nothing here is updated per beat or per event: each reading looks at what the
controller already holds (the adapter, :mod:`shoal.service.metrics`, reads at
every scrape and renders Prometheus' format; this module knows no format).

* :func:`link_counts`: the links now: nodes per :class:`~.links.LinkState`,
  attaches, reconnects (attaches after a node's first), SSH connections made,
  agents restarted under a held connection, and each node's smoothed
  heartbeat round-trip time (:class:`~.livefacts.LiveFacts`).
* :class:`JournalCounts`: a cursor over the :class:`~.journal.Journal`; each
  :meth:`~JournalCounts.catch_up` reads the rows stored since the last one
  and counts events per topic, the keeper's reconcile actions (topic ``app``,
  :data:`RECONCILE_KINDS`) and programs' restarts per node and program, all
  since the service started (counters, as Prometheus means them: they start
  at 0 with the process). The first reading is aggregate queries (one scan
  however long the service ran unscraped); later ones read only the new rows.
  (Programs per state are live facts: :meth:`.livefacts.LiveFacts.program_states`.)
* :class:`PushBytes`: bytes delivered to each node by the source and by its
  peers, summed over the pushes the service ran (each node's record counted
  once, when its node finished).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .journal import Journal
from .links import Links, LinkState

#: Journal kinds (topic ``app``) that are the keeper's reconcile actions.
RECONCILE_KINDS = (
    "member_replaced",
    "program_restarted",
    "member_stopped",
    "app_converged",
    "app_shortfall",
    "app_up_failed",
)
#: Rows read per query while catching up.
PAGE = 5000


@dataclass(frozen=True)
class LinkCounts:
    """The links at one instant."""

    by_state: dict[str, int]
    attaches: int
    reconnects: int
    connects: int
    agent_restarts: int
    #: node -> smoothed heartbeat round-trip time, milliseconds
    rtt_ms: dict[str, float]


def link_counts(links: Links) -> LinkCounts:
    """Counts over every link now (every state listed, 0 when no node is in it)."""
    by_state = {s.value: 0 for s in LinkState}
    attaches = reconnects = restarts = 0
    for link in links.links.values():
        by_state[link.state.value] += 1
        attaches += link.attaches
        reconnects += max(0, link.attaches - 1)
        restarts += link.agent_restarts
    rtt = {n: ms for n, ms in links.facts.rtt_ms.items() if n in links.links}
    return LinkCounts(by_state, attaches, reconnects, links.connects, restarts, rtt)


@dataclass
class JournalCounts:
    """Counters fed by the journal from ``since`` (a store time) on; see the module docstring."""

    journal: Journal
    #: rows stored at or after this time (the service's start) are counted
    since: float
    events: Counter[str] = field(default_factory=Counter)
    reconcile: Counter[str] = field(default_factory=Counter)
    restarts: Counter[tuple[str, str]] = field(default_factory=Counter)
    after: int | None = None
    _first: int = 0

    def catch_up(self) -> None:
        """Count the rows stored since the last call."""
        if self.after is None:
            self._start()
        assert self.after is not None
        while True:
            page = self.journal.read(self.after, limit=PAGE)
            for row in page.events:
                self._count(row.id, row.topic, row.kind, row.node, row.program)
            self.after = page.last
            if len(page.events) < PAGE:
                return

    def _start(self) -> None:
        """The first reading: aggregate queries over what is stored already, whatever its size."""
        db = self.journal.state.db
        db.execute("BEGIN")  # one snapshot for every query
        try:
            last = self.journal.last
            found = db.execute("SELECT MIN(id) FROM events WHERE stored >= ?", (self.since,))
            first = found.fetchone()[0]
            self._first = int(first) if first is not None else last + 1
            span = "id >= ? AND id <= ?"
            bounds = (self._first, last)
            by_topic = f"SELECT topic, COUNT(*) FROM events WHERE {span} GROUP BY topic"
            for topic, n in db.execute(by_topic, bounds):
                self.events[topic] += n
            marks = ",".join("?" * len(RECONCILE_KINDS))
            actions = (
                f"SELECT kind, COUNT(*) FROM events WHERE {span} AND topic = 'app' "
                f"AND kind IN ({marks}) GROUP BY kind"
            )
            for kind, n in db.execute(actions, (*bounds, *RECONCILE_KINDS)):
                self.reconcile[kind] += n
            restarts = (
                f"SELECT node, program, COUNT(*) FROM events WHERE {span} AND topic = 'agent' "
                "AND kind = 'restarted' AND node IS NOT NULL AND program IS NOT NULL "
                "GROUP BY node, program"
            )
            for node, program, n in db.execute(restarts, bounds):
                self.restarts[(node, program)] += n
        finally:
            db.execute("COMMIT")
        self.after = last

    def _count(
        self, row_id: int, topic: str, kind: str, node: str | None, program: str | None
    ) -> None:
        if row_id < self._first:
            return
        self.events[topic] += 1
        if topic == "app" and kind in RECONCILE_KINDS:
            self.reconcile[kind] += 1
        if topic == "agent" and kind == "restarted" and node is not None and program is not None:
            self.restarts[(node, program)] += 1


@dataclass
class PushBytes:
    """Bytes delivered per node, from the source and from peers, over the service's pushes."""

    source: Counter[str] = field(default_factory=Counter)
    peers: Counter[str] = field(default_factory=Counter)
    _seen: dict[str, int] = field(default_factory=dict)

    def absorb(self, push_id: str, records: list[Mapping[str, Any]]) -> None:
        """Count the per-node records of push ``push_id`` not counted yet (in order)."""
        start = self._seen.get(push_id, 0)
        for record in records[start:]:
            node = str(record.get("node"))
            self.source[node] += int(record.get("from_source") or 0)
            self.peers[node] += int(record.get("from_peers") or 0)
        self._seen[push_id] = max(start, len(records))
