"""Pure logic of a rollout plan: stages assigned from selections and shares, widths."""

from __future__ import annotations

import pytest

from shoal.content.rollout import RolloutPlan, assign_stages, parse_stages, unavailable
from shoal.errors import UsageError

NAMES = [f"n{i}" for i in range(1, 11)]


def test_selections_then_cumulative_shares_and_the_rest() -> None:
    stages = assign_stages(NAMES, ["@alpha", "50%", "80%"], lambda e: {"n3", "n9"})
    assert stages == [
        ("@alpha", ["n3", "n9"]),
        ("50%", ["n1", "n2", "n4"]),
        ("80%", ["n5", "n6", "n7"]),
        ("rest", ["n8", "n10"]),
    ]


def test_empty_stages_are_left_out() -> None:
    assert assign_stages(NAMES[:2], ["@none", "10%", "100%"], lambda e: set()) == [
        ("10%", ["n1"]),
        ("100%", ["n2"]),
    ]


def test_max_unavailable_counts_and_shares() -> None:
    assert unavailable("25%", 8) == 2
    assert unavailable("25%", 3) == 1
    assert unavailable("3", 8) == 3
    with pytest.raises(UsageError):
        unavailable("0", 8)


def test_plan_from_a_spec_block() -> None:
    plan = RolloutPlan.from_dict({"stages": "@alpha,10%,100%", "pause": "manual"})
    assert plan.stages == parse_stages("@alpha,10%,100%") and plan.pause is None
    with pytest.raises(UsageError, match="unknown key 'stage'"):
        RolloutPlan.from_dict({"stage": "10%"})
    with pytest.raises(UsageError, match="between 0 and 100"):
        RolloutPlan.from_dict({"stages": ["150%"]})
