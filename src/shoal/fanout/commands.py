"""``run``: one shell command on many nodes (CoDeploy's multiquery, done right).

Each command sees ``SHOAL_NODE`` (its node's name) and ``SHOAL_INDEX`` (its
position in the selection, from 0) besides any ``--env`` values.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

from shoal.errors import UsageError
from shoal.nodes.model import Node
from shoal.transport.base import Connection, Transport
from shoal.transport.gateways import relayed

from .options import FanoutOptions, RunOptions
from .results import CommandOutcome, CommandOutput, Results
from .scheduler import CallbackGuard, ResultCallback, fanout
from .workers import spread

#: Called with (node, stream, line) for each output line, for live streaming.
NodeLineCallback = Callable[[str, str, bytes], None]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


async def run_async(
    nodes: Sequence[Node],
    command: str,
    options: RunOptions | None = None,
    *,
    transport: Transport | None = None,
    on_result: ResultCallback[CommandOutcome] | None = None,
    on_line: NodeLineCallback | None = None,
    indices: Sequence[int] | None = None,
) -> Results[CommandOutcome]:
    options = options or RunOptions()
    if not command.strip():
        raise UsageError("run needs a command")
    if options.relay_tree:
        from .relaytree import auto_tree

        nodes = auto_tree(nodes, options.relay_tree)  # a no-op when run() did it
    if any(relayed(n) for n in nodes):  # gateway_mode=relay: one call per gateway
        from .relaytree import run_relayed

        return await run_relayed(
            run_async, nodes, command, options, transport, on_result, on_line, indices
        )
    guard = CallbackGuard()  # a failing on_line stops the run, as on_result does
    guarded_line = guard.wrap(on_line) if on_line is not None else None

    async def operation(conn: Connection, node: Node, index: int) -> CommandOutcome:
        env = {"SHOAL_NODE": node.name, "SHOAL_INDEX": str(index), **options.env}
        line_cb = None
        if guarded_line is not None:
            name = node.name
            cb = guarded_line

            def line_cb(stream: str, line: bytes) -> None:
                cb(name, stream, line)

        res = await conn.run(
            command,
            timeout=options.timeout,
            env=env,
            sudo=options.sudo or node.become,  # the inventory's ansible_become
            on_line=line_cb,
            max_output=options.max_output,
        )
        stdout, stderr = _decode(res.stdout), _decode(res.stderr)
        output = CommandOutput(res.exit_status, stdout, stderr, res.signal, res.dropped)
        return CommandOutcome(node.name, output)

    return await fanout(
        nodes,
        operation,
        options,
        outcome=CommandOutcome,
        transport=transport,
        on_result=on_result,
        indices=indices,
        guard=guard,
    )


def run(
    nodes: Sequence[Node],
    command: str,
    options: RunOptions | None = None,
    *,
    transport: Transport | None = None,
    on_result: ResultCallback[CommandOutcome] | None = None,
    on_line: NodeLineCallback | None = None,
) -> Results[CommandOutcome]:
    """Run ``command`` on every node; returns per-node results, never raises per node.

    Large fan-outs are spread over one process per core (:mod:`.workers`).
    Nothing is recorded: pass the results to :func:`shoal.nodes.health.record`
    to update the failed set.
    """
    options = options or RunOptions()
    options.validate()
    if not command.strip():
        raise UsageError("run needs a command")
    if options.relay_tree:
        from .relaytree import auto_tree

        nodes = auto_tree(nodes, options.relay_tree)
    if any(relayed(n) for n in nodes):  # one relay per gateway: not spread over processes
        options = dataclasses.replace(options, workers=1)

    def job(
        share: Sequence[Node],
        indices: Sequence[int],
        opts: FanoutOptions,
        result_cb: ResultCallback[CommandOutcome],
        line_cb: NodeLineCallback | None,
    ) -> Results[CommandOutcome]:
        assert isinstance(opts, RunOptions)
        if transport is not None:
            transport.keep_only({n.name for n in share})
        return asyncio.run(
            run_async(
                share,
                command,
                opts,
                transport=transport,
                on_result=result_cb,
                on_line=line_cb,
                indices=indices,
            )
        )

    return spread(nodes, job, options, on_result=on_result, on_line=on_line)
