"""Turning per-node results into what a person reads (pure, no printing).

Identical outputs are merged (clubak's gathering) and labelled with the
compact node set that produced them, ``n[1-30,32] (31)``; the summary counts
every kind of outcome and names the nodes that did not succeed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shoal.nodes.nodeset import fold

from .results import KINDS, CommandOutcome, Results


@dataclass(frozen=True)
class OutputGroup:
    """Nodes whose command produced the same output and outcome."""

    nodes: tuple[str, ...]
    stdout: str
    stderr: str
    outcome: str  # "" for success, else the per-node reason (same for all)

    @property
    def label(self) -> str:
        return f"{fold(self.nodes)} ({len(self.nodes)})"


def group_outputs(results: Iterable[CommandOutcome]) -> list[OutputGroup]:
    """Merge nodes with identical (stdout, stderr, outcome); biggest group first."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in results:
        key = (r.stdout, r.stderr, r.reason)
        groups.setdefault(key, []).append(r.node)
    merged = [OutputGroup(tuple(names), *key) for key, names in groups.items()]
    merged.sort(key=lambda g: (g.outcome != "", -len(g.nodes)))
    return merged


def summary_lines(result: Results[CommandOutcome]) -> list[str]:
    """'ok 31, failed 1, ...' then one line per non-ok kind naming its nodes."""
    by_kind = result.by_kind()
    counts = ", ".join(
        f"{kind.replace('_', ' ')} {len(by_kind[kind])}"
        for kind in KINDS
        if by_kind[kind] or kind in ("ok", "failed", "timeout", "unreachable")
    )
    n = len(result)
    lines = [f"{n} node{'' if n == 1 else 's'} in {result.duration:.2f}s: {counts}"]
    for kind in KINDS[1:]:
        bad = by_kind[kind]
        if not bad:
            continue
        reasons: dict[str, list[str]] = {}
        for r in bad:
            reasons.setdefault(r.reason, []).append(r.node)
        for reason, names in reasons.items():
            lines.append(f"  {kind}: {fold(names)} — {reason}")
    cut = [r for r in result if r.dropped]
    if cut:
        dropped = sum(r.dropped for r in cut)
        lines.append(
            f"  cut: {fold([r.node for r in cut])} — output beyond --max-output not kept "
            f"({dropped:,} bytes)"
        )
    return lines
