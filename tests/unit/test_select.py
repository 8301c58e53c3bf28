"""Selection grammar and evaluation over an in-memory universe (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import PlanCycleError, SelectionSyntaxError, UnknownNameError
from shoal.nodes import grammar
from shoal.nodes.model import AttrValue, Node
from shoal.nodes.nodeset import fold
from shoal.nodes.select import MemoryUniverse, evaluate


def make_universe() -> MemoryUniverse:
    nodes = []
    for i in range(1, 13):
        site = ("eu", "us", "ap")[i % 3]
        groups: tuple[str, ...] = ("web",) if i <= 6 else ("db",)
        if i % 4 == 0:
            groups = (*groups, "gpu")
        attrs: dict[str, str | int | float | bool] = {"site": site, "rack": i // 4}
        if i == 5:
            attrs["os"] = "debian-12"
        nodes.append(Node(name=f"n{i}", groups=groups, attrs=attrs, port=22 if i < 3 else None))
    facts: dict[str, dict[str, AttrValue]] = {
        f"n{i}": {"disk_free_gb": float(i), "cpus": 2 if i % 2 else 4} for i in range(1, 11)
    }
    facts["n5"]["os_id"] = "debian"
    return MemoryUniverse(
        nodes,
        failed=["n2", "n7", "ghost"],
        plans={
            "good": "all - failed",
            "two": "limit(%good, 2)",
            "loop1": "%loop2 | n1",
            "loop2": "@web & %loop1",
            "self": "%self",
            "missing": "%nope",
        },
        facts=facts,
        groups=["empty"],
    )


U = make_universe()


def sel(expr: str) -> str:
    return fold(evaluate(expr, U))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("n[1-3]", "n[1-3]"),
        ("n[1-6/2]", "n[1,3,5]"),
        ("@web", "n[1-6]"),
        ("@gpu", "n[4,8,12]"),
        ("@web,@gpu", "n[1-6,8,12]"),
        ("@web | @gpu", "n[1-6,8,12]"),
        ("@web!@gpu", "n[1-3,5-6]"),
        ("@web - @gpu", "n[1-3,5-6]"),
        ("@web -@gpu", "n[1-3,5-6]"),
        ("@web&@gpu", "n4"),
        ("@web^@gpu", "n[1-3,5-6,8,12]"),
        ("all", "n[1-12]"),
        ("@*", "n[1-12]"),
        ("@all", "n[1-12]"),
        ("failed", "n[2,7]"),  # ghost is not in the inventory
        ("healthy", "n[1,3-6,8-12]"),
        ("all - failed", "n[1,3-6,8-12]"),
        # one precedence level, left to right, like ClusterShell
        ("@web | @db & @gpu", "n[4,8,12]"),
        ("@web | (@db & @gpu)", "n[1-6,8,12]"),
        ("all - failed & [site=eu]", "n[3,6,9,12]"),
        ("(@web | @db) - failed & [disk_free_gb>=5]", "n[5-6,8-10]"),
        # filters
        ("[site=eu]", "n[3,6,9,12]"),
        ("@web[site=eu]", "n[3,6]"),
        ("@web [site=eu]", "n[3,6]"),
        ("n[1-6][site=eu]", "n[3,6]"),
        ("@web[site!=eu]", "n[1-2,4-5]"),
        ("[site~^(eu|ap)$][rack>=2]", "n[8-9,11-12]"),
        ("[site!~e]", "n[1-2,4-5,7-8,10-11]"),
        ("[disk_free_gb>=5]", "n[5-10]"),
        ("[disk_free_gb>=5.5]", "n[6-10]"),
        ("[disk_free_gb<2]", "n1"),
        ("[fact.cpus=4]", "n[2,4,6,8,10]"),
        ("[facts.cpus>2]", "n[2,4,6,8,10]"),
        ("[os_id=debian]", "n5"),
        ("[os~^debian]", "n5"),
        ("[os]", "n5"),
        ("[!os] & @web", "n[1-4,6]"),
        ("[port=22]", "n[1-2]"),
        ("[name~^n1]", "n[1,10-12]"),
        ("[site='eu']", "n[3,6,9,12]"),
        # numeric vs text: "10" > "9" only as numbers
        ("[rack>=1][rack<=2]", "n[4-11]"),
        # functions
        ("limit(all, 3)", "n[1-3]"),
        ("limit(@web | @gpu, 20)", "n[1-6,8,12]"),
        ("limit(all - failed, 2)", "n[1,3]"),
        ("limit(all, 25%)", "n[1-3]"),
        ("spread(all, 3, by=site)", "n[1-3]"),
        ("spread(@web, 4, by=site)", "n[1-3,5]"),
        ("spread(all, 3, by=rack)", "n[1,4,8]"),
        ("%good", "n[1,3-6,8-12]"),
        ("%two", "n[1,3]"),
        ("%two | n12", "n[1,3,12]"),
        ("n1-x", "n1-x"),  # a glued '-' continues the name
    ],
)
def test_selection(expr: str, expected: str) -> None:
    assert sel(expr) == expected


def test_random_is_reproducible_with_a_seed() -> None:
    a = evaluate("random(all, 4, 7)", U)
    b = evaluate("random(all, 4, seed=7)", U)
    assert a == b and len(a) == 4 and a <= evaluate("all", U)
    assert len(evaluate("random(@web, 10)", U)) == 6


def test_spread_covers_every_value_first() -> None:
    picked = evaluate("spread(all, 6, by=site)", U)
    sites = [U.by_name[n].attrs["site"] for n in picked]
    assert sorted(sites) == ["ap", "ap", "eu", "eu", "us", "us"]


def test_unknown_group() -> None:
    with pytest.raises(UnknownNameError, match="unknown group: @nope"):
        evaluate("@web | @nope", U)
    assert len(evaluate("@empty", U)) == 0


def test_unknown_plan() -> None:
    with pytest.raises(UnknownNameError, match="unknown plan: %nope"):
        evaluate("%missing", U)


def test_plan_cycle_names_the_loop() -> None:
    with pytest.raises(PlanCycleError, match=r"plan cycle: loop1 -> loop2 -> loop1"):
        evaluate("%loop1", U)
    with pytest.raises(PlanCycleError, match=r"plan cycle: self -> self"):
        evaluate("n1 | %self", U)


@pytest.mark.parametrize(
    ("expr", "column", "expected"),
    [
        ("[site=>eu]", 5, "not '=>'"),
        ("[site==eu]", 5, "not '=='"),
        ("@web[site<>eu]", 9, "not '<>'"),
        ("@web |", 6, "a node set"),
        ("(@web", 5, "')'"),
        ("@web)", 4, "unbalanced ')'"),
        ("@web @db", 5, "an operator"),
        ("[site eu]", 6, "an attribute operator"),
        ("[=eu]", 1, "an attribute name"),
        ("[site=eu", 8, "']'"),
        ("limit(all)", 9, "a count"),
        ("limit(all, x)", 11, "a count"),
        ("spread(all, 2)", 13, "by=ATTR"),
        ("spread(all, 2, site)", 15, "'by=ATTR'"),
        ("[os~(]", 4, "a valid regular expression"),
        ("n[3-1]", 2, "a valid node set"),
        ("", 0, "a selection expression"),
        ("@", 1, "a group name"),
        ("%", 1, "a plan name"),
        ("a,,b", 2, "a node set"),
    ],
)
def test_syntax_errors_point_at_the_column(expr: str, column: int, expected: str) -> None:
    with pytest.raises(SelectionSyntaxError) as info:
        grammar.parse(expr)
    err = info.value
    assert err.column == column, (err.column, str(err))
    assert expected in str(err)
    assert err.pointer().splitlines()[1] == "  " + " " * column + "^"
    assert "\n" not in str(err)


def test_plan_refs() -> None:
    assert grammar.plan_refs(grammar.parse("%a | limit(%b & [x=1], 2) - (%c)")) == ["a", "b", "c"]


def test_comma_inside_calls_separates_arguments() -> None:
    assert sel("limit((n1,n2,n3), 2)") == "n[1-2]"
    assert sel("limit(n1|n2|n3, 2)") == "n[1-2]"


# --- property: expressions agree with Python set semantics -------------------------

GROUPS = {"a": {"n1", "n2", "n3", "n5"}, "b": {"n3", "n4", "n8"}, "c": {"n1", "n8", "n9"}}
PU = MemoryUniverse(
    [
        Node(name=f"n{i}", groups=tuple(g for g, m in GROUPS.items() if f"n{i}" in m))
        for i in range(1, 10)
    ],
    failed=["n2", "n8"],
)
OPS = {
    ",": lambda x, y: x | y,
    " | ": lambda x, y: x | y,
    "!": lambda x, y: x - y,
    " - ": lambda x, y: x - y,
    "&": lambda x, y: x & y,
    "^": lambda x, y: x ^ y,
}
ATOMS = {
    "@a": GROUPS["a"],
    "@b": GROUPS["b"],
    "@c": GROUPS["c"],
    "failed": {"n2", "n8"},
    "healthy": {f"n{i}" for i in range(1, 10)} - {"n2", "n8"},
    "n[1-4]": {"n1", "n2", "n3", "n4"},
    "n9": {"n9"},
}


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> tuple[str, set[str]]:
    if depth > 2 or draw(st.booleans()):
        atom = draw(st.sampled_from(sorted(ATOMS)))
        return atom, set(ATOMS[atom])
    text, value = draw(expressions(depth + 1))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(sorted(OPS)))
        rtext, rvalue = draw(expressions(depth + 1))
        value = OPS[op](value, rvalue)
        # compound operands come back parenthesised, so the chain reads left to right
        text = f"{text}{op}{rtext}"
    return f"({text})", value


@given(expressions())
@settings(max_examples=300)
def test_expressions_agree_with_python_sets(case: tuple[str, set[str]]) -> None:
    text, value = case
    assert evaluate(text, PU) == value
