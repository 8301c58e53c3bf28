"""Fan-out: one operation on many nodes, with per-node results.

Public entry points: :func:`run` (shell command), :func:`copy` (``cp`` with
``@`` expansion), :func:`fanout` (any operation on a connection), the options
:class:`FanoutOptions` / :class:`RunOptions` and the result types
:class:`Results` (per node, in order) of :class:`NodeOutcome` (a value or an
error), :class:`CommandOutcome` for run and cp (its value a
:class:`CommandOutput`). Nothing here records health: see
:func:`shoal.nodes.health.record`.

Names are loaded on first use: ``shoal.fanout.options`` must stay importable
without asyncio (the CLI validates options and starts its TCP connects first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.lazyexports import lazy_exports

if TYPE_CHECKING:
    from .commands import run, run_async
    from .copies import copy, copy_async
    from .options import FanoutOptions, RunOptions
    from .results import CommandOutcome, CommandOutput, NodeOutcome, Results
    from .scheduler import fanout

#: public name -> the submodule that defines it
_HOMES: dict[str, str] = {
    "FanoutOptions": ".options",
    "RunOptions": ".options",
    "CommandOutput": ".results",
    "CommandOutcome": ".results",
    "NodeOutcome": ".results",
    "Results": ".results",
    "copy": ".copies",
    "copy_async": ".copies",
    "fanout": ".scheduler",
    "run": ".commands",
    "run_async": ".commands",
}

__all__ = [
    "CommandOutcome",
    "CommandOutput",
    "FanoutOptions",
    "NodeOutcome",
    "Results",
    "RunOptions",
    "copy",
    "copy_async",
    "fanout",
    "run",
    "run_async",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
