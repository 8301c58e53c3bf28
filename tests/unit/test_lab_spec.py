"""Unit tests of the lab's pure input handling: counts, names, rates, delays, losses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ShoalError, UsageError
from shoal.lab.labspec import (
    MAX_NAME,
    MAX_NODES,
    LabSpec,
    Naming,
    ShapeChange,
    Shaping,
    block,
    format_delay,
    format_loss,
    format_rate,
    lab_name_of_link,
    node_index,
    parse_count,
    parse_delay,
    parse_loss,
    parse_rate,
    validate_name,
)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100mbit", 100_000_000),
        ("1gbit", 1_000_000_000),
        ("1.5Mbit", 1_500_000),
        ("500kbit", 500_000),
        ("8000bit", 8000),
        ("1mbps", 8_000_000),  # tc's meaning: megabytes per second
        (" 10 mbit ", 10_000_000),
    ],
)
def test_parse_rate(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("100", "expected a number and a unit"),
        ("10furlongs", "unknown unit 'furlongs'"),
        ("mbit", "expected a number"),
        ("-5mbit", "expected a number"),
        ("1bit", "must be between"),
        ("1tbit", "must be between"),
    ],
)
def test_parse_rate_rejects(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_rate(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    assert text.strip() in str(err.value) or repr(text) in str(err.value)


@given(st.integers(min_value=8_000, max_value=100 * 10**9))
def test_rate_format_round_trips(bps: int) -> None:
    text = format_rate(bps)
    back = parse_rate(text)
    assert abs(back - bps) <= max(1, bps * 1e-5)


def test_parse_delay() -> None:
    assert parse_delay("20ms") == 20_000
    assert parse_delay("1s") == 1_000_000
    assert parse_delay("250us") == 250
    assert format_delay(20_000) == "20ms"
    assert format_delay(1_500) == "1.5ms"
    for bad in ("20", "20 parsecs", "0ms", "61s"):
        with pytest.raises(UsageError):
            parse_delay(bad)


@pytest.mark.parametrize(
    ("text", "bp"), [("1%", 100), ("0.5%", 50), ("1", 100), ("0", 0), ("100%", 10_000)]
)
def test_parse_loss(text: str, bp: int) -> None:
    assert parse_loss(text) == bp


@pytest.mark.parametrize("text", ["150%", "-1%", "abc", "nan", "0.001%", "%"])
def test_parse_loss_rejects(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_loss(text)
    assert str(err.value).startswith(f"bad loss {text!r}")


def test_format_loss() -> None:
    assert format_loss(100) == "1%"
    assert format_loss(5) == "0.05%"


@pytest.mark.parametrize("n", ["0", "-3", "100000", str(MAX_NODES + 1), "x", "2.5"])
def test_count_rejects(n: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_count(n)
    assert "lab size" in str(err.value)


def test_count_bounds() -> None:
    assert parse_count("1") == 1
    assert parse_count(str(MAX_NODES)) == MAX_NODES
    with pytest.raises(UsageError):
        LabSpec(n=0)
    with pytest.raises(UsageError):
        LabSpec(n=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "A", "a_b", "-a", "a" * (MAX_NAME + 1), "a/b", "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        validate_name(name)


def test_names_fit_linux_interface_limit() -> None:
    naming = Naming("a" * MAX_NAME)
    assert len(naming.root_link) <= 15
    # node-side and switch-side interface names are fixed or nK (≤ 5 chars)
    assert len(f"n{MAX_NODES}") <= 15


def test_namespace_pattern_claims_only_its_own_lab() -> None:
    a = Naming("a")
    pat = a.ns_pattern()
    assert pat.match("shl-a-sw") and pat.match("shl-a-n1") and pat.match("shl-a-n1000")
    for other in ("shl-a-n1-n1", "shl-a-n1-sw", "shl-ab-n1", "shl-a-n01", "a-n1", "shl-a-x"):
        assert not pat.match(other), other
    assert Naming("a-n1").node_ns("n1") == "shl-a-n1-n1"
    assert lab_name_of_link("shl-demo") == "demo"
    assert lab_name_of_link("eth0") is None


def test_addresses() -> None:
    blk = block("10.213.0.0/16", 0)
    assert blk == ipaddress.IPv4Network("10.213.0.0/22")
    assert str(Naming.controller_addr(blk)) == "10.213.0.1"
    assert str(Naming.node_addr(blk, 1)) == "10.213.0.2"
    last = Naming.node_addr(blk, MAX_NODES)
    assert last in blk and last != blk.broadcast_address
    assert block("10.213.0.0/16", 3) == ipaddress.IPv4Network("10.213.12.0/22")
    with pytest.raises(UsageError):
        block("10.213.0.0/16", 64)
    with pytest.raises(UsageError):
        Naming.node_addr(blk, MAX_NODES + 1)


def test_node_index() -> None:
    assert node_index("n7") == 7
    for bad in ("n0", "x1", "n", "n07", "N1"):
        with pytest.raises(UsageError):
            node_index(bad)


def test_shape_change_applies_and_clears() -> None:
    cur = Shaping(rate_bps=10**8, delay_us=None, loss_bp=100)
    assert ShapeChange(loss_bp=0).apply(cur) == Shaping(rate_bps=10**8)
    assert ShapeChange(clear_rate=True).apply(cur) == Shaping(loss_bp=100)
    assert ShapeChange(rate_bps=5 * 10**6).apply(cur).rate_bps == 5 * 10**6
    assert ShapeChange().empty
    assert not ShapeChange(clear_delay=True).empty
    assert cur.describe() == "rate 100mbit, loss 1%"
    assert Shaping().describe() == "-"
    assert Shaping.from_json(cur.to_json()) == cur


def test_errors_are_shoal_errors() -> None:
    with pytest.raises(ShoalError):
        parse_rate("fast")


def test_mac_of_is_fixed_local_and_unique_per_address() -> None:
    from shoal.lab.labspec import mac_of

    assert mac_of("10.213.0.2") == "02:73:0a:d5:00:02"
    blk = block("10.213.0.0/16", 5)
    macs = {mac_of(str(Naming.node_addr(blk, i))) for i in range(1, MAX_NODES + 1)}
    assert len(macs) == MAX_NODES
    assert all(int(m.split(":")[0], 16) & 0b11 == 0b10 for m in macs)  # local, unicast
