"""The fan-out scheduler: one operation on many nodes, bounded and staggered.

Theory of operation. Every node gets one task. A task waits for a slot (at
most ``parallel`` connections open at once), then for its launch time (at
least ``delay`` seconds after the previous launch, CoDeploy's launch delay),
opens one connection (retrying a failure marked ``retryable``, a
:class:`~shoal.errors.ConnectError` such as sshd's ``MaxStartups`` dropping it
during the banner, with jittered exponential backoff), runs the operation on
it, and closes it. Whatever happens, the node ends with a
:class:`~.results.NodeOutcome` (the operation's, or one made with the error
that stopped it); an exception never escapes for one node, so a dead host
neither blocks nor fails the others. Results keep inventory order.

The scheduler has no side effects: it records nothing. Whoever wants the
failed set updated passes the results to :func:`shoal.nodes.health.record`
(the CLI does, after every command).

The caller's callbacks (progress, live output) are the exception: one that
raises (a closed output pipe) is the caller's failure, not a node's, so it
stops the whole fan-out as an interrupt does (every task cancelled, which
ends the commands on the nodes) and its exception is raised once the nodes
are stopped. A per-node :class:`~shoal.errors.LocalError` (a local
destination that cannot be written) is kept in that node's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shoal.errors import ShoalError, TransportError
from shoal.logsetup import logger
from shoal.nodes.model import Node
from shoal.transport.base import Connection, Transport
from shoal.transport.factory import make_transport

from .options import FanoutOptions, default_parallelism
from .results import NodeOutcome, OutcomeT, Results

_log = logger(__name__)

#: An operation: given an open connection, the node and its index, produce its outcome.
Operation = Callable[[Connection, Node, int], Awaitable[OutcomeT]]
#: Called once per node as soon as its outcome is known (progress, live output).
ResultCallback = Callable[[OutcomeT], None]


class CallbackGuard:
    """Calls the caller's callbacks; the first one that raises stops the fan-out.

    Created inside the fan-out's task; :meth:`wrap` a callback, run the work
    under :meth:`stopping`, which turns the cancellation into that exception.
    """

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.error: BaseException | None = None

    def wrap(self, callback: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            if self.error is not None:
                return  # stopping: nothing more is delivered
            try:
                callback(*args)
            except Exception as exc:
                self.error = exc
                if self.task is not None:
                    self.task.cancel()

        return call

    async def stopping(self, work: Awaitable[Results[OutcomeT]]) -> Results[OutcomeT]:
        try:
            return await work
        except asyncio.CancelledError:
            if self.error is None or self.task is None:
                raise
            if sys.version_info >= (3, 11):  # 3.10 does not count cancellations
                self.task.uncancel()
            raise self.error from None


async def fanout(
    nodes: Sequence[Node],
    operation: Operation[OutcomeT],
    options: FanoutOptions | None = None,
    *,
    outcome: Callable[..., OutcomeT] = NodeOutcome,  # type: ignore[assignment]  # OutcomeT's default
    transport: Transport | None = None,
    on_result: ResultCallback[OutcomeT] | None = None,
    indices: Sequence[int] | None = None,
    guard: CallbackGuard | None = None,
) -> Results[OutcomeT]:
    """Run ``operation`` on every node; see the module docstring.

    ``outcome`` makes a node's outcome from ``node=`` and ``error=`` when the
    operation could not produce one (the class the operation returns).
    ``indices`` are the nodes' positions in the whole selection when this call
    runs a share of it (a worker process); by default 0, 1, 2, ...
    ``guard`` is the caller's when its operation calls guarded callbacks too.
    """
    guard = guard or CallbackGuard()
    wrapped = guard.wrap(on_result) if on_result is not None else None
    return await guard.stopping(
        _fanout(nodes, operation, options, outcome, transport, wrapped, indices)
    )


async def _fanout(
    nodes: Sequence[Node],
    operation: Operation[OutcomeT],
    options: FanoutOptions | None,
    outcome: Callable[..., OutcomeT],
    transport: Transport | None,
    on_result: ResultCallback[OutcomeT] | None,
    indices: Sequence[int] | None,
) -> Results[OutcomeT]:
    options = options or FanoutOptions()
    options.validate()
    transport = transport or make_transport(options)
    parallel = options.parallel or default_parallelism()
    slots = asyncio.Semaphore(parallel)
    launching = asyncio.Lock()
    loop = asyncio.get_running_loop()
    next_launch = loop.time()
    started = time.monotonic()

    async def connect(node: Node) -> tuple[Connection | None, ShoalError | None, int]:
        attempt = 0
        while True:
            attempt += 1
            _log.debug("%s: connecting (attempt %d)", node.name, attempt)
            try:
                return await transport.connect(node, timeout=options.connect_timeout), None, attempt
            except ShoalError as exc:
                if not exc.retryable or attempt > options.retries:
                    _log.info("%s: not connected after %d attempt(s): %s", node.name, attempt, exc)
                    return None, exc, attempt
                pause = options.retry_backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                _log.info("%s: %s; retrying in %.2f s", node.name, exc, pause)
                await asyncio.sleep(pause)

    async def one(index: int, node: Node) -> OutcomeT:
        nonlocal next_launch
        async with slots:
            if options.delay:
                # one launch at a time; the next may go `delay` after this one really went
                async with launching:
                    wait = next_launch - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    next_launch = loop.time() + options.delay
            t0 = time.monotonic()
            conn, error, attempts = await connect(node)
            if conn is None:
                assert error is not None
                result = outcome(node=node.name, error=error)
            else:
                try:
                    result = await operation(conn, node, index)
                except ShoalError as exc:
                    result = outcome(node=node.name, error=exc)
                except OSError as exc:
                    err = TransportError(f"I/O error: {exc}", node.name)
                    result = outcome(node=node.name, error=err)
                finally:
                    await conn.close()
            result.index = index
            result.attempts = attempts
            result.duration = time.monotonic() - t0
        if on_result is not None:
            on_result(result)
        return result

    positions = range(len(nodes)) if indices is None else indices
    tasks = [asyncio.ensure_future(one(i, n)) for i, n in zip(positions, nodes, strict=True)]
    await wait_settled(tasks)
    results = [task.result() for task in tasks]
    return Results({r.node: r for r in results}, duration=time.monotonic() - started)


#: How long cancelled nodes may take to clean up (their own steps are bounded shorter).
SETTLE_TIMEOUT = 10.0


async def wait_settled(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for every task; when the waiter is cancelled, cancel them and let each
    finish its own clean-up (ending remote commands, removing temporary files) before
    the cancellation goes on: gather() would return at the first cancelled one and
    leave the others' clean-up to be cut off by the event loop's shutdown."""
    try:
        if tasks:  # no node (every one refused before): nothing to wait for
            await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await _settle(tasks)
        raise


async def _settle(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for cancelled ``tasks`` to end, through further cancels, at most SETTLE_TIMEOUT."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    pending = [t for t in tasks if not t.done()]
    while pending and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pending, timeout=left)
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
