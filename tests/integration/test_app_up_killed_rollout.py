"""``app up`` after a software change, its controller SIGKILLed mid-rollout, then run
again: every member runs the code on disk, none is left stopped (issue 15 item 1,
issue 17 part 2).

The defect this guards: the killed pass had recorded the app ``starting``, so the
re-run did not count the members' services as running; it switched the new
software under the services that still ran the old code and left them running it
(``proc.start`` of a running service is a no-op): members showed ``v2 v1 up``. The
re-run now asks the agents which services run and rolls the software out under
them again; a node the killed rollout had stopped is started on the new version.
The killed rollout's record ends ``superseded`` (a later ``shoal rollout abort``
would otherwise switch the converged members back).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.app import lifecycle, store
from shoal.app.appspec import load
from shoal.content.rolloutstate import RolloutStore
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.state import State
from shoal.testing.faultapps import member_state, write_app

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).with_name("appup_kill_driver.py")


@pytest.fixture()
def app(lab: Any) -> Iterator[tuple[str, list[Node]]]:
    clear_failed()
    name = f"kr{secrets.token_hex(3)}"
    try:
        yield name, lab.nodes()[:4]
    finally:
        with State() as st:
            known = store.get_app(st, name) is not None
        if known:
            report = asyncio.run(lifecycle.down_async(name))
            assert all(v == "cleaned" for v in report.nodes.values()), report.nodes


def _killed_at(point: str, spec: Path) -> str:
    """The driver's output; it must have died (SIGKILL) at ``point``."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), "--die-at", point, str(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert done.returncode == -9, (done.returncode, done.stdout[-800:], done.stderr[-800:])
    assert f"dying at {point}" in done.stdout
    return done.stdout


@pytest.mark.parametrize("point", ["software staged", "rollout switched"])
def test_a_rerun_after_a_killed_rollout_runs_the_new_code_everywhere(
    app: tuple[str, list[Node]], tmp_path: Path, point: str
) -> None:
    name, nodes = app
    spec = write_app(tmp_path, name, nodes, "v1")
    asyncio.run(lifecycle.up_async(load(spec)))
    assert set(member_state(nodes, name).values()) == {"v1 v1 up"}

    write_app(tmp_path, name, nodes, "v2")
    _killed_at(point, spec)
    after_kill = member_state(nodes, name)
    # killed before any service was restarted: every member still runs v1
    assert all(s.split()[1] == "v1" for s in after_kill.values()), after_kill
    if point == "rollout switched":  # one node switched and stopped, the rest untouched
        assert sorted(after_kill.values()) == ["v1 v1 up"] * 3 + ["v2 v1 down"], after_kill
    else:
        assert set(after_kill.values()) == {"v1 v1 up"}, after_kill

    report = asyncio.run(lifecycle.up_async(load(spec)))
    assert not report.failed, report.failed
    assert member_state(nodes, name) == dict.fromkeys((n.name for n in nodes), "v2 v2 up")
    # the killed pass's rollout is over: no `rollout resume|abort` switches anyone back
    with State() as st:
        mine = [r.state for r in RolloutStore(st).list(100) if f"/apps/{name}/" in r.target]
    assert mine == (["done", "superseded"] if point == "rollout switched" else ["done"]), mine
