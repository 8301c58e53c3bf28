"""Facts (resource discovery): what each node is, gathered in one SSH round trip.

This module owns
* :data:`GATHER_COMMAND`, one POSIX ``sh`` script that prints raw lines about
  the OS (``/etc/os-release``), kernel, CPUs, memory, free disk of the remote
  home (the working area), load average and ``python3`` version;
* :func:`parse_facts`, a pure parser of its output into flat, typed facts;
* storage with the time of gathering and the round-trip time the controller
  measured, and staleness (older than ``max_age``, default 1 h, overridable
  with ``SHOAL_FACTS_MAX_AGE`` in seconds);
* :class:`RefreshReport`, what a refresh returns. Gathering itself (the SSH
  fan-out) is a layer up, in :mod:`shoal.fanout.factgather`: this package
  stays pure.

Facts are flat keys (``disk_free_gb``, ``cpus``, ``os_id``...), so selections
use them directly (``[disk_free_gb>=5]``) or namespaced (``[fact.cpus>=2]``).

Table (owned here)::

    facts(name PK, gathered, rtt_ms, data JSON)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import ConfigError, InventoryError
from shoal.nodes.model import AttrValue
from shoal.nodes.nodeset import natural_key
from shoal.state import State, opened

SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    name TEXT PRIMARY KEY,
    gathered REAL NOT NULL,
    rtt_ms REAL,
    data TEXT NOT NULL
);
"""

DEFAULT_MAX_AGE = 3600.0
MARKER = "shoal-facts 1"

#: One round trip; each section prints raw lines that parse_facts understands.
GATHER_COMMAND = (
    "echo 'shoal-facts 1'; "
    "if [ -r /etc/os-release ]; then "
    "grep -E '^(ID|VERSION_ID|PRETTY_NAME)=' /etc/os-release | sed 's/^/os./'; fi; "
    'echo "kernel=$(uname -r)"; echo "arch=$(uname -m)"; echo "hostname=$(uname -n)"; '
    'echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"; '
    "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null | sed 's/^/mem./'; "
    'echo "load=$(cat /proc/loadavg 2>/dev/null)"; '
    'echo "uptime=$(cat /proc/uptime 2>/dev/null)"; '
    'echo "home=$HOME"; '
    'echo "disk=$(df -Pk "$HOME" 2>/dev/null | tail -n 1)"; '
    'echo "python=$(python3 -V 2>&1 | head -n 1)"; '
    "echo 'end'"
)

#: Keys parse_facts can produce (documentation and ``facts show`` columns).
FACT_KEYS = (
    "os_id",
    "os_version",
    "os",
    "kernel",
    "arch",
    "hostname",
    "cpus",
    "mem_total_mb",
    "mem_available_mb",
    "load1",
    "load5",
    "load15",
    "uptime_s",
    "home",
    "disk_free_gb",
    "disk_total_gb",
    "python_version",
)


@dataclass(frozen=True)
class FactRecord:
    """The facts of one node, when they were gathered and the measured RTT."""

    name: str
    gathered: float
    rtt_ms: float | None
    facts: Mapping[str, AttrValue] = field(default_factory=dict)

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.gathered

    def stale(self, max_age: float | None = None, now: float | None = None) -> bool:
        return self.age(now) > (default_max_age() if max_age is None else max_age)


@dataclass(frozen=True)
class RefreshReport:
    refreshed: tuple[FactRecord, ...]
    failed: Mapping[str, str]


def default_max_age() -> float:
    """Seconds after which facts are stale: ``SHOAL_FACTS_MAX_AGE`` or one hour."""
    raw = os.environ.get("SHOAL_FACTS_MAX_AGE")
    if not raw:
        return DEFAULT_MAX_AGE
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"SHOAL_FACTS_MAX_AGE must be seconds, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"SHOAL_FACTS_MAX_AGE must not be negative, not {raw!r}")
    return value


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def parse_facts(output: str) -> dict[str, AttrValue]:
    """Flat typed facts from :data:`GATHER_COMMAND`'s output.

    Missing or unreadable items are left out; output without the marker line
    (the command did not run as expected) raises InventoryError.
    """
    lines = output.splitlines()
    if MARKER not in (line.strip() for line in lines):
        raise InventoryError("facts output does not start with the shoal-facts marker")
    facts: dict[str, AttrValue] = {}
    for raw in lines:
        line = raw.rstrip("\r")
        key, sep, value = line.partition("=")
        if not sep:
            if line.startswith("mem."):
                name, _, rest = line[4:].partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    kb = int(parts[0])
                    if name == "MemTotal":
                        facts["mem_total_mb"] = kb // 1024
                    elif name == "MemAvailable":
                        facts["mem_available_mb"] = kb // 1024
            continue
        value = value.strip()
        if key == "os.ID":
            facts["os_id"] = _unquote(value)
        elif key == "os.VERSION_ID":
            facts["os_version"] = _unquote(value)
        elif key == "os.PRETTY_NAME":
            facts["os"] = _unquote(value)
        elif key in ("kernel", "arch", "hostname", "home") and value:
            facts[key] = value
        elif key == "cpus":
            n = _number(value)
            if isinstance(n, int):
                facts["cpus"] = n
        elif key == "load":
            parts = value.split()
            for name, part in zip(("load1", "load5", "load15"), parts[:3], strict=False):
                n = _number(part)
                if n is not None:
                    facts[name] = float(n)
        elif key == "uptime":
            parts = value.split()
            n = _number(parts[0]) if parts else None
            if n is not None:
                facts["uptime_s"] = float(n)
        elif key == "disk":
            parts = value.split()
            # Filesystem 1024-blocks Used Available Capacity Mounted-on
            if len(parts) >= 6 and parts[1].isdigit() and parts[3].isdigit():
                facts["disk_total_gb"] = round(int(parts[1]) / 1024 / 1024, 2)
                facts["disk_free_gb"] = round(int(parts[3]) / 1024 / 1024, 2)
        elif key == "python":
            parts = value.split()
            if len(parts) == 2 and parts[0] == "Python":
                facts["python_version"] = parts[1]
    return facts


def ensure(state: State) -> None:
    state.ensure("facts", SCHEMA)


def store_facts(records: Iterable[FactRecord], *, state: State | None = None) -> None:
    rows = [(r.name, r.gathered, r.rtt_ms, json.dumps(dict(r.facts))) for r in records]
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            db.executemany(
                "INSERT INTO facts(name, gathered, rtt_ms, data) VALUES (?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET gathered=excluded.gathered,"
                " rtt_ms=excluded.rtt_ms, data=excluded.data",
                rows,
            )


def load_facts(
    names: Iterable[str] | None = None, *, state: State | None = None
) -> dict[str, FactRecord]:
    """Stored facts of the named nodes (all when None) that have any."""
    wanted = None if names is None else set(names)
    with opened(state) as st:
        ensure(st)
        rows = st.db.execute("SELECT name, gathered, rtt_ms, data FROM facts").fetchall()
    out = {}
    for name, gathered, rtt, data in rows:
        if wanted is None or name in wanted:
            out[name] = FactRecord(name, gathered, rtt, json.loads(data))
    return dict(sorted(out.items(), key=lambda kv: natural_key(kv[0])))


def fact_values(state: State, key: str, now: float | None = None) -> dict[str, AttrValue]:
    """``{node: value}`` of fact ``key`` (also ``rtt_ms``, ``facts_age``, ``facts_stale``)."""
    ensure(state)
    db = state.db
    if key in ("rtt_ms", "facts_age", "facts_stale"):
        rows = db.execute("SELECT name, gathered, rtt_ms FROM facts").fetchall()
        t = time.time() if now is None else now
        if key == "rtt_ms":
            return {r[0]: r[2] for r in rows if r[2] is not None}
        if key == "facts_age":
            return {r[0]: round(t - r[1], 3) for r in rows}
        limit = default_max_age()
        return {r[0]: (t - r[1]) > limit for r in rows}
    path = '$."' + key.replace('"', "") + '"'
    rows = db.execute("SELECT name, json_extract(data, ?) FROM facts", (path,)).fetchall()
    return {r[0]: r[1] for r in rows if r[1] is not None}


def as_json(record: FactRecord, max_age: float | None = None) -> dict[str, Any]:
    return {
        "name": record.name,
        "gathered": record.gathered,
        "age_s": round(record.age(), 3),
        "stale": record.stale(max_age),
        "rtt_ms": record.rtt_ms,
        "facts": dict(record.facts),
    }
