"""The service's event loop writes nothing on its own SQLite connection while links attach.

DESIGN: every service-side write goes through the writer thread
(:mod:`shoal.control.dbwriter`); a write on the loop's connection waits there for
the lock (busy_timeout) whenever the writer or another process holds it, and the
whole loop (heartbeats, the event stream, the API) waits with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal.control.dbwriter import Writer
from shoal.control.journal import Journal
from shoal.control.links import LinkConfig, Links
from shoal.state import State

from .conftest import remote

pytestmark = pytest.mark.lab

WRITES = ("BEGIN IMMEDIATE", "INSERT", "UPDATE", "DELETE", "REPLACE")


def test_a_reattach_writes_only_through_the_writer(lab: Any) -> None:
    """Re-attaching links write nothing on the loop's connection: neither the cached-home
    path (every agent current) nor the install path (one agent killed: started again)."""
    nodes = lab.nodes()[:3]
    victim = nodes[1]

    async def attach(traced: list[str] | None) -> list[str]:
        """Links over the nodes until all are up, then stopped; the victim's events."""
        state = State()
        journal = Journal(state)
        mark = journal.last
        writer = Writer(state.path, on_commit=journal.committed)
        journal.writer = writer
        if traced is not None:
            state.db.set_trace_callback(
                lambda sql: traced.append(sql) if sql.lstrip().upper().startswith(WRITES) else None
            )
        links = Links(nodes, state=state, journal=journal, config=LinkConfig())
        await links.start()
        try:
            assert await links.wait_up(timeout=60), links.status()
        finally:
            await links.stop()
            writer.close()
            state.db.set_trace_callback(None)
        try:
            page = journal.read(mark, node=victim.name, limit=100_000)
        finally:
            state.close()
        return [f"{e.kind} {e.detail}" for e in page.events]

    asyncio.run(attach(None))  # installs or starts the agents where needed
    with State() as st:
        row = st.db.execute("SELECT home FROM agents WHERE node=?", (victim.name,)).fetchone()
    remote(victim, f"kill -9 $(cat {row[0]}/agent.pid)")
    since = time.time()
    writes: list[str] = []
    events = asyncio.run(attach(writes))
    assert writes == [], writes
    assert "agent_installed started" in events, events  # the install path ran
    with State() as st:  # what the attach remembers, written by the writer
        marks = ",".join("?" * len(nodes))
        seen = st.db.execute(
            f"SELECT count(*) FROM agents WHERE seen >= ? AND node IN ({marks})",
            (since, *[n.name for n in nodes]),
        ).fetchone()[0]
    assert seen == len(nodes)
