"""Per-node results of a fan-out: a value or an error for every node, never an exception.

Modelled on Fabric's ``GroupResult``: one dead host never hides the others'
results. ``kind`` classifies each node for summaries and JSON output:
``ok``, ``failed`` (command ran, non-zero exit or signal), ``timeout``,
``unreachable``, ``hostkey``, ``auth``, ``local`` (the controller's side failed,
e.g. a local destination; not the node's fault) or ``error``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import ShoalError

#: Kinds in the order summaries list them.
KINDS = ("ok", "failed", "timeout", "unreachable", "hostkey", "auth", "local", "error")


def error_kind(error: ShoalError | None) -> str:
    """``ok`` without an error, ``unreachable`` for a transport failure, else its kind."""
    if error is None:
        return "ok"
    return "unreachable" if error.kind == "transport" else error.kind


def error_reason(node: str, error: ShoalError | None) -> str:
    """The error's one line without the ``node: `` prefix ('' without an error)."""
    if error is None:
        return ""
    text, prefix = str(error), f"{node}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@dataclass
class NodeResult:
    node: str
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    error: ShoalError | None = None
    signal: str | None = None
    index: int = 0
    attempts: int = 1

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
        """One line saying why this node did not succeed ('' when it did)."""
        if self.error is not None:
            return error_reason(self.node, self.error)
        if self.signal:
            return f"killed by signal {self.signal}"
        if self.exit_status:
            return f"exit {self.exit_status}"
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "index": self.index,
            "status": self.kind,
            "exit_code": self.exit_status,
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration": round(self.duration, 4),
            "error": self.reason if self.error is not None else None,
            "error_kind": self.error.kind if self.error is not None else None,
            "attempts": self.attempts,
        }


@dataclass
class FanoutResult:
    """Results of one operation on many nodes, in inventory order."""

    results: dict[str, NodeResult] = field(default_factory=dict)
    duration: float = 0.0

    def __iter__(self) -> Iterator[NodeResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, node: str) -> NodeResult:
        return self.results[node]

    @property
    def succeeded(self) -> list[NodeResult]:
        return [r for r in self if r.ok]

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self if not r.ok]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self)

    def by_kind(self) -> dict[str, list[NodeResult]]:
        groups: dict[str, list[NodeResult]] = {k: [] for k in KINDS}
        for r in self:
            groups[r.kind].append(r)
        return groups
