"""Fan-out: one operation on many nodes, with per-node results.

Public entry points: :func:`run` (shell command), :func:`copy` (``cp`` with
``@`` expansion), :func:`fanout` (any operation on a connection), and the
result types :class:`FanoutResult` / :class:`NodeResult`.
"""

from __future__ import annotations

from .copy import copy, copy_async
from .results import FanoutResult, NodeResult
from .run import RunOptions, run, run_async
from .scheduler import FanoutOptions, fanout

__all__ = [
    "FanoutOptions",
    "FanoutResult",
    "NodeResult",
    "RunOptions",
    "copy",
    "copy_async",
    "fanout",
    "run",
    "run_async",
]
