"""``shoal app up SPEC -s [COMPONENT=]EXPR`` overrides the spec's selections on real nodes
(issue 19 item 7): the spec's own select names a group no inventory has, so only the
override can place it; COMPONENT=EXPR touches that component alone, and the stored spec
keeps the override (status from the spec file, then down)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shoal.app import store
from shoal.state import State

pytestmark = pytest.mark.lab


def _shoal(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOAL_NO_SERVICE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip


def test_app_up_s_overrides_component_selections(lab: Any, tmp_path: Path) -> None:
    name = f"sel{os.getpid()}"
    tag = f"86{os.getpid() % 100:02d}"
    spec = tmp_path / "sel.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            app: {name}
            components:
              front:
                select: "@nowhere{tag}"
                count: 2
                processes:
                  - {{name: s, service: "exec sleep {tag}1"}}
              back:
                select: "n1"
                processes:
                  - {{name: s, service: "exec sleep {tag}2"}}
            """
        )
    )
    try:
        refused = _shoal("app", "up", str(spec))
        assert refused.returncode == 2 and f"@nowhere{tag}" in refused.stderr, refused
        up = _shoal("app", "up", str(spec), "-s", "front=n7,n8", "--json")
        assert up.returncode == 0, up.stdout + up.stderr
        with State() as st:
            placed = {(m.component, m.node) for m in store.members(st, name)}
            stored = store.require_app(st, name)
        assert placed == {("front", "n7"), ("front", "n8"), ("back", "n1")}
        assert stored.document["components"]["front"]["select"] == "n7,n8"  # kept
        status = _shoal("app", "status", str(spec), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        shown = json.loads(status.stdout)
        assert shown["app"] == name and shown["healthy"] is True, status.stdout
        assert {(n["component"], n["node"]) for n in shown["nodes"]} == placed
    finally:
        down = _shoal("app", "down", str(spec))
        assert down.returncode == 0 or "no application" in down.stderr, down.stderr
