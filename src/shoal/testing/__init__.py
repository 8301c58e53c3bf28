"""Test doubles for scripts built on Shoal: the ones Shoal's own tests use.

    mocktransport   MockTransport / MockBehaviour: scripted nodes in memory (run, cp,
                    anything over a connection), every connect and command logged
    localagents     LocalNodesTransport / local_agents: real node agents on this
                    machine, one home directory per node (install, proc, events, sweep)

Each module's docstring shows a test written against it. Names load on first
use, so ``import shoal.testing`` costs nothing until one is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .localagents import LocalAgents, LocalNodesTransport, local_agents
    from .mocktransport import MockBehaviour, MockConnection, MockLog, MockTransport

#: public name -> the submodule that defines it
_HOMES = {
    "LocalAgents": "localagents",
    "LocalNodesTransport": "localagents",
    "local_agents": "localagents",
    "MockBehaviour": "mocktransport",
    "MockConnection": "mocktransport",
    "MockLog": "mocktransport",
    "MockTransport": "mocktransport",
}

__all__ = [
    "LocalAgents",
    "LocalNodesTransport",
    "MockBehaviour",
    "MockConnection",
    "MockLog",
    "MockTransport",
    "local_agents",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
