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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .commands import run, run_async
    from .copies import copy, copy_async
    from .options import FanoutOptions, RunOptions
    from .results import CommandOutcome, CommandOutput, NodeOutcome, Results
    from .scheduler import fanout

#: public name -> the submodule that defines it
_HOMES = {
    "FanoutOptions": "options",
    "RunOptions": "options",
    "CommandOutput": "results",
    "CommandOutcome": "results",
    "NodeOutcome": "results",
    "Results": "results",
    "copy": "copies",
    "copy_async": "copies",
    "fanout": "scheduler",
    "run": "commands",
    "run_async": "commands",
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
