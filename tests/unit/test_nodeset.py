"""NodeSet: ClusterShell-compatible parsing/folding and Python set semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import NodeSetParseError
from shoal.nodes.nodeset import NodeSet, expand, fold, natural_sorted, parse

# --- ClusterShell examples mean the same ------------------------------------------------

CLUSTERSHELL_EXAMPLES = [
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[1-32,40]", [f"n{i}" for i in range(1, 33)] + ["n40"]),
    ("n[1-9/2]", ["n1", "n3", "n5", "n7", "n9"]),
    ("n[01-03]", ["n01", "n02", "n03"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
    ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
    ("node-1.site_a", ["node-1.site_a"]),
    ("a,b,c", ["a", "b", "c"]),
    ("n[1-5]!n[2-3]", ["n1", "n4", "n5"]),
    ("n[1-5]&n[4-9]", ["n4", "n5"]),
    ("n[1-5]^n[4-9]", ["n1", "n2", "n3", "n6", "n7", "n8", "n9"]),
    # left to right, no precedence: ((n[1-5] ! n3) , n3) & n[3-4]
    ("n[1-5]!n3,n3&n[3-4]", ["n3", "n4"]),
    ("n[1-10]!n[2-9]&n[1-5]", ["n1"]),
]


@pytest.mark.parametrize(("text", "names"), CLUSTERSHELL_EXAMPLES)
def test_clustershell_examples(text: str, names: list[str]) -> None:
    assert NodeSet(text) == set(names)
    assert list(NodeSet(text)) == natural_sorted(names)


FOLD_EXAMPLES = [
    ([f"n{i}" for i in range(1, 31)] + ["n32"], "n[1-30,32]"),
    (["n1", "n3", "n5"], "n[1,3,5]"),
    (["n01", "n02", "n03"], "n[01-03]"),
    (["r1n01", "r1n02", "r2n01", "r2n02"], "r[1-2]n[01-02]"),
    (["n1-ib", "n2-ib"], "n[1-2]-ib"),
    (["b", "a", "n2", "n10"], "a,b,n[2,10]"),
    (["n5"], "n5"),
    ([], ""),
]


@pytest.mark.parametrize(("names", "text"), FOLD_EXAMPLES)
def test_fold(names: list[str], text: str) -> None:
    assert fold(names) == text
    assert str(NodeSet(names)) == text


def test_natural_order() -> None:
    ns = NodeSet(["n10", "n2", "n1", "m3"])
    assert list(ns) == ["m3", "n1", "n2", "n10"]


def test_padding_is_part_of_the_name() -> None:
    assert NodeSet("n[1-2]") != NodeSet("n[01-02]")
    assert NodeSet("n1,n01") == {"n1", "n01"}


@pytest.mark.parametrize("bad", ["n[3-1]", "n[1-", "n[a-b]", "n[1-4/0]", "n[]", "n]1["])
def test_bad_ranges(bad: str) -> None:
    with pytest.raises(NodeSetParseError):
        parse(bad)


def test_mixed_padding_refused() -> None:
    with pytest.raises(NodeSetParseError):
        expand("n[1-010]")


def test_set_protocol() -> None:
    a = NodeSet("n[1-4]")
    b = NodeSet("n[3-6]")
    assert a | b == NodeSet("n[1-6]")
    assert a & b == NodeSet("n[3-4]")
    assert a - b == NodeSet("n[1-2]")
    assert a ^ b == NodeSet("n[1-2,5-6]")
    assert NodeSet("n[3-4]") <= a
    assert a >= NodeSet("n1")
    assert NodeSet("n1") < a
    assert "n2" in a and "n9" not in a
    assert len(a) == 4
    c = a.copy()
    c |= b
    c -= NodeSet("n1")
    c &= NodeSet("n[1-5]")
    c ^= NodeSet("n[5-7]")
    assert c == NodeSet("n[2-4,6-7]")
    assert a == {"n1", "n2", "n3", "n4"}  # compares with plain sets
    assert {"n1"} | a == a
    assert repr(NodeSet("n[1-2]")) == "NodeSet('n[1-2]')"


def test_large_fold() -> None:
    # speed is measured in bench/select.py, not asserted here
    names = [f"node{i}" for i in range(100_000)]
    assert fold(names) == "node[0-99999]"


# --- properties -----------------------------------------------------------------------

prefixes = st.sampled_from(["n", "node-", "r1n", "a.b_", "x", "gpu-", "", "c"])
suffixes = st.sampled_from(["", "-ib", ".lab", "_x"])
numbers = st.integers(min_value=0, max_value=120)
pads = st.sampled_from([0, 0, 2, 3])


@st.composite
def node_names(draw: st.DrawFn) -> str:
    prefix = draw(prefixes)
    n = draw(numbers)
    pad = draw(pads)
    num = f"{n:0{pad}d}"
    suffix = draw(suffixes)
    if draw(st.booleans()):
        num += "x" + str(draw(st.integers(0, 5)))  # a second dimension
    name = f"{prefix}{num}{suffix}"
    return name if name[0].isalnum() else "z" + name


name_sets = st.sets(node_names(), max_size=60)


@given(name_sets)
@settings(max_examples=300)
def test_fold_parse_round_trip(names: set[str]) -> None:
    text = fold(names)
    assert parse(text) == names if names else text == ""


@given(name_sets, name_sets)
def test_algebra_agrees_with_python_sets(a: set[str], b: set[str]) -> None:
    x, y = NodeSet(a), NodeSet(b)
    assert (x | y) == (a | b)
    assert (x & y) == (a & b)
    assert (x - y) == (a - b)
    assert (x ^ y) == (a ^ b)
    assert (x <= y) == (a <= b)
    assert (x >= y) == (a >= b)
    assert len(x) == len(a)
    z = x.copy()
    z |= y
    assert z == a | b
    z = x.copy()
    z -= y
    assert z == a - b
    z = x.copy()
    z &= y
    assert z == a & b
    z = x.copy()
    z ^= y
    assert z == a ^ b


@given(name_sets, name_sets)
def test_clustershell_operators_in_strings(a: set[str], b: set[str]) -> None:
    if not a or not b:
        return
    # operators apply left to right with no grouping, so each name of b gets its own
    sa, sb = fold(a), fold(b)
    assert parse(f"{sa},{sb}") == a | b
    assert parse(sa + "".join(f"!{n}" for n in b)) == a - b
    assert parse(sa + "".join(f"^{n}" for n in b)) == a ^ b
    if "," not in sb:
        assert parse(f"{sa}&{sb}") == a & b


@given(name_sets)
def test_iteration_is_natural_and_complete(names: set[str]) -> None:
    listed = list(NodeSet(names))
    assert sorted(listed) == sorted(names)
    assert listed == natural_sorted(names)


@given(name_sets)
def test_folded_sets_read_back_through_the_selection_grammar(names: set[str]) -> None:
    from shoal.nodes.select import MemoryUniverse, evaluate

    if names:
        assert evaluate(fold(names), MemoryUniverse([])) == names
