"""Failure policies: what happens to a member node that failed, decided in one place.

A component's ``on_failure`` (:class:`Policy`) meets a :class:`FailureKind`
(what went wrong, and when) and :func:`decide` answers with an
:class:`Action`; it is pure (no nodes, no state), so every pair is a unit
test. The callers apply the action: the runner during an ``up`` pass
(:mod:`.runtime`), ``up`` itself for members an earlier pass left behind
(:mod:`.lifecycle`), a block for a step that may be retried (:mod:`.blocks`).

The table, by policy:

* ``restart`` — a run step that exits non-zero is retried while retries are
  left; then, like any other failure, the node is left out (its slot held,
  not refilled). A member an earlier pass left out is started again once its
  node is out of the failed set. A node late at a barrier carries on (it
  passes the released barrier when it arrives).
* ``ignore`` — like ``restart`` without retries and without rejoining.
* ``replace`` — the node leaves and a spare that qualifies takes its slot;
  lateness at a barrier counts as a failure.
* ``abort`` — the application is stopped (:class:`shoal.errors.AppAborted`);
  lateness at a barrier counts as a failure.

A member an earlier pass left out whose node is still in the failed set stays
out under every policy.
"""

from __future__ import annotations

from enum import Enum


class Policy(str, Enum):
    """A component's ``on_failure`` (the spec's word is the value, and its str)."""

    RESTART = "restart"
    REPLACE = "replace"
    IGNORE = "ignore"
    ABORT = "abort"

    def __str__(self) -> str:  # as StrEnum (3.11) does
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class FailureKind(Enum):
    """What happened to a member node, and at which point of ``up``."""

    #: its configuration failed (agent, software or install step)
    CONFIGURE = "configure"
    #: a run step exited non-zero (``retries_left`` says how many tries remain)
    STEP_EXIT = "step exit"
    #: anything else during its block: unreachable, agent error, a service not
    #: running or not ready, the connection lost at a barrier
    NODE_ERROR = "node error"
    #: a barrier timed out before the node arrived
    BARRIER_LATE = "barrier late"
    #: at ``up``: an active member of an earlier pass is in the failed set now
    FOUND_FAILED = "found failed"
    #: at ``up``: a member an earlier pass left out, its node out of the failed set
    LEFT_OUT_HEALTHY = "left out, healthy"
    #: at ``up``: a member an earlier pass left out, its node still in the failed set
    LEFT_OUT_FAILED = "left out, failed"


class Action(Enum):
    """What the caller does with the node."""

    #: run the failed step again
    RETRY = "retry"
    #: the node leaves its component, recorded ``failed``; its slot is held, not refilled
    LEAVE_OUT = "leave out"
    #: the node leaves, recorded ``replaced``; the next qualifying spare takes its slot
    REPLACE = "replace"
    #: stop the application (every service and running step) and raise AppAborted
    ABORT = "abort"
    #: nothing: the node carries on
    CONTINUE = "continue"
    #: a member left out earlier is started again (kept, in its old slot)
    REJOIN = "rejoin"


_ON_FAILURE = {
    Policy.RESTART: Action.LEAVE_OUT,
    Policy.IGNORE: Action.LEAVE_OUT,
    Policy.REPLACE: Action.REPLACE,
    Policy.ABORT: Action.ABORT,
}


def decide(policy: Policy, kind: FailureKind, *, retries_left: int = 0) -> Action:
    """The action for a member of a component with ``policy`` that met ``kind``.

    ``retries_left`` only matters for :attr:`FailureKind.STEP_EXIT` (tries of
    the step that remain under policy ``restart``).
    """
    policy = Policy(policy)
    if kind is FailureKind.STEP_EXIT and policy is Policy.RESTART and retries_left > 0:
        return Action.RETRY
    if kind is FailureKind.BARRIER_LATE and policy in (Policy.RESTART, Policy.IGNORE):
        return Action.CONTINUE
    if kind is FailureKind.LEFT_OUT_HEALTHY:
        return Action.REJOIN if policy is Policy.RESTART else Action.LEAVE_OUT
    if kind is FailureKind.LEFT_OUT_FAILED:
        return Action.LEAVE_OUT
    return _ON_FAILURE[policy]
