"""The application the rollout tests change under running services, and their helpers.

``tool`` is a software tree whose ``run.sh`` records, as it starts, the VERSION
it read and the INSTALLED file its install step made (``<app dir>/running``);
it refuses to start v3 where ``<app dir>/refuse`` exists (a failing gate).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.app import lifecycle, store
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote

SPEC = """\
app: {name}
software:
  tool:
    source: tool
    install: ["cp VERSION INSTALLED"]
rollout:
  min_healthy_time: 0.5
  stage_deadline: 30
components:
  svc:
    select: "{nodes}"
    count: {count}
    software: [tool]
    processes:
      - {{name: server, service: "exec ${{sw.tool}}/run.sh ${{dir}}"}}
"""

RUN = """#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd -P)"
if [ -e "$1/refuse" ] && [ "$(cat "$here/VERSION")" = v3 ]; then exit 3; fi
echo "$(cat "$here/VERSION") $(cat "$here/INSTALLED")" > "$1/running"
exec sleep 600
"""


@contextmanager
def rollout_app(name: str, nodes: list[Node], tmp_path: Path) -> Iterator[Path]:
    """The spec of application ``name`` (one member per node, ``tool`` at v1 beside
    it); the application brought down after (every node cleaned)."""
    clear_failed()
    tool = tmp_path / "tool"
    tool.mkdir()
    (tool / "run.sh").write_text(RUN)
    (tool / "run.sh").chmod(0o755)
    (tool / "VERSION").write_text("v1\n")
    spec = tmp_path / "app.yaml"
    members = ",".join(n.name for n in nodes)
    spec.write_text(textwrap.dedent(SPEC.format(name=name, nodes=members, count=len(nodes))))
    try:
        yield spec
    finally:
        with State() as st:
            known = store.get_app(st, name) is not None
        if known:
            report = asyncio.run(lifecycle.down_async(name))
            assert all(v == "cleaned" for v in report.nodes.values()), report.nodes


def running(nodes: list[Node], name: str) -> dict[str, str]:
    """What each node's member recorded as it started: ``VERSION INSTALLED``."""
    return {
        n.name: remote(n, f"cat .shoal/apps/{name}/running 2>/dev/null", check=False).strip()
        for n in nodes
    }


def pids(name: str) -> dict[str, int]:
    status = asyncio.run(lifecycle.status_async(name))
    return {n.node: p["pid"] for n in status.nodes for p in n.programs}
