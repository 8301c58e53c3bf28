"""Restart backoff: exponential growth with a cap and jitter (pure, no I/O).

Failure ``n`` (1-based, counting rapid consecutive failures) waits
``min(cap, base * factor ** (n - 1))``, spread by ``±jitter`` of itself so that
programs failing together on many nodes do not restart in lockstep. The caller
resets the count once a run has lasted the stable period.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """A backoff schedule; ``delay(n)`` is the wait before restart after failure ``n``."""

    base: float = 0.2
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def nominal(self, failures: int) -> float:
        """The delay without jitter."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The delay with jitter; never negative, never above ``cap``."""
        nominal = self.nominal(failures)
        if nominal <= 0.0 or self.jitter <= 0.0:
            return nominal
        spread = nominal * self.jitter * (2.0 * (rng or random).random() - 1.0)
        return max(0.0, min(self.cap, nominal + spread))
