"""Shoal: deploy and run distributed applications on many machines.

The curated public API, for scripts and the adapters alike::

    import shoal

    nodes = shoal.resolve("@web - failed")          # a selection -> [Node]
    results = shoal.run(nodes, "uptime", shoal.RunOptions(timeout=30))
    for r in results.failed:
        print(r.node, r.kind, r.reason)
    shoal.copy(nodes, ["build.tgz", "@:apps/"])     # multicopy: @ = node name
    pushed = shoal.push(nodes, "build/site", "apps/site")   # P2P, atomic switch
    report = shoal.app_up("bytetorrent.yaml")        # an application, converged

    nodes       Node, NodeSet, select (EXPR -> NodeSet), resolve (EXPR -> [Node])
    run / copy  run, run_async, copy, copy_async, RunOptions, FanoutOptions
    push        push, push_async, PushOptions, AgentOptions
    apps        load_app, app_up, app_up_async, app_status_async, app_down_async,
                UpOptions (the ``up``/``status``/``down`` of :mod:`shoal.app.lifecycle`
                and ``load`` of :mod:`shoal.app.appspec`, named for what they act on)
    results     the per-node result types the calls above return
    errors      ShoalError and its whole tree (:mod:`shoal.errors`)

Everything else is importable from its own module (see DESIGN.md, "As built");
test doubles for scripts live in :mod:`shoal.testing`.

Names load on first use (module ``__getattr__``, from :mod:`shoal.lazyexports`):
``import shoal`` imports nothing else, not asyncio, not asyncssh, so the CLI and
``shoal.errors`` users start fast; ``shoal.run`` costs what
``shoal.fanout.commands`` costs.
"""

from __future__ import annotations

from .lazyexports import lazy_exports

# ``typing`` costs ~10 ms to import; mypy honours a module-level TYPE_CHECKING too
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .agentlink.fleet import AgentOptions
    from .app.appspec import AppSpec
    from .app.appspec import load as load_app
    from .app.lifecycle import AppStatus, DownReport
    from .app.lifecycle import down_async as app_down_async
    from .app.lifecycle import status_async as app_status_async
    from .app.lifecycle import up as app_up
    from .app.lifecycle import up_async as app_up_async
    from .app.runtime import UpOptions, UpReport
    from .content.push import NodePush, PushOptions, PushResult, push, push_async
    from .errors import (
        AcquireError,
        AgentError,
        AgentLinkBroken,
        AgentNotInstalled,
        AgentNotRunning,
        AgentTimeout,
        AppAborted,
        AppError,
        AuthError,
        ChunkFetchError,
        CommandTimeout,
        ConfigError,
        ConnectError,
        ContentError,
        EmptySelectionError,
        HostKeyError,
        InventoryError,
        LabError,
        LocalError,
        MemberFailed,
        NodeSetParseError,
        OperationError,
        PlanCycleError,
        RequestError,
        SelectionError,
        SelectionSyntaxError,
        ServiceError,
        ShoalError,
        StateError,
        TransportError,
        UnknownNameError,
        UsageError,
        VersionMismatch,
    )
    from .fanout.commands import run, run_async
    from .fanout.copies import copy, copy_async
    from .fanout.options import FanoutOptions, RunOptions
    from .fanout.results import CommandOutcome, CommandOutput, NodeOutcome, Results
    from .nodes.model import Node
    from .nodes.nodeset import NodeSet
    from .nodes.select import resolve, select

__version__ = "0.1.0"

_ERRORS = (
    "AcquireError",
    "AgentError",
    "AgentLinkBroken",
    "AgentTimeout",
    "AgentNotInstalled",
    "AgentNotRunning",
    "AppAborted",
    "AppError",
    "AuthError",
    "ChunkFetchError",
    "CommandTimeout",
    "ConfigError",
    "ConnectError",
    "ContentError",
    "EmptySelectionError",
    "HostKeyError",
    "InventoryError",
    "LabError",
    "LocalError",
    "MemberFailed",
    "NodeSetParseError",
    "OperationError",
    "PlanCycleError",
    "RequestError",
    "SelectionError",
    "SelectionSyntaxError",
    "ServiceError",
    "ShoalError",
    "StateError",
    "TransportError",
    "UnknownNameError",
    "UsageError",
    "VersionMismatch",
)

#: public name -> its home: module, ``:attribute`` where the name differs
_HOMES: dict[str, str] = {
    # nodes and selections
    "Node": "shoal.nodes.model",
    "NodeSet": "shoal.nodes.nodeset",
    "resolve": "shoal.nodes.select",
    "select": "shoal.nodes.select",
    # run and copy
    "FanoutOptions": "shoal.fanout.options",
    "RunOptions": "shoal.fanout.options",
    "copy": "shoal.fanout.copies",
    "copy_async": "shoal.fanout.copies",
    "run": "shoal.fanout.commands",
    "run_async": "shoal.fanout.commands",
    # push
    "AgentOptions": "shoal.agentlink.fleet",
    "PushOptions": "shoal.content.push",
    "push": "shoal.content.push",
    "push_async": "shoal.content.push",
    # applications
    "AppSpec": "shoal.app.appspec",
    "AppStatus": "shoal.app.lifecycle",
    "DownReport": "shoal.app.lifecycle",
    "UpOptions": "shoal.app.runtime",
    "UpReport": "shoal.app.runtime",
    "app_down_async": "shoal.app.lifecycle:down_async",
    "app_status_async": "shoal.app.lifecycle:status_async",
    "app_up": "shoal.app.lifecycle:up",
    "app_up_async": "shoal.app.lifecycle:up_async",
    "load_app": "shoal.app.appspec:load",
    # per-node results
    "CommandOutcome": "shoal.fanout.results",
    "CommandOutput": "shoal.fanout.results",
    "NodeOutcome": "shoal.fanout.results",
    "Results": "shoal.fanout.results",
    "NodePush": "shoal.content.push",
    "PushResult": "shoal.content.push",
    # errors
    **{name: "shoal.errors" for name in _ERRORS},
}

__all__ = [
    "AcquireError",
    "AgentError",
    "AgentLinkBroken",
    "AgentNotInstalled",
    "AgentNotRunning",
    "AgentOptions",
    "AgentTimeout",
    "AppAborted",
    "AppError",
    "AppSpec",
    "AppStatus",
    "AuthError",
    "ChunkFetchError",
    "CommandOutcome",
    "CommandOutput",
    "CommandTimeout",
    "ConfigError",
    "ConnectError",
    "ContentError",
    "DownReport",
    "EmptySelectionError",
    "FanoutOptions",
    "HostKeyError",
    "InventoryError",
    "LabError",
    "LocalError",
    "MemberFailed",
    "Node",
    "NodeOutcome",
    "NodePush",
    "NodeSet",
    "NodeSetParseError",
    "OperationError",
    "PlanCycleError",
    "PushOptions",
    "PushResult",
    "RequestError",
    "Results",
    "RunOptions",
    "SelectionError",
    "SelectionSyntaxError",
    "ServiceError",
    "ShoalError",
    "StateError",
    "TransportError",
    "UnknownNameError",
    "UpOptions",
    "UpReport",
    "UsageError",
    "VersionMismatch",
    "__version__",
    "app_down_async",
    "app_status_async",
    "app_up",
    "app_up_async",
    "copy",
    "copy_async",
    "load_app",
    "push",
    "push_async",
    "resolve",
    "run",
    "run_async",
    "select",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
