"""Finite numbers: the one check every float and duration input goes through.

``float()`` accepts ``nan``, ``inf`` and ``1e999``, and every comparison with
NaN is false, so ``x <= 0`` lets a NaN timeout through (a health check that
never runs, a command that fails at once on every node). Options, CLI
arguments and spec values are checked here; the node agent, which imports
nothing of the controller's, keeps its own equivalent check in
``agent/progspec.py``.
"""

from __future__ import annotations

import math


def is_finite(value: object) -> bool:
    """True for an int or float that is neither NaN nor infinite (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def number(text: str) -> float:
    """``float(text)`` that refuses NaN and infinities with ValueError.

    Usable as an argparse ``type=``: argparse reports the ValueError as
    ``invalid number value: 'nan'`` and exits with its usage status.
    """
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value
