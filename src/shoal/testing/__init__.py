"""Test doubles for scripts built on Shoal: the ones Shoal's own tests use.

    mocktransport   MockTransport / MockBehaviour: scripted nodes in memory (run, cp,
                    anything over a connection), every connect and command logged
    localagents     LocalNodesTransport / local_agents: real node agents on this
                    machine, one home directory per node (install, proc, events, sweep)

Each module's docstring shows a test written against it. Names load on first
use, so ``import shoal.testing`` costs nothing until one is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.lazyexports import lazy_exports

if TYPE_CHECKING:
    from .localagents import LocalAgents, LocalNodesTransport, local_agents
    from .mocktransport import MockBehaviour, MockConnection, MockLog, MockTransport

#: public name -> the submodule that defines it
_HOMES: dict[str, str] = {
    "LocalAgents": ".localagents",
    "LocalNodesTransport": ".localagents",
    "local_agents": ".localagents",
    "MockBehaviour": ".mocktransport",
    "MockConnection": ".mocktransport",
    "MockLog": ".mocktransport",
    "MockTransport": ".mocktransport",
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


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
