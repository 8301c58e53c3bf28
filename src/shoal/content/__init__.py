"""Content push: manifests, a peer-to-peer chunk swarm, atomic switch-over (issue 6).

Entry points for other layers (apps call these from Python)::

    from shoal.content import PushOptions, push_async
    result = await push_async(nodes, "build/site", "apps/site", PushOptions(keep=3))
    result.ok, result.version, result["n1"].reason

Modules: :mod:`.scan` (the source: manifest, FastCDC chunking, source chunk
server backend), :mod:`.swarm` (the embedded coordinator), :mod:`.push`
(push / rollback / versions over the agents). The node side lives in
:mod:`shoal.agent.pushsession`, :mod:`shoal.agent.activate`,
:mod:`shoal.agent.chunkserver`, :mod:`shoal.agent.chunkstore` and
:mod:`shoal.agent.manifest` (standard library only: it ships in the agent).
"""

from __future__ import annotations

from .push import (
    NodePush,
    PushOptions,
    PushProgress,
    PushResult,
    push,
    push_async,
    rollback_async,
    versions_async,
)
from .scan import ChunkParams, ScannedTree, scan

__all__ = [
    "ChunkParams",
    "NodePush",
    "PushOptions",
    "PushProgress",
    "PushResult",
    "ScannedTree",
    "push",
    "push_async",
    "rollback_async",
    "scan",
    "versions_async",
]
