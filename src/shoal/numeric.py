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


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def byte_size(text: str) -> int:
    """``"64M"`` → 67108864: a whole number of bytes, with an optional K, M or G (powers
    of 1024, an optional trailing ``B`` or ``iB``); ValueError otherwise (argparse ``type=``)."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    digits = raw[: len(raw) - len(unit)]
    if not digits.isdigit() or len(digits) > 15:
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 65536, 64K, 16M, 1G)")
    return int(digits) * _UNITS[unit]
