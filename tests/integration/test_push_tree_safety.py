"""What a push puts on the node and what it may replace (issue 11 items 3 and 10).

A tree whose top directory is 0700 stays 0700 on the nodes; an existing empty
directory at ``REMOTE_DIR`` is refused and left a directory unless the push
asks to replace it; the agent's own working area, the home directory and ``/``
are refused always, while applications' software under ``.shoal/apps`` still
deploys. Two nodes keep the module quick; agents are stopped at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.content.push import PushOptions, push_async
from shoal.nodes.model import Node

from .conftest import remote

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def pair(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()[:2]
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    run(agents.stop_async(nodes, agents.AgentOptions()))


def opts(**kw: Any) -> PushOptions:
    kw.setdefault("durable", False)
    return PushOptions(**kw)


def small_tree(root: Path) -> Path:
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "id").write_bytes(b"secret\n")
    (root / "README").write_text("hello\n")
    return root


def test_a_0700_tree_stays_0700_on_the_nodes(pair: list[Node], tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    src.chmod(0o700)
    (src / "keys").chmod(0o750)
    result = run(push_async(pair, src, "safety/secret", opts()))
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    for node in pair:
        modes = remote(node, "stat -L -c %a safety/secret safety/secret/keys").split()
        assert modes == ["700", "750"], (node.name, modes)
    src.chmod(0o755)  # a new mode is a new version, switched to like any other
    again = run(push_async(pair, src, "safety/secret", opts()))
    assert again.ok and again.version != result.version
    assert remote(pair[0], "stat -L -c %a safety/secret").strip() == "755"


def test_an_empty_directory_is_refused_and_left_unless_asked(
    pair: list[Node], tmp_path: Path
) -> None:
    src = small_tree(tmp_path / "src")
    for node in pair:
        remote(node, "rm -rf safety/empty safety/.empty.shoal && mkdir -p safety/empty")
    refused = run(push_async(pair, src, "safety/empty", opts()))
    assert not any(n.ok for n in refused)
    for n in refused:
        assert "empty directory" in n.reason and "--replace-empty-dir" in n.reason, n.reason
        assert "\n" not in n.reason
    for node in pair:
        assert remote(node, "test -d safety/empty && ! test -L safety/empty && echo dir") == "dir\n"
    replaced = run(push_async(pair, src, "safety/empty", opts(replace_empty_dir=True)))
    assert replaced.ok, [(n.node, n.reason) for n in replaced.failed]
    for node in pair:
        assert remote(node, "test -L safety/empty && cat safety/empty/README") == "hello\n"


@pytest.mark.parametrize(
    ("remote_dir", "why"),
    [
        (".shoal/logs", "agent's working area"),
        (".shoal", "agent's working area"),
        (".shoal/chunks/x", "agent's working area"),
        (".", "home directory"),
        ("~", "home directory"),
        ("/", "cannot deploy to /"),
    ],
)
def test_the_agent_area_the_home_and_root_are_never_replaced(
    pair: list[Node], tmp_path: Path, remote_dir: str, why: str
) -> None:
    src = small_tree(tmp_path / "src")
    remote(pair[0], "mkdir -p .shoal/logs")
    before = remote(pair[0], "ls -la .shoal | wc -l")
    result = run(push_async(pair[:1], src, remote_dir, opts(replace_empty_dir=True, install=False)))
    (outcome,) = list(result)
    assert not outcome.ok and why in outcome.reason, outcome.reason
    check = "test -d .shoal/logs && ! test -L .shoal/logs && ! test -L .shoal && echo dir"
    assert remote(pair[0], check) == "dir\n"
    assert remote(pair[0], "ls -la .shoal | wc -l") == before


def test_application_software_under_the_agent_area_still_deploys(
    pair: list[Node], tmp_path: Path
) -> None:
    src = small_tree(tmp_path / "src")
    result = run(push_async(pair[:1], src, ".shoal/apps/safety/sw/tool", opts(install=False)))
    assert result.ok, [(n.node, n.reason) for n in result.failed]
    assert remote(pair[0], "cat .shoal/apps/safety/sw/tool/README") == "hello\n"
