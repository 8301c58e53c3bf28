"""The controller's barrier board and the acquire decisions, without nodes."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest

from shoal.app.acquire import qualify, refusal
from shoal.app.appspec import Barrier, Component, Requirement
from shoal.app.barrier import BarrierBoard, BarrierState
from shoal.nodes.model import Node


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_full_barrier_waits_for_everyone() -> None:
    async def go() -> None:
        board = BarrierBoard([Barrier("b")])
        for n in ("n1", "n2", "n3"):
            board.join("b", n)
        first = [asyncio.ensure_future(board.arrive("b", n)) for n in ("n1", "n2")]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in first)
        last = await board.arrive("b", "n3")
        assert [await t for t in first] == [last, last]

    run(go())


def test_partial_barrier_releases_at_threshold_and_late_ones_pass() -> None:
    released: list[BarrierState] = []

    async def go() -> None:
        board = BarrierBoard([Barrier("b", 0.5)], on_release=released.append)
        for n in ("n1", "n2", "n3", "n4"):
            board.join("b", n)
        t1 = asyncio.ensure_future(board.arrive("b", "n1"))
        await asyncio.sleep(0.01)
        assert not t1.done()
        when = await board.arrive("b", "n2")  # 2 of 4 = 50%
        assert await t1 == when
        assert await asyncio.wait_for(board.arrive("b", "n3"), 0.1) == when

    run(go())
    assert len(released) == 1 and set(released[0].arrived) == {"n1", "n2"}


def test_withdrawn_node_no_longer_holds_the_barrier() -> None:
    async def go() -> None:
        board = BarrierBoard([Barrier("b")])
        board.join("b", "n1")
        board.join("b", "n2")
        waiting = asyncio.ensure_future(board.arrive("b", "n1"))
        await asyncio.sleep(0.01)
        board.withdraw("n2")
        await asyncio.wait_for(waiting, 0.1)

    run(go())


def test_timeout_releases_and_reports_late_nodes() -> None:
    late: list[list[str]] = []

    async def go() -> None:
        board = BarrierBoard(
            [Barrier("b", timeout=0.05)], on_timeout=lambda s, names: late.append(names)
        )
        for n in ("n1", "n2", "n3"):
            board.join("b", n)
        await asyncio.wait_for(board.arrive("b", "n1"), 1.0)

    run(go())
    assert late == [["n2", "n3"]]


def test_release_recorded_by_an_earlier_run_lets_everyone_through() -> None:
    async def go() -> None:
        board = BarrierBoard([Barrier("b")])
        board.join("b", "n1")
        board.join("b", "n2")
        board.mark_released("b", 123.0)
        assert await asyncio.wait_for(board.arrive("b", "n1"), 0.1) == 123.0

    run(go())


def test_release_is_recorded_before_any_node_is_told_to_go() -> None:
    """The release record (SQLite in the runner) comes first, then every node's go
    message in one synchronous pass, and only then do the waiters wake."""
    order: list[str] = []

    def record(state: BarrierState) -> None:
        order.append(f"record {len(state.arrived)}")

    async def go() -> None:
        board = BarrierBoard([Barrier("b")], on_release=record)
        waiters = []
        for n in ("n1", "n2", "n3"):
            board.join("b", n)
        for n in ("n1", "n2"):
            hook = partial(order.append, f"go {n}")
            waiters.append(asyncio.ensure_future(board.arrive("b", n, hook)))
        await asyncio.sleep(0.01)
        assert order == []
        await board.arrive("b", "n3", lambda: order.append("go n3"))
        assert order == ["record 3", "go n1", "go n2", "go n3"]
        await asyncio.gather(*waiters)

    run(go())


def test_a_release_that_cannot_be_recorded_tells_no_node_to_go() -> None:
    told: list[str] = []

    def broken(state: BarrierState) -> None:
        raise OSError("database is locked")

    async def go() -> None:
        board = BarrierBoard([Barrier("b")], on_release=broken)
        board.join("b", "n1")
        with pytest.raises(OSError, match="locked"):
            await board.arrive("b", "n1", lambda: told.append("n1"))
        assert told == []
        assert not board.states["b"].released

    run(go())


def _comp(require: list[str]) -> Component:
    return Component(
        name="c",
        select="@lab",
        count=3,
        require=tuple(Requirement.parse(r) for r in require),
        on_failure="replace",
        retries=0,
        software=(),
        env={},
        steps=(),
    )


def test_qualify_and_refusal_say_which_requirement_failed_on_how_many() -> None:
    nodes = [Node(f"n{i}", attrs={"site": "eu" if i < 3 else "us"}) for i in range(1, 7)]
    facts = {f"n{i}": {"mem_available_mb": 100 * i} for i in range(1, 6)}
    comp = _comp(["mem_available_mb >= 250", "site == us"])
    verdict = qualify(nodes, comp.require, facts, failed={"n5"}, taken={"n4"})
    assert [n.name for n in verdict.qualified] == ["n3"]
    assert verdict.rejected == {
        "fails mem_available_mb >= 250": ["n1", "n2"],
        "used by another component": ["n4"],
        "in the failed set": ["n5"],
        "fails mem_available_mb >= 250 (no such fact)": ["n6"],
    }
    text = refusal("app", comp, 3, len(nodes), verdict)
    assert text.startswith("app app: component c needs 3 node(s) but only 1 of 6 selected")
    assert "2 fails mem_available_mb >= 250 (n[1-2])" in text


@pytest.mark.parametrize(("key", "value"), [("name", "n3"), ("site", "us"), ("fact.cpus", 4)])
def test_requirement_keys_read_attributes_facts_and_fields(key: str, value: object) -> None:
    node = Node("n3", attrs={"site": "us"})
    verdict = qualify([node], [Requirement.parse(f"{key} == {value}")], {"n3": {"cpus": 4}})
    assert verdict.qualified == [node]


def test_acquire_keeps_members_and_refills_from_spares_of_the_same_component(
    tmp_path: Path,
) -> None:
    from shoal.app.acquire import acquire
    from shoal.app.appspec import AppSpec, Step
    from shoal.nodes.health import mark_failed
    from shoal.nodes.inventory import import_nodes
    from shoal.state import State

    step = (Step("s", "run", "true"),)
    web = Component("web", "all", 3, (), "replace", 0, (), {}, step)
    probe = Component("probe", "all", 1, (), "ignore", 0, (), {}, step)
    spec = AppSpec("a", "a.yaml", {"web": web, "probe": probe})
    with State(tmp_path / "state.db") as st:
        import_nodes([Node(f"n{i}") for i in range(1, 7)], state=st)
        first = acquire(spec, st)
        assert [n.name for n in first.members["web"]] == ["n1", "n2", "n3"]
        assert [n.name for n in first.members["probe"]] == ["n4"]
        mark_failed({"n2": "gone"}, state=st)
        again = acquire(spec, st, keep={"web": ["n1", "n3"], "probe": ["n4"]})
        assert [n.name for n in again.members["web"]] == ["n1", "n3", "n5"]
        assert [n.name for n in again.members["probe"]] == ["n4"]
        held = acquire(spec, st, keep={"web": ["n1", "n3"], "probe": ["n4"]}, hold={"web": 1})
        assert [n.name for n in held.members["web"]] == ["n1", "n3"]
