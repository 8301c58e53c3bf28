"""Fan-out options: the knobs every fan-out takes, checked before anything connects.

Kept apart from the scheduler (and free of asyncio) so the CLI can refuse bad
options and start its TCP connects before the event loop and the SSH library
are even imported: ``shoal run``'s start-up time is part of what it is
measured on.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shoal.errors import UsageError
from shoal.numeric import is_finite
from shoal.transport.base import MAX_OUTPUT

MAX_DEFAULT_PARALLEL = 512
FDS_PER_CONNECTION = 3  # socket, plus an SFTP or forwarded stream now and then


@dataclass
class FanoutOptions:
    """Knobs shared by every fan-out command (run, cp, facts, agents...)."""

    parallel: int | None = None
    delay: float = 0.0
    connect_timeout: float = 10.0
    timeout: float | None = None
    retries: int = 1  # one retry of a failed connection, as the CLI defaults to
    retry_backoff: float = 0.5
    host_keys: str = "verify"
    #: Seconds between SSH keepalives; a node silent for 3 of them is lost.
    keepalive: float = 5.0
    #: Processes to spread a large fan-out over (None: one per usable core; see workers.py).
    workers: int | None = None

    def validate(self) -> None:
        if self.parallel is not None and self.parallel < 1:
            raise UsageError(f"--parallel must be at least 1, got {self.parallel}")
        if not is_finite(self.delay) or self.delay < 0:
            raise UsageError(f"--delay must be a number >= 0, got {self.delay}")
        if not is_finite(self.connect_timeout) or self.connect_timeout <= 0:
            raise UsageError(f"--connect-timeout must be positive, got {self.connect_timeout}")
        if self.timeout is not None and (not is_finite(self.timeout) or self.timeout <= 0):
            raise UsageError(f"--timeout must be positive, got {self.timeout}")
        if self.retries < 0:
            raise UsageError(f"--retries must not be negative, got {self.retries}")
        if not is_finite(self.retry_backoff) or self.retry_backoff < 0:
            raise UsageError(f"retry backoff must be a number >= 0, got {self.retry_backoff}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"workers must be at least 1, got {self.workers}")
        if not is_finite(self.keepalive) or self.keepalive <= 0:
            raise UsageError(f"keepalive must be positive, got {self.keepalive}")
        if self.host_keys not in ("verify", "accept-new"):
            raise UsageError(f"--host-keys must be verify or accept-new, got {self.host_keys!r}")


def default_parallelism() -> int:
    """Raise the open-file soft limit to the hard limit, then size from it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(1, min(MAX_DEFAULT_PARALLEL, (soft - 64) // FDS_PER_CONNECTION))


@dataclass
class RunOptions(FanoutOptions):
    sudo: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    #: bytes of each node's stdout and of its stderr kept (0: all); beyond, counted
    max_output: int = MAX_OUTPUT
    #: a selection of at least this many nodes, none behind a gateway, is run through an
    #: automatic tree of ~sqrt(N) relay gateways (fanout/relaytree.py); None: never
    relay_tree: int | None = None

    def validate(self) -> None:
        super().validate()
        cap = self.max_output
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise UsageError(f"--max-output must be 0 (no limit) or more bytes, got {cap!r}")
        for key in self.env:
            if not key.isidentifier():
                raise UsageError(f"--env name must be a shell identifier, got {key!r}")


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``["K=V", ...]`` -> dict; one-line UsageError naming a bad pair."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--env expects NAME=VALUE with a shell identifier, got {pair!r}")
        env[key] = value
    return env
