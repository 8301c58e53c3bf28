"""The pure pieces of an ``up`` pass: carry-over of earlier members, slots,
predecessors and a member's ``${...}`` values."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.app.acquire import Allocation
from shoal.app.appspec import AppSpec, Component, Software, Step
from shoal.app.carryover import carry_over, plan_slots
from shoal.app.naming import environment, values
from shoal.app.policy import Action, Policy
from shoal.app.predecessors import Predecessors
from shoal.app.store import Member
from shoal.nodes.model import Node

STEPS = (Step("a", "run", "true"), Step("b", "run", "true"))


def comp(name: str, policy: Policy, steps: tuple[Step, ...] = STEPS) -> Component:
    return Component(name, "all", 2, (), policy, 1, (), {"K": "${node}-${index}"}, steps)


def spec(*components: Component) -> AppSpec:
    return AppSpec("app", "app.yaml", {c.name: c for c in components})


def member(component: str, node: str, slot: int, state: str = "active") -> Member:
    return Member(component, node, slot, state, 0.0)


def test_carry_over_keeps_healthy_members_and_applies_the_policy_to_failed_ones() -> None:
    s = spec(comp("web", Policy.REPLACE), comp("db", Policy.IGNORE), comp("w", Policy.RESTART))
    previous = [
        member("web", "n1", 0),
        member("web", "n2", 1),
        member("db", "n3", 0),
        member("w", "n4", 0, "failed"),  # left out earlier, healthy now: rejoins
        member("w", "n5", 1, "failed"),  # left out earlier, still failed: slot held
        member("db", "n6", 1, "failed"),  # ignore: never rejoins
        member("web", "n7", 2, "replaced"),  # gone for good: not counted
        member("gone", "n8", 0),  # a component no longer in the spec
    ]
    out = carry_over(s, previous, failed={"n2", "n3", "n5"})
    assert out.abort is None
    assert out.keep == {"web": ["n1"], "w": ["n4"]}
    assert out.hold == {"db": 2, "w": 1}
    assert [(m.node, a) for m, a in out.dead] == [("n2", Action.REPLACE), ("n3", Action.LEAVE_OUT)]


def test_carry_over_stops_at_an_abort_member_in_the_failed_set() -> None:
    s = spec(comp("web", Policy.IGNORE), comp("core", Policy.ABORT))
    previous = [member("web", "n1", 0), member("core", "n2", 0), member("core", "n3", 1)]
    out = carry_over(s, previous, failed={"n2"})
    assert out.abort is not None and out.abort.node == "n2"
    assert carry_over(s, previous, failed=set()).abort is None


def test_plan_slots_keeps_slots_and_gives_gaps_to_newcomers() -> None:
    alloc = Allocation(members={"web": [Node("n1"), Node("n5"), Node("n3"), Node("n9")]})
    previous = [
        member("web", "n1", 0),
        member("web", "n2", 1),  # gone: n5 takes slot 1
        member("web", "n3", 2),
    ]
    slots, replaced = plan_slots(alloc, previous)
    assert slots == {("web", "n1"): 0, ("web", "n5"): 1, ("web", "n3"): 2, ("web", "n9"): 3}
    assert replaced == [("web", "n2", "n5")]
    assert [n.name for n in alloc.members["web"]] == ["n1", "n5", "n3", "n9"]


def test_predecessors_wait_for_every_active_member_and_forget_departed_ones() -> None:
    after_db = Step("serve", "run", "true", after=("db.b",))
    s = spec(comp("db", Policy.IGNORE), comp("web", Policy.IGNORE, (after_db,)))
    active = {"db": ["n1", "n2"]}
    preds = Predecessors(s, lambda c: active.get(c, []))
    assert preds.keys(after_db) == [("db", "b")]
    assert preds.keys(Step("x", "run", "true", after=("db",))) == [("db", "a"), ("db", "b")]

    async def go() -> list[str]:
        seen: list[str] = []
        waiter = asyncio.ensure_future(preds.wait(after_db))
        waiter.add_done_callback(lambda _: seen.append("released"))
        preds.mark_done("db", "b", "n1")
        await asyncio.sleep(0.01)
        seen.append("n1 done")
        active["db"] = ["n1"]  # n2 left its component
        preds.recheck()
        await asyncio.wait_for(waiter, 1)
        return seen

    assert asyncio.run(go()) == ["n1 done", "released"]


def test_values_and_environment_of_a_member() -> None:
    web = comp("web", Policy.IGNORE)
    s = AppSpec(
        "app",
        "app.yaml",
        {"web": web, "db": comp("db", Policy.IGNORE)},
        software={"tool": Software("tool", Path("/src"), ())},
    )
    members = {"web": [Node("w1", host="10.0.0.1"), Node("w2")], "db": [Node("d1")]}
    v = values(s, web, members["web"][1], home="/h/.shoal/", slot=1, members=members)
    assert v["dir"] == "/h/.shoal/apps/app" and v["sw.tool"] == "/h/.shoal/apps/app/sw/tool"
    assert (v["node"], v["index"], v["addr"], v["count"]) == ("w2", "1", "w2", "2")
    assert (v["addrs.web"], v["addr.web"], v["nodes.db"], v["count.db"]) == (
        "10.0.0.1,w2",
        "10.0.0.1",
        "d1",
        "1",
    )
    env = environment(s, web, Step("a", "run", "x", env={"S": "${dir}"}), members["web"][1], v)
    assert env["SHOAL_INDEX"] == "1" and env["K"] == "w2-1" and env["S"] == "/h/.shoal/apps/app"
