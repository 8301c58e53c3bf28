"""The service's routes and sweep update the failed set through the writer thread.

DESIGN: every service-side write goes through :mod:`shoal.control.dbwriter`; a
write on the loop's own SQLite connection waits there for the lock whenever the
writer or another process holds it, and the whole loop waits with it. Here a
Controller runs in-process over two lab nodes with every write statement on the
loop's connection traced, and the failed set is changed by the service's sweep
job, ``POST /api/v1/sweep``'s sweep, ``POST /api/v1/proc/status`` and ``POST
/api/v1/logs/collect``: each must update it (a node marked failed by hand is
cleared) and write none of it (table ``node_health``, and the log store's tables
``log_files``, ``log_segments``) on the loop's connection.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.agentlink import fleet as agents
from shoal.client import PROTOCOL, PROTOCOL_HEADER
from shoal.control.controller import Controller, ServiceConfig
from shoal.nodes import health
from shoal.nodes.inventory import import_nodes
from shoal.service.servedaemon import build_app
from shoal.state import State

pytestmark = pytest.mark.lab

HEADERS = {PROTOCOL_HEADER: str(PROTOCOL)}
PROGRAM = "hw.w"
#: ~7 KB of lines, then it stays up
WRITE = 'for i in $(seq 400); do echo "line $i of what the collect stores"; done; exec sleep 600'


def written(sql: str) -> bool:
    """A statement that changes the failed set's table (reads are the loop's to make)."""
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    tables = ("node_health", "log_files", "log_segments")
    return verb in ("INSERT", "UPDATE", "DELETE", "REPLACE") and any(t in sql for t in tables)


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
                spec = agents.proc_spec(PROGRAM, ["sh", "-c", WRITE], restart="never")
                body = {"selection": ",".join(names), "spec": spec}
                started = await http.post("/api/v1/proc/start", json=body)
                assert started.status_code == 200 and '"error":null' in started.text, started.text
                steps = {
                    "the sweep job": controller.sweep(),
                    "POST /sweep": http.post("/api/v1/sweep", json={"selection": names[0]}),
                    "POST /proc/status": http.post(
                        "/api/v1/proc/status", json={"selection": ",".join(names)}
                    ),
                    "POST /logs/collect": http.post(
                        "/api/v1/logs/collect", json={"selection": ",".join(names)}
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
                    if what == "POST /logs/collect":  # it stored what the program wrote
                        records = [json.loads(x) for x in answer.text.splitlines()]
                        got = [r["value"]["bytes"] for r in records if "node" in r]
                        assert len(got) == 2 and all(b >= 6000 for b in got), answer.text
                    cleared = set(names) - failed()
                    assert cleared, f"{what} recorded no health"
                    assert traced == [], (what, traced)
        finally:
            await agents.call_async(nodes, "proc.remove", {"name": PROGRAM}, agents.AgentOptions())
            stop.set()
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(drive())
    finally:
        controller.close()
