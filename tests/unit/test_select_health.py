"""The failed set: mark_failed / mark_healthy drive `failed` and `healthy`."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.nodes import health, inventory
from shoal.nodes.model import Node
from shoal.nodes.nodeset import fold
from shoal.nodes.select import select


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    inventory.import_nodes([Node(f"n{i}") for i in range(1, 9)])
    return tmp_path


def test_failed_and_healthy_follow_marks() -> None:
    assert len(select("failed")) == 0
    assert fold(select("healthy")) == "n[1-8]"
    health.mark_failed({"n3": "unreachable: connection refused", "n5": "timeout"}, now=100.0)
    assert fold(select("failed")) == "n[3,5]"
    assert fold(select("healthy")) == "n[1-2,4,6-8]"
    assert fold(select("all - failed")) == fold(select("healthy"))
    health.mark_failed([("n3", "timeout")], now=200.0)
    (f3, f5) = health.failures()
    assert (f3.name, f3.reason, f3.since, f3.updated) == ("n3", "timeout", 100.0, 200.0)
    assert f5.reason == "timeout"
    assert health.mark_healthy(["n3", "n4"]) == ["n3"]
    assert fold(select("failed")) == "n5"


def test_failed_ignores_nodes_outside_the_inventory() -> None:
    health.mark_failed({"ghost": "unreachable", "n1": "auth"})
    assert fold(select("failed")) == "n1"
    assert [f.name for f in health.failures()] == ["ghost", "n1"]


def test_clear_failed() -> None:
    health.mark_failed({"n1": "x", "n2": "y", "n3": "z"})
    assert health.clear_failed(["n2"]) == ["n2"]
    assert fold(select("failed")) == "n[1,3]"
    assert health.clear_failed() == ["n1", "n3"]
    assert len(select("failed")) == 0
