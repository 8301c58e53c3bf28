"""A supervised program's specification: what to run and how to keep it alive.

Specs arrive as JSON objects in ``proc.start`` requests and are persisted in
the agent's desired state; :func:`ProgramSpec.from_dict` validates them and
fills defaults, raising ValueError with a one-line message naming the field.
"""

from __future__ import annotations

import math
import re
import signal
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RESTART_POLICIES = ("always", "on-failure", "never")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SHELL_CHARS = re.compile(r"[\s;&|<>()$`*?~'\"\\]")


@dataclass
class ProgramSpec:
    """Everything the supervisor needs to run, stop and watch one program."""

    name: str
    command: list[str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart: str = "always"
    # backoff: failure n waits min(cap, base * factor**(n-1)) ± jitter
    backoff_base: float = 0.2
    backoff_factor: float = 2.0
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.2
    stable_after: float = 10.0  # a run this long resets the failure count
    fatal_after: int = 5  # rapid consecutive failures before FATAL
    stop_signal: str = "TERM"
    stop_grace: float = 5.0
    #: shell command run before the stop signal (``SHOAL_PID`` set), bounded by stop_grace
    stop_command: str | None = None
    log_max_bytes: int = 1 << 20
    log_backups: int = 3  # collected rotated files kept
    log_budget_bytes: int = 64 << 20  # all its files (at least log_max_bytes)
    health: str | None = None  # shell command; exit 0 = healthy
    health_interval: float = 10.0
    health_timeout: float = 5.0
    health_retries: int = 3  # consecutive failures that trigger a restart
    health_restart: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgramSpec:
        """A validated spec; ValueError names the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("program spec must be an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown program field {unknown[0]!r}")
        name = data.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"bad program name {name!r}: use letters, digits and _.@- (max 64)")
        command = data.get("command")
        if isinstance(command, str):
            command = [command]
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise ValueError(f"program {name}: command must be a non-empty list of strings")
        if len(command) == 1 and _SHELL_CHARS.search(command[0]):
            command = ["/bin/sh", "-c", command[0]]
        spec = cls(name=name, command=list(command))
        for key, value in data.items():
            if key in ("name", "command"):
                continue
            setattr(spec, key, value)
        spec._check()
        return spec

    def _check(self) -> None:
        where = f"program {self.name}"
        if self.cwd is not None and not isinstance(self.cwd, str):
            raise ValueError(f"{where}: cwd must be a string")
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise ValueError(f"{where}: env must map strings to strings")
        if self.restart not in RESTART_POLICIES:
            raise ValueError(f"{where}: restart must be one of {', '.join(RESTART_POLICIES)}")
        for key in (
            "backoff_base",
            "backoff_factor",
            "backoff_cap",
            "backoff_jitter",
            "stable_after",
            "stop_grace",
            "health_interval",
            "health_timeout",
        ):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{where}: {key} must be a finite number >= 0, got {value!r}")
            setattr(self, key, float(value))
        if self.backoff_factor < 1:
            raise ValueError(f"{where}: backoff_factor must be >= 1")
        if self.health_interval <= 0 or self.health_timeout <= 0:
            raise ValueError(f"{where}: health_interval and health_timeout must be > 0")
        for key in (
            "fatal_after",
            "log_max_bytes",
            "log_backups",
            "log_budget_bytes",
            "health_retries",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: {key} must be an integer >= 0")
        if self.fatal_after < 1 or self.log_max_bytes < 1 or self.health_retries < 1:
            raise ValueError(f"{where}: fatal_after, log_max_bytes, health_retries must be >= 1")
        for key in ("health", "stop_command"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ValueError(f"{where}: {key} must be a shell command string")
        if not isinstance(self.health_restart, bool):
            raise ValueError(f"{where}: health_restart must be true or false")
        signal_number(self.stop_signal)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def signal_number(name: str) -> int:
    """``TERM``, ``SIGTERM`` or ``15`` → 15; ValueError otherwise."""
    if isinstance(name, str):
        text = name.upper()
        if text.isdigit():
            return int(text)
        if not text.startswith("SIG"):
            text = "SIG" + text
        value = getattr(signal, text, None)
        if isinstance(value, int):
            return int(value)
    raise ValueError(f"unknown stop signal {name!r}")
