"""The keeper's pure decisions: restart cool-downs, which members a smaller spec
drops, how ``prefer:`` ranks candidates, and the spec errors of bad entries."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shoal.app.acquire import Allocation, Verdict, acquire, ranked, shortfall
from shoal.app.appspec import AppSpec, Component, Preference, Step, load
from shoal.app.carryover import carry_over
from shoal.app.policy import Policy
from shoal.app.reconcile import Backoff, RestartBook
from shoal.app.shrink import dropped
from shoal.app.store import Member
from shoal.errors import ConfigError
from shoal.nodes import inventory
from shoal.nodes.model import Node
from shoal.state import State

# -- cool-down -----------------------------------------------------------------------


def test_backoff_doubles_from_30_s_to_a_10_min_cap() -> None:
    b = Backoff()
    assert [b.delay(n) for n in range(7)] == [30, 60, 120, 240, 480, 600, 600]
    assert Backoff(first=1, factor=3, limit=5).delay(2) == 5


def test_restart_book_waits_its_cool_down_then_doubles_and_resets_after_health() -> None:
    book = RestartBook(Backoff(first=30, factor=2, limit=600, reset_after=300))
    key = ("n1", "app.web.svc")
    assert book.dead(key, 0.0) == 30.0
    assert book.dead(key, 10.0) == 30.0  # seen again: the same deadline, not pushed back
    book.restarted(key, 30.0)
    assert book.dead(key, 40.0) == 100.0  # second failure: 60 s
    book.restarted(key, 100.0)
    book.running(key, 200.0)  # healthy, but not long enough to forget
    assert book.dead(key, 210.0) == 330.0  # third: 120 s
    book.restarted(key, 330.0)
    book.running(key, 630.0)  # RUNNING 300 s after the last restart: reset
    assert book.dead(key, 700.0) == 730.0
    other = ("n2", "app.web.svc")
    assert book.dead(other, 700.0) == 730.0  # per program


def test_restart_book_for_a_watched_monitor_restarts_at_once() -> None:
    book = RestartBook(Backoff(first=0.0, reset_after=0.0))
    assert book.dead(("n1", "p"), 5.0) == 5.0


# -- shrink ----------------------------------------------------------------------------


def member(component: str, node: str, slot: int, state: str = "active") -> Member:
    return Member(component, node, slot, state, 0.0)


def alloc(**members: list[str]) -> Allocation:
    return Allocation(members={c: [Node(n) for n in ns] for c, ns in members.items()})


def test_count_lowered_drops_the_highest_slots_first_and_nothing_else() -> None:
    previous = [member("w", f"n{i + 1}", i) for i in range(4)] + [member("db", "n9", 0)]
    out = dropped(previous, alloc(w=["n1", "n2"], db=["n9"]), set(), {"w": 2, "db": 1})
    assert [(d.member.node, d.member.slot) for d in out] == [("n4", 3), ("n3", 2)]
    assert {d.reason for d in out} == {"count lowered to 2"}


def test_narrower_select_removed_component_and_unfinished_stops_are_dropped() -> None:
    previous = [
        member("w", "n1", 0),
        member("w", "n2", 1),
        member("w", "n3", 2, "stopping"),  # an earlier pass stopped short: again
        member("w", "n4", 3, "stopped"),  # done: left alone
        member("w", "n5", 4, "replaced"),
        member("old", "n6", 0),
        member("w", "n7", 5),  # dead: the failure policy's, not a drop
    ]
    out = dropped(previous, alloc(w=["n1", "n8"]), {"n7"}, {"w": 3})
    assert [(d.member.node, d.reason) for d in out] == [
        ("n6", "component old removed from the spec"),
        ("n3", "dropped"),
        ("n2", "no longer selected or qualified"),
    ]


def test_acquire_keeps_the_lowest_slots_when_count_is_lowered(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        inventory.import_nodes([Node(f"n{i}", groups=("g",)) for i in range(1, 7)], state=st)
        steps = (Step("s", "service", "sleep 1"),)
        comp = Component("w", "@g", 2, (), Policy.REPLACE, 0, (), {}, steps)
        spec = AppSpec("a", "a.yaml", {"w": comp})
        previous = [member("w", n, i) for i, n in enumerate(["n5", "n2", "n4", "n1"])]
        carried = carry_over(spec, previous, set())
        got = acquire(spec, st, keep=carried.keep)
        assert [n.name for n in got.members["w"]] == ["n5", "n2"]
        assert [d.member.node for d in dropped(previous, got, set(), {"w": 2})] == ["n1", "n4"]


# -- prefer ----------------------------------------------------------------------------


def test_prefer_ranks_by_entries_in_order_missing_last_ties_by_name_order() -> None:
    nodes = [Node(f"n{i}") for i in range(1, 7)]
    facts: dict[str, dict[str, object]] = {
        "n1": {"rtt_ms": 9.0, "disk_free_gb": 5},
        "n2": {"rtt_ms": 2.0, "disk_free_gb": 1},
        "n3": {"rtt_ms": 2.0, "disk_free_gb": 8},
        "n4": {"disk_free_gb": 99},  # no rtt: after every node that has one
        "n5": {"rtt_ms": 2.0, "disk_free_gb": 8},  # ties n3: name order
    }
    prefer = (Preference("rtt_ms", highest=False), Preference("disk_free_gb", highest=True))
    order = [n.name for n in ranked(nodes, prefer, facts)]  # type: ignore[arg-type]
    assert order == ["n3", "n5", "n2", "n1", "n4", "n6"]
    assert [n.name for n in ranked(nodes, (), {})] == [n.name for n in nodes]


def test_prefer_reads_attributes_too_and_numbers_rank_before_text() -> None:
    nodes = [Node("a", attrs={"tier": "gold"}), Node("b", attrs={"tier": 2}), Node("c")]
    got = ranked(nodes, (Preference("tier", highest=True),), {})
    assert [n.name for n in got] == ["b", "a", "c"]


def test_acquire_takes_the_best_n_and_ranks_the_spares(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        inventory.import_nodes([Node(f"n{i}", groups=("g",)) for i in range(1, 6)], state=st)
        steps = (Step("s", "service", "sleep 1"),)
        prefer = (Preference("rtt_ms", highest=False),)
        comp = Component("w", "@g", 2, (), Policy.REPLACE, 0, (), {}, steps, prefer=prefer)
        spec = AppSpec("a", "a.yaml", {"w": comp})
        rtt = {"n1": 50.0, "n2": 40.0, "n3": 1.0, "n4": 30.0, "n5": 2.0}
        got = acquire(spec, st, facts={n: {"rtt_ms": v} for n, v in rtt.items()})
        assert [n.name for n in got.members["w"]] == ["n3", "n5"]
        assert [n.name for n in got.spares["w"]] == ["n4", "n2", "n1"]


def test_shortfall_says_how_many_were_selected_and_why_none_can_stand_in() -> None:
    steps = (Step("s", "service", "sleep 1"),)
    comp = Component("w", "n[1-4]", 2, (), Policy.REPLACE, 0, (), {}, steps)
    a = alloc(w=["n1"])
    a.verdicts["w"] = Verdict([Node("n1"), Node("n2")], {"fails name != n3": ["n3", "n4"]})
    a.selected["w"] = 4
    text = shortfall("app", comp, 1, 2, a, {"n2": "unreachable"})
    assert text.startswith("app app: component w runs 1 of 2 node(s): no spare left of 4")
    assert "2 fails name != n3 (n[3-4])" in text
    assert "1 failed (unreachable) (n2)" in text and "1 members already (n1)" in text


def spec_text(tmp_path: Path, prefer: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            app: p
            components:
              w:
                select: "@all"
                prefer: {prefer}
                processes:
                  - {{name: s, service: "sleep 1"}}
            """
        )
    )
    return path


@pytest.mark.parametrize(
    ("prefer", "message"),
    [
        ("[{fastest: rtt_ms}]", "app.yaml:5: components.w.prefer.0: expected one of lowest"),
        ("[{lowest: rtt_ms, highest: x}]", "expected only one of lowest, highest"),
        ("rtt_ms", "app.yaml:5: components.w.prefer: expected an array"),
        ("[{lowest: 'rtt ms'}]", "does not match"),
        ("[{lowest: rtt_ms}, {highest: rtt_ms}]", "app.yaml:5: prefer: 'rtt_ms' is ranked twice"),
    ],
)
def test_bad_prefer_entries_are_refused_with_file_and_line(
    tmp_path: Path, prefer: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(spec_text(tmp_path, prefer))
    assert message in str(info.value)


def test_a_good_prefer_list_is_typed_in_order(tmp_path: Path) -> None:
    spec = load(spec_text(tmp_path, "[{lowest: rtt_ms}, {highest: disk_free_gb}]"))
    assert [p.text for p in spec.components["w"].prefer] == [
        "lowest rtt_ms",
        "highest disk_free_gb",
    ]
