"""``run`` through relay gateways, and the automatic tree of about sqrt(N) of them.

Owns the fan-out side of relay mode (issue 18 item 3; the wire and the gateway's
side are :mod:`shoal.transport.relay` and :mod:`shoal.agent.relayrun`). In a
selection, the nodes marked ``gateway=G gateway_mode=relay`` are grouped by
gateway; each group is one relay call (one connection to G), the rest of the
selection runs as usual beside them, and the results come back in selection
order, one per node, shaped as the direct path's (exit status, output, the same
error kinds; with ``on_line`` (``--stream``) each line of a relayed node's output
reaches it as the relay sends it up, and an interrupt ends the commands on the
subtree's nodes before the relay closes, as the direct path does).

A gateway that cannot be had: its nodes are run directly, and those that fail
there too say ``unreachable through gateway G (G: why); directly: why`` as the
SSH-in-SSH path does. A relay lost midway reports its unfinished nodes
``unreachable through gateway G (...)`` and does not run them again (the
command may have run).

:func:`auto_tree`: a selection of at least ``min_size`` nodes (0: never) with no
gateway marked is split into round(sqrt(N)) subtrees of consecutive nodes in
address order (so a subtree stays within its subnet where it can), the first
node of each being the gateway of the others, in relay mode. Deterministic:
the same selection gives the same tree.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from shoal.errors import CommandTimeout, ConnectError, ShoalError
from shoal.nodes.model import GATEWAY, Node
from shoal.transport.base import Transport
from shoal.transport.factory import make_transport
from shoal.transport.gateways import GATEWAY_MODE, RELAY, relayed

from .options import RunOptions
from .results import CommandOutcome, CommandOutput, Results
from .scheduler import ResultCallback, wait_settled

if TYPE_CHECKING:  # asyncssh: imported when a relay runs, not for auto_tree
    from shoal.transport.base import CommandResult
    from shoal.transport.ssh import SSHConnection, SSHTransport

#: Runs ``nodes`` (at ``indices``) the ordinary way, with the caller's callbacks if ``live``.
DirectRun = Callable[[Sequence[Node], Sequence[int], bool], Awaitable[Results[CommandOutcome]]]
#: fanout.commands.run_async (passed in: it calls this module).
RunAsync = Callable[..., Awaitable[Results[CommandOutcome]]]
#: (node, stream, line), as run_async's on_line.
LineCallback = Callable[[str, str, bytes], None]


def _address_key(node: Node) -> tuple[int, int, str]:
    try:
        return (0, int(ipaddress.ip_address(node.host or "")), node.name)
    except ValueError:
        return (1, 0, node.name)


def auto_tree(nodes: Sequence[Node], min_size: int) -> list[Node]:
    """``nodes`` with a relay tree marked on them (see the module docstring), or as given
    when the selection is smaller than ``min_size``, ``min_size`` is 0, or any node
    already names a gateway."""
    if not min_size or len(nodes) < min_size or any(n.gateway for n in nodes):
        return list(nodes)
    order = sorted(nodes, key=_address_key)
    k = max(1, round(math.sqrt(len(order))))
    size = math.ceil(len(order) / k)
    marked: dict[str, Node] = {}
    for start in range(0, len(order), size):
        gateway, *subtree = order[start : start + size]
        for node in subtree:
            attrs = {**node.attrs, GATEWAY: gateway.name, GATEWAY_MODE: RELAY}
            marked[node.name] = replace(node, attrs=attrs)
    return [marked.get(n.name, n) for n in nodes]


def _direct(node: Node) -> Node:
    attrs = {k: v for k, v in node.attrs.items() if k not in (GATEWAY, GATEWAY_MODE)}
    return replace(node, attrs=attrs)


def _lines(name: str, text: str, stream: str, on_line: LineCallback) -> None:
    if not text:
        return
    parts = text.encode().split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    for part in parts:
        on_line(name, stream, part)


async def run_relayed(
    run_async: RunAsync,
    nodes: Sequence[Node],
    command: str,
    options: RunOptions,
    transport: Transport | None,
    on_result: ResultCallback[CommandOutcome] | None,
    on_line: LineCallback | None,
    indices: Sequence[int] | None,
) -> Results[CommandOutcome]:
    """``run_async`` of a selection where some nodes are relayed. Over a transport other
    than SSH (a service's held links, a mock), those nodes go through their gateway as
    SSH-in-SSH instead (relay mode needs a connection of its own to the gateway)."""
    from shoal.transport.ssh import SSHTransport

    ssh = transport or make_transport(options)
    if not isinstance(ssh, SSHTransport):
        plain = [replace(n, attrs={k: v for k, v in n.attrs.items() if k != GATEWAY_MODE})
                 for n in nodes]  # fmt: skip
        return await run_async(plain, command, options, transport=ssh, on_result=on_result,
                               on_line=on_line, indices=indices)  # fmt: skip

    def direct(
        share: Sequence[Node], at: Sequence[int], live: bool
    ) -> Awaitable[Results[CommandOutcome]]:
        return run_async(share, command, options, transport=ssh, indices=at,
                         on_result=on_result if live else None,
                         on_line=on_line if live else None)  # fmt: skip

    # TCP connects the CLI started to relayed nodes are not used: closed at once (each
    # holds a pre-auth sshd on its node)
    ssh.keep_only({n.name for n in nodes if not relayed(n)})
    at = indices if indices is not None else range(len(nodes))
    return await run_with_relays(nodes, at, command, options, ssh, direct, on_result, on_line)


async def run_with_relays(
    nodes: Sequence[Node],
    indices: Sequence[int],
    command: str,
    options: RunOptions,
    transport: SSHTransport,
    direct: DirectRun,
    on_result: ResultCallback[CommandOutcome] | None = None,
    on_line: LineCallback | None = None,
) -> Results[CommandOutcome]:
    """Run the relayed nodes through their gateways and the others with ``direct``; see
    the module docstring."""
    from shoal.transport.relay import RelayNode, RelayOptions, relay_run
    from shoal.transport.ssh import KILL_GRACE, end_remote_line, remote_command

    by_name = {n.name: n for n in nodes}
    groups: dict[str, list[tuple[int, Node]]] = {}
    rest: list[tuple[int, Node]] = []
    for i, node in zip(indices, nodes, strict=True):
        if relayed(node):
            groups.setdefault(str(node.gateway), []).append((i, node))
        else:
            rest.append((i, node))
    # a gateway in the selection runs its own command on its relay's connection
    carried = {n.name: (i, n) for i, n in rest if n.name in groups}
    rest = [(i, n) for i, n in rest if n.name not in carried]
    loop = asyncio.get_running_loop()
    started = loop.time()

    def deliver(outcome: CommandOutcome, streamed: bool = False) -> None:
        if on_line is not None and outcome.value is not None and not streamed:
            _lines(outcome.node, outcome.stdout, "stdout", on_line)
            _lines(outcome.node, outcome.stderr, "stderr", on_line)
        if on_result is not None:
            on_result(outcome)

    async def one_gateway(name: str, members: list[tuple[int, Node]]) -> list[CommandOutcome]:
        from shoal.transport.gateways import inventory_lookup

        gateway = by_name.get(name)
        gateway = _direct(gateway) if gateway else inventory_lookup(name, members[0][1])
        t0 = loop.time()
        items = []
        for i, node in members:
            token, sudo = secrets.token_hex(8), options.sudo or node.become
            env = {"SHOAL_RUN": token, "SHOAL_NODE": node.name, "SHOAL_INDEX": str(i),
                   **options.env}  # fmt: skip
            line = remote_command(command, env=env, timeout=options.timeout, sudo=sudo)
            items.append(RelayNode(node, line, end_remote_line(token, sudo)))
        hard = None if options.timeout is None else options.timeout + KILL_GRACE + 3.0
        ropts = RelayOptions(
            connect_timeout=options.connect_timeout,
            timeout=options.timeout,
            hard=hard,
            parallel=options.parallel or 64,
            max_output=options.max_output,
        )
        own = None
        if name in carried:
            at, gw_node = carried[name]
            gw_env = {"SHOAL_NODE": gw_node.name, "SHOAL_INDEX": str(at), **options.env}
            # the relay's sessions get the forwarded agent; the command, as directly, not
            gw_line = f"unset SSH_AUTH_SOCK; {command}"
            gw_sudo = options.sudo or gw_node.become

            def own(conn: SSHConnection) -> Awaitable[CommandResult]:
                return conn.run(
                    gw_line,
                    timeout=options.timeout,
                    env=gw_env,
                    sudo=gw_sudo,
                    on_line=None if on_line is None else partial(on_line, gw_node.name),
                    max_output=options.max_output,
                )

        try:
            got = await relay_run(transport, gateway, items, ropts, own, on_line)
        except ShoalError as exc:
            return await fallback(name, members, exc)
        out = []
        for i, node in [*members, *([carried[name]] if name in carried else [])]:
            res = got.get(node.name) or ConnectError("the relay did not report it", node.name)
            if isinstance(res, ShoalError):
                outcome = CommandOutcome(node.name, error=res)
            else:
                value = CommandOutput(
                    res.exit_status,
                    res.stdout.decode("utf-8", errors="replace"),
                    res.stderr.decode("utf-8", errors="replace"),
                    res.signal,
                    res.dropped,
                )
                outcome = CommandOutcome(node.name, value)
            outcome.index, outcome.attempts, outcome.duration = i, 1, loop.time() - t0
            deliver(outcome, streamed=True)  # its lines went to on_line as they came
            out.append(outcome)
        return out

    async def fallback(
        name: str, members: list[tuple[int, Node]], why: ShoalError
    ) -> list[CommandOutcome]:
        through = f"unreachable through gateway {name} ({why.located()})"
        tried = [*members, *([carried[name]] if name in carried else [])]
        res = await direct([_direct(n) for _, n in tried], [i for i, _ in tried], False)
        out = []
        for r in res:
            behind = r.node != name
            if behind and not r.reached and not isinstance(r.error, CommandTimeout):
                r.error = ConnectError(f"{through}; directly: {r.error}", r.node)
            deliver(r)
            out.append(r)
        return out

    async def plain() -> list[CommandOutcome]:
        if not rest:
            return []
        return list(await direct([n for _, n in rest], [i for i, _ in rest], True))

    tasks = [asyncio.ensure_future(plain())]
    tasks += [asyncio.ensure_future(one_gateway(g, m)) for g, m in groups.items()]
    await wait_settled(tasks)  # an interrupt: each relay ends its nodes' commands first
    found = {r.node: r for task in tasks for r in task.result()}
    return Results({n.name: found[n.name] for n in nodes}, duration=loop.time() - started)
