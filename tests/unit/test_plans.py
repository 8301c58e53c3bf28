"""Named plans: stored, validated by parsing, evaluated when used, cycles refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import PlanCycleError, SelectionSyntaxError, UnknownNameError, UsageError
from shoal.nodes import health, inventory, plans
from shoal.nodes.model import Node
from shoal.nodes.nodeset import fold
from shoal.nodes.select import select
from shoal.state import State


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    inventory.import_nodes([Node(f"n{i}", groups=("web",) if i < 6 else ()) for i in range(1, 11)])
    return tmp_path


def test_dsmt_plans_follow_the_failed_set() -> None:
    plans.set_plan("goodNodes", "all - failed")
    plans.set_plan("only3", "limit(%goodNodes, 3)")
    assert fold(select("%only3")) == "n[1-3]"
    health.mark_failed({"n2": "timeout"})
    assert fold(select("%only3")) == "n[1,3-4]"
    health.mark_healthy(["n2"])
    assert fold(select("%only3")) == "n[1-3]"


def test_set_list_show_rm() -> None:
    plans.set_plan("a", "@web")
    plans.set_plan("b", "%a & n[1-2]")
    assert [(p.name, p.expr) for p in plans.list_plans()] == [("a", "@web"), ("b", "%a & n[1-2]")]
    assert plans.get_plan("b").expr == "%a & n[1-2]"
    plans.set_plan("a", "n[1-9]")  # replace
    assert fold(select("%b")) == "n[1-2]"
    plans.remove_plan("b")
    with pytest.raises(UnknownNameError, match=r"unknown plan: %b"):
        plans.get_plan("b")
    with pytest.raises(UnknownNameError, match=r"unknown plan: %b"):
        plans.remove_plan("b")
    with pytest.raises(UnknownNameError, match=r"unknown plan: %b"):
        select("%b | n1")


def test_set_validates_by_parsing() -> None:
    with pytest.raises(SelectionSyntaxError):
        plans.set_plan("bad", "all - [x=>1]")
    with pytest.raises(UsageError, match="invalid plan name"):
        plans.set_plan("bad name", "all")
    assert plans.list_plans() == []


def test_cycle_is_refused_and_named() -> None:
    plans.set_plan("a", "%b | n1")  # %b does not exist yet: allowed, fails on use
    plans.set_plan("b", "%c")
    with pytest.raises(PlanCycleError, match=r"^plan cycle: c -> a -> b -> c$"):
        plans.set_plan("c", "limit(%a, 2)")
    with pytest.raises(PlanCycleError, match=r"^plan cycle: s -> s$"):
        plans.set_plan("s", "all - %s")


def test_cycle_written_behind_our_back_is_reported_on_use() -> None:
    plans.set_plan("x", "n1")
    plans.set_plan("y", "%x")
    with State() as st, st.transaction() as db:
        db.execute("UPDATE plans SET expr='%y' WHERE name='x'")
    with pytest.raises(PlanCycleError, match=r"plan cycle: y -> x -> y"):
        select("%y")
