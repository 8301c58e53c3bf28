"""control/counters: the metrics' readings from a real journal (SQLite) and link objects."""

from __future__ import annotations

import time
from pathlib import Path

from shoal.control.counters import JournalCounts, PushBytes, link_counts
from shoal.control.journal import Journal, ServiceEvent
from shoal.control.links import Links
from shoal.nodes.model import Node
from shoal.state import State


def agent_event(seq: int, kind: str, program: str | None) -> dict[str, object]:
    return {"seq": seq, "time": time.time(), "kind": kind, "program": program, "detail": ""}


def test_journal_counts_count_from_the_start(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        journal = Journal(st)
        journal.store_agent_events(
            "n1", "a1", [agent_event(1, "started", "web"), agent_event(2, "fatal", "db")]
        )
        time.sleep(0.01)
        counts = JournalCounts(journal, since=time.time())
        counts.catch_up()
        assert sum(counts.events.values()) == 0  # stored before the start

        journal.store_agent_events(
            "n1",
            "a1",
            [agent_event(3, "restarted", "web"), agent_event(4, "started", "web")],
        )
        journal.store_agent_events("n2", "a2", [agent_event(1, "backoff", "web")])
        journal.record_many(
            [
                ServiceEvent("node", "node_down", node="n3", detail="silent"),
                ServiceEvent("app", "member_replaced", node="n4", detail="a: c: n4 replaces n3"),
                ServiceEvent("app", "app_converged", detail="a"),
            ]
        )
        counts.catch_up()
        assert counts.events == {"agent": 3, "node": 1, "app": 2}
        assert counts.reconcile == {"member_replaced": 1, "app_converged": 1}
        assert counts.restarts == {("n1", "web"): 1}

        counts.catch_up()  # nothing new: nothing counted twice
        assert counts.events == {"agent": 3, "node": 1, "app": 2}

        late = JournalCounts(journal, since=counts.since)  # first read after it all
        late.catch_up()
        for field in ("events", "reconcile", "restarts", "after"):
            assert getattr(late, field) == getattr(counts, field), field


def test_push_bytes_count_each_node_record_once(tmp_path: Path) -> None:
    pushes = PushBytes()
    first = [{"node": "n1", "from_source": 100, "from_peers": 900}]
    pushes.absorb("p1", first)
    pushes.absorb("p1", first)  # read again at the next scrape
    pushes.absorb("p1", [*first, {"node": "n2", "from_source": 0, "from_peers": 1000}])
    pushes.absorb("p2", [{"node": "n1", "from_source": 5, "from_peers": 0}])
    assert pushes.source == {"n1": 105, "n2": 0}
    assert pushes.peers == {"n1": 900, "n2": 1000}


def test_link_counts_list_every_state(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        links = Links([Node("a"), Node("b")], state=st, journal=Journal(st))
        links.facts.rtt("a", 2.0)
        links.facts.rtt("gone", 9.0)  # not managed any more: not reported
        counts = link_counts(links)
    assert counts.by_state == {
        "attaching": 2, "up": 0, "suspect": 0, "down": 0, "no-agent": 0, "refused": 0,
    }  # fmt: skip
    assert counts.rtt_ms == {"a": 2.0}
    assert (counts.attaches, counts.reconnects, counts.connects) == (0, 0, 0)
