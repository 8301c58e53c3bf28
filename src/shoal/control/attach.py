"""How the warm links attach: a rate gate for SSH handshakes, reconnect backoff, the probe.

* :class:`AttachGate`: a token bucket (handshakes started per second), a cap on
  handshakes in flight, and a cap per sshd that counts them against its
  ``MaxStartups`` (a node's own sshd, or the jump host every node behind it
  shares), so 1,000 nodes behind one bastion never trip it.
* :func:`backoff`: exponential with full jitter (AWS's "full jitter": uniform
  in ``[0, min(cap, base * 2**attempt)]``), so reconnects after an outage spread.
* :func:`probe_alive`: the detector's independent confirmation, several
  parallel TCP connects to a node's sshd with a short timeout; any that
  completes means the host is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return (rng or random).uniform(0.0, min(cap, base * 2 ** min(attempt, 30)))


class AttachGate:
    """A token bucket, a cap on handshakes in flight, and a cap per sshd
    (``async with gate.admit(sshd):``; ``sshd`` names the server that counts the
    handshake against its ``MaxStartups``: the node's, or the jump host's)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        in_flight: int,
        per_sshd: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.per_sshd = per_sshd
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._slots = asyncio.Semaphore(in_flight)
        self._servers: dict[str, asyncio.Semaphore] = {}
        self._order = asyncio.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.most_per_sshd: dict[str, int] = {}
        self._per: dict[str, int] = {}

    async def _token(self) -> None:
        async with self._order:
            while True:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    @contextlib.asynccontextmanager
    async def admit(self, sshd: str) -> AsyncIterator[None]:
        server = self._servers.setdefault(sshd, asyncio.Semaphore(self.per_sshd))
        async with server, self._slots:
            await self._token()
            self.in_flight += 1
            self._per[sshd] = self._per.get(sshd, 0) + 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.most_per_sshd[sshd] = max(self.most_per_sshd.get(sshd, 0), self._per[sshd])
            try:
                yield
            finally:
                self.in_flight -= 1
                self._per[sshd] -= 1


async def probe_alive(host: str, port: int, connects: int, timeout: float) -> bool:
    """True when any of ``connects`` parallel TCP connects to host:port completes."""

    async def one() -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    tasks = [asyncio.ensure_future(one()) for _ in range(connects)]
    try:
        for next_done in asyncio.as_completed(tasks):
            if await next_done:
                return True
        return False
    finally:
        for task in tasks:
            task.cancel()
