"""Per-node results of any operation on many nodes: a value or an error for each node.

One shape for every fan-out (run, cp, agent operations, push, sweep): a
:class:`Results` maps node names, in the order the nodes were given, to one
:class:`NodeOutcome` each, which holds what the operation produced on that node
(``value``) or the :class:`~shoal.errors.ShoalError` that stopped it
(``error``; the node is a field of the outcome and of the error, never part of
the message). One dead host never hides the others' results (Fabric's
``GroupResult``). An operation with more to say per node specialises the
outcome: :class:`CommandOutcome` (run and cp: exit status, output, signal), the
push's ``NodePush`` (byte counts, kept for failed nodes too).

``kind`` classifies each node for summaries, JSON output and health
recording: ``ok``, ``failed`` (the node answered; the command exited non-zero
or was killed, or the operation failed there), ``timeout``, ``unreachable``,
``hostkey``, ``auth``, ``local`` (the controller's side failed, e.g. a local
destination; not the node's fault) or ``error`` (any other kind, e.g. an
agent's refusal, is reported under its own kind by ``error_kind`` and counted
as ``error`` in :data:`KINDS` groups). ``reason`` is one line saying why the
node did not succeed.

Defined once here: iteration order (the nodes' order), ``ok`` / ``succeeded``
/ ``failed``, :meth:`Results.by_kind`, and the JSON record of an outcome
(:meth:`NodeOutcome.to_json`; ``run --json`` prints these).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shoal.errors import ShoalError, TransportError

#: Kinds in the order summaries list them.
KINDS = ("ok", "failed", "timeout", "unreachable", "hostkey", "auth", "local", "error")

T = TypeVar("T")


def error_kind(error: ShoalError | None) -> str:
    """``ok`` without an error, ``unreachable`` for a transport failure, else its kind."""
    if error is None:
        return "ok"
    return "unreachable" if error.kind == "transport" else error.kind


@dataclass
class NodeOutcome(Generic[T]):
    """What an operation did on one node: ``value`` on success, ``error`` otherwise.

    ``action`` is what it did there in a word or two, where the operation says
    (an agent install: ``installed``, ``up to date``; a sweep: ``revived``).
    ``duration`` is the node's wall time, connection included; ``index`` its
    position in the selection; ``attempts`` the connections tried.
    """

    node: str
    value: T | None = None
    error: ShoalError | None = None
    action: str = ""
    duration: float = 0.0
    index: int = 0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def kind(self) -> str:
        return error_kind(self.error)

    @property
    def reason(self) -> str:
        """One line saying why this node did not succeed ('' when it did)."""
        return str(self.error) if self.error is not None else ""

    @property
    def reached(self) -> bool:
        """True unless the node itself could not be reached or commanded over SSH."""
        return not isinstance(self.error, TransportError)

    def value_json(self) -> dict[str, Any]:
        """The value's fields in :meth:`to_json` (specialisations name their own)."""
        return {"value": self.value}

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "index": self.index,
            "status": self.kind,
            **self.value_json(),
            "duration": round(self.duration, 4),
            "error": self.reason if self.error is not None else None,
            "error_kind": self.error.kind if self.error is not None else None,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class CommandOutput:
    """What a command left on one node: its exit status, output and signal."""

    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    signal: str | None = None
    dropped: int = 0  # output bytes beyond ``max_output``, not kept


@dataclass
class CommandOutcome(NodeOutcome[CommandOutput]):
    """One node's outcome of ``run`` or ``cp``; the output's fields read through it."""

    @property
    def exit_status(self) -> int | None:
        return self.value.exit_status if self.value is not None else None

    @property
    def stdout(self) -> str:
        return self.value.stdout if self.value is not None else ""

    @property
    def stderr(self) -> str:
        return self.value.stderr if self.value is not None else ""

    @property
    def signal(self) -> str | None:
        return self.value.signal if self.value is not None else None

    @property
    def dropped(self) -> int:
        return self.value.dropped if self.value is not None else 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status == 0

    @property
    def kind(self) -> str:
        if self.error is not None:
            kind = error_kind(self.error)
            return kind if kind in KINDS else "error"
        return "ok" if self.exit_status == 0 else "failed"

    @property
    def reason(self) -> str:
        if self.error is not None:
            return str(self.error)
        if self.signal:
            return f"killed by signal {self.signal}"
        if self.exit_status:
            return f"exit {self.exit_status}"
        return ""

    def value_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_status,
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "dropped": self.dropped,
        }


OutcomeT = TypeVar("OutcomeT", bound=NodeOutcome[Any])


@dataclass
class Results(Generic[OutcomeT]):
    """Outcomes of one operation on many nodes, in the order the nodes were given."""

    results: dict[str, OutcomeT] = field(default_factory=dict)
    duration: float = 0.0

    def __iter__(self) -> Iterator[OutcomeT]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, node: str) -> OutcomeT:
        return self.results[node]

    def __contains__(self, node: object) -> bool:
        return node in self.results

    @property
    def succeeded(self) -> list[OutcomeT]:
        return [r for r in self if r.ok]

    @property
    def failed(self) -> list[OutcomeT]:
        return [r for r in self if not r.ok]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self)

    def by_kind(self) -> dict[str, list[OutcomeT]]:
        """Every kind of :data:`KINDS` (empty lists included), each with its outcomes."""
        groups: dict[str, list[OutcomeT]] = {k: [] for k in KINDS}
        for r in self:
            groups[r.kind if r.kind in KINDS else "error"].append(r)
        return groups

    def to_json(self) -> list[dict[str, Any]]:
        """One record per node, in order (:meth:`NodeOutcome.to_json`)."""
        return [r.to_json() for r in self]
