"""Failure policies: every policy × failure kind, and the step retries of ``restart``."""

from __future__ import annotations

import itertools

import pytest

from shoal.app.policy import Action, FailureKind, Policy, decide

RS, RP, IG, AB = Policy.RESTART, Policy.REPLACE, Policy.IGNORE, Policy.ABORT
K = FailureKind

#: (policy, kind, retries_left) -> action, written out: the documented table
EXPECTED = {
    (RS, K.CONFIGURE, 0): Action.LEAVE_OUT,
    (RP, K.CONFIGURE, 0): Action.REPLACE,
    (IG, K.CONFIGURE, 0): Action.LEAVE_OUT,
    (AB, K.CONFIGURE, 0): Action.ABORT,
    (RS, K.STEP_EXIT, 2): Action.RETRY,
    (RP, K.STEP_EXIT, 2): Action.REPLACE,
    (IG, K.STEP_EXIT, 2): Action.LEAVE_OUT,
    (AB, K.STEP_EXIT, 2): Action.ABORT,
    (RS, K.STEP_EXIT, 0): Action.LEAVE_OUT,
    (RP, K.STEP_EXIT, 0): Action.REPLACE,
    (IG, K.STEP_EXIT, 0): Action.LEAVE_OUT,
    (AB, K.STEP_EXIT, 0): Action.ABORT,
    (RS, K.NODE_ERROR, 0): Action.LEAVE_OUT,
    (RP, K.NODE_ERROR, 0): Action.REPLACE,
    (IG, K.NODE_ERROR, 0): Action.LEAVE_OUT,
    (AB, K.NODE_ERROR, 0): Action.ABORT,
    (RS, K.BARRIER_LATE, 0): Action.CONTINUE,
    (RP, K.BARRIER_LATE, 0): Action.REPLACE,
    (IG, K.BARRIER_LATE, 0): Action.CONTINUE,
    (AB, K.BARRIER_LATE, 0): Action.ABORT,
    (RS, K.FOUND_FAILED, 0): Action.LEAVE_OUT,
    (RP, K.FOUND_FAILED, 0): Action.REPLACE,
    (IG, K.FOUND_FAILED, 0): Action.LEAVE_OUT,
    (AB, K.FOUND_FAILED, 0): Action.ABORT,
    (RS, K.LEFT_OUT_HEALTHY, 0): Action.REJOIN,
    (RP, K.LEFT_OUT_HEALTHY, 0): Action.LEAVE_OUT,
    (IG, K.LEFT_OUT_HEALTHY, 0): Action.LEAVE_OUT,
    (AB, K.LEFT_OUT_HEALTHY, 0): Action.LEAVE_OUT,
    (RS, K.LEFT_OUT_FAILED, 0): Action.LEAVE_OUT,
    (RP, K.LEFT_OUT_FAILED, 0): Action.LEAVE_OUT,
    (IG, K.LEFT_OUT_FAILED, 0): Action.LEAVE_OUT,
    (AB, K.LEFT_OUT_FAILED, 0): Action.LEAVE_OUT,
}


def test_the_table_covers_every_policy_and_kind() -> None:
    covered = {(policy, kind) for policy, kind, _ in EXPECTED}
    assert covered == set(itertools.product(Policy, FailureKind))


@pytest.mark.parametrize(
    ("policy", "kind", "retries_left"),
    sorted(EXPECTED, key=lambda k: (k[0].value, k[1].value, k[2])),
    ids=lambda v: str(getattr(v, "value", v)),
)
def test_decide(policy: Policy, kind: FailureKind, retries_left: int) -> None:
    assert decide(policy, kind, retries_left=retries_left) is EXPECTED[policy, kind, retries_left]


@pytest.mark.parametrize("kind", [k for k in FailureKind if k is not K.STEP_EXIT])
@pytest.mark.parametrize("policy", list(Policy))
def test_retries_left_only_matter_for_a_step_exit(policy: Policy, kind: FailureKind) -> None:
    assert decide(policy, kind, retries_left=5) is decide(policy, kind)


def test_restart_retries_exactly_while_retries_are_left() -> None:
    actions = [decide(RS, K.STEP_EXIT, retries_left=n) for n in (3, 2, 1, 0)]
    assert actions == [Action.RETRY] * 3 + [Action.LEAVE_OUT]


def test_the_spec_word_is_accepted_as_the_policy() -> None:
    assert decide("replace", K.NODE_ERROR) is Action.REPLACE  # type: ignore[arg-type]
    assert Policy("abort") is AB and f"{Policy.IGNORE}" == "ignore"
    with pytest.raises(ValueError):
        Policy("pray")
