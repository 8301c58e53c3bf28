"""Reconcile decisions are logged (issue 19 item 4): a round of the keeper over a real
application whose service was stopped restarts it, and says so on ``shoal.app.reconcile``
(the decision) and ``shoal.control.keeper`` (the journaled action) at INFO."""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet
from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.app.reconcile import Backoff
from shoal.control.journal import Journal
from shoal.control.keeper import Keeper, KeeperConfig
from shoal.nodes.health import clear_failed
from shoal.state import State

pytestmark = pytest.mark.lab


def test_a_keeper_round_logs_the_restart_it_decides(
    lab: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clear_failed()
    node = lab.nodes()[5]
    spec = tmp_path / "app.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            app: logged{os.getpid()}
            components:
              w:
                select: "{node.name}"
                processes:
                  - {{name: svc, service: "exec sleep 84{os.getpid() % 100:02d}"}}
            """
        )
    )
    app = load(spec)
    program = f"{app.name}.w.svc"
    try:
        asyncio.run(lifecycle.up_async(app))
        stopped = asyncio.run(fleet.call_async([node], "proc.stop", {"name": program}))
        assert stopped.ok, stopped[node.name].error
        caplog.set_level(logging.INFO, logger="shoal")

        async def one_round() -> None:
            with State() as st:
                config = KeeperConfig(interval=60, backoff=Backoff(first=0.0))
                await Keeper(st, Journal(st), config).keep(app.name)

        asyncio.run(one_round())
        decided = [r for r in caplog.records if r.name == "shoal.app.reconcile"]
        assert [r.getMessage() for r in decided] == [
            f"app {app.name}: restarting {program} on {node.name} (STOPPED)"
        ]
        kept = [r.getMessage() for r in caplog.records if r.name == "shoal.control.keeper"]
        assert kept == [f"program_restarted {node.name} {program} {app.name}: restarted"]
        assert all(r.levelno == logging.INFO for r in decided)
    finally:
        asyncio.run(lifecycle.down_async(app.name))
