"""The service's routes and sweep update the failed set through the writer thread.

DESIGN: every service-side write goes through :mod:`shoal.control.dbwriter`; a
write on the loop's own SQLite connection waits there for the lock whenever the
writer or another process holds it, and the whole loop waits with it. Here a
Controller runs in-process over two lab nodes with every write statement on the
loop's connection traced, and the failed set is changed by the service's sweep
job, ``POST /api/v1/sweep``'s sweep and ``POST /api/v1/proc/status``: each must
update it (a node marked failed by hand is cleared) and write none of it (table
``node_health``) on the loop's connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.client import PROTOCOL, PROTOCOL_HEADER
from shoal.control.controller import Controller, ServiceConfig
from shoal.nodes import health
from shoal.nodes.inventory import import_nodes
from shoal.service.servedaemon import build_app
from shoal.state import State

pytestmark = pytest.mark.lab

HEADERS = {PROTOCOL_HEADER: str(PROTOCOL)}


def written(sql: str) -> bool:
    """A statement that changes the failed set's table (reads are the loop's to make)."""
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return verb in ("INSERT", "UPDATE", "DELETE", "REPLACE") and "node_health" in sql


def test_routes_and_sweep_record_health_through_the_writer(lab: Any, tmp_path: Path) -> None:
    nodes = lab.nodes()[:2]
    names = [n.name for n in nodes]
    with State(tmp_path / "state.db") as st:
        import_nodes(nodes, state=st)
    controller = Controller(ServiceConfig(state_dir=tmp_path, sweep_interval=0, logs_interval=0,
                                          audit_interval=0, select=",".join(names)))  # fmt: skip
    traced: list[str] = []

    def failed() -> set[str]:
        with State(tmp_path / "state.db") as st:
            return {f.name for f in health.failures(st)}

    async def drive() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        try:
            assert await controller.links.links.wait_up(timeout=120), controller.status()
            app = build_app(controller)
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://svc", headers=HEADERS)
            async with client as http:
                steps = {
                    "the sweep job": controller.sweep(),
                    "POST /sweep": http.post("/api/v1/sweep", json={"selection": names[0]}),
                    "POST /proc/status": http.post(
                        "/api/v1/proc/status", json={"selection": ",".join(names)}
                    ),
                }
                for what, step in steps.items():
                    with State(tmp_path / "state.db") as st:
                        health.mark_failed({n: "marked by the test" for n in names}, state=st)
                    assert failed() == set(names)
                    controller.state.db.set_trace_callback(
                        lambda sql: traced.append(sql) if written(sql) else None
                    )
                    try:
                        answer = await step
                    finally:
                        controller.state.db.set_trace_callback(None)
                    if isinstance(answer, httpx.Response):
                        assert answer.status_code == 200, answer.text
                    cleared = set(names) - failed()
                    assert cleared, f"{what} recorded no health"
                    assert traced == [], (what, traced)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(drive())
    finally:
        controller.close()
