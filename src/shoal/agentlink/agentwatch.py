"""A watch: the agent's events pushed as they are recorded, and its heartbeats.

:meth:`StreamClient.watch <shoal.agentlink.agentclient.StreamClient.watch>`
makes one; it runs on the client's stream beside calls and execs (the
client's reader task hands it its pushes). See :class:`Watch` for the
delivery guarantees and :mod:`shoal.agent.watching` for the agent's side.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from shoal.agent import protocol
from shoal.agentlink.agentclient import Ping, StreamClient
from shoal.errors import AgentError, AgentTimeout


@dataclass(frozen=True)
class AgentEvent:
    """One event of the agent's journal, as a watch delivers it."""

    seq: int
    time: float
    kind: str
    program: str | None
    detail: str


@dataclass(frozen=True)
class Beat:
    """One heartbeat of a watch: the agent's clock, newest seq and live facts.

    The agent sends the facts every few beats (:data:`shoal.agent.watching.FACTS_EVERY`
    seconds, and when its program states change); a beat without them repeats the
    last ones received, with ``fresh`` false."""

    t: float
    last: int
    load1: float | None
    mem_avail_mb: float | None
    disk_free_mb: float | None
    programs: dict[str, int]
    fresh: bool = True


class Watch:
    """The agent's events as they are recorded, and its beats, over one stream.

    Iterate it for :class:`AgentEvent` and :class:`Beat` items; ``last`` is the
    seq of the newest event delivered. When the agent drops the watch because
    this reader fell behind (``overflow``), or more than ``backlog`` items wait
    here unread, the watch is made again from ``last`` once what is held has
    been read: events are delivered once each, in order, none skipped while the
    agent still holds them (``lost`` turns true when it no longer did). When the
    agent's journal restarted below ``since`` (``reset``), it is read from 0.
    Iteration raises AgentLinkBroken when the stream ends.

    With :attr:`on_beat` set, beats are not queued: the client's reader calls it
    with each beat as it is read (a controller hearing 250 beats a second spares
    a task switch and a queue per beat); iteration then yields events only.
    """

    def __init__(self, client: StreamClient, since: int, beat: float, backlog: int) -> None:
        self.client = client
        self.beat = beat
        self.backlog = backlog
        self.last = since
        self.agent_id: str | None = None
        self.lost = False
        self.reset = False
        self.overflows = 0
        self._items: deque[AgentEvent | Beat] = deque()
        self._wakeup = asyncio.Event()
        self._request: int | None = None
        self._again = False
        self._error: AgentError | None = None
        self._stopped = False
        #: called with each beat instead of queueing it (must not raise or block)
        self.on_beat: Callable[[Beat], None] | None = None
        self._facts: Beat | None = None

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 30.0) -> None:
        """Ask the agent to watch from :attr:`last` (the reply comes before any push)."""
        await self.client._start_reader()
        since = self.last
        request_id, future, line = self.client._register(
            "watch", {"since": since, "beat": self.beat}, self._on_push, True, self._on_end
        )
        self._request = request_id
        try:
            await self.client._write(line)
            message = await asyncio.wait_for(asyncio.shield(future), timeout)
            result = self.client._result(message, "watch")
            self.agent_id = str(result["agent_id"])
            last = int(result["last"])
        except asyncio.TimeoutError:
            self._drop(request_id)
            raise AgentTimeout(
                f"agent did not answer watch within {timeout:g}s", node=self.client.node
            ) from None
        except (KeyError, TypeError, ValueError):
            self._drop(request_id)
            raise AgentError(
                "watch answered without agent_id and last", node=self.client.node
            ) from None
        except BaseException:
            self._drop(request_id)
            raise
        if result.get("lost") is True:
            self.lost = True
        if last < since:  # a new journal (working area wiped): read it from its start
            self._drop(request_id)
            self.reset, self.last = True, 0
            await self.start(timeout)

    def _drop(self, request_id: int) -> None:
        self.client.forget(request_id)
        if self._request == request_id:
            self._request = None
            if self.client._ended is None:
                self.client.cancel_soon(request_id)

    def _on_push(self, message: protocol.Message) -> None:
        kind = message.get("push")
        request_id = self._request
        if request_id is None or message.get("id") != request_id or self._again:
            return
        if kind == "overflow":
            self.overflows += 1
            self.client.forget(request_id)
            self._request, self._again = None, True
        elif kind == "beat" and self.on_beat is not None:
            self.on_beat(self._beat(message))
            return
        elif kind in ("event", "beat"):
            if len(self._items) >= self.backlog:  # we fall behind: drop, watch again later
                self.overflows += 1
                self._drop(request_id)
                self._again = True
            else:
                self._items.append(_event(message) if kind == "event" else self._beat(message))
        self._wakeup.set()

    def _beat(self, message: protocol.Message) -> Beat:
        """The beat pushed: with its facts, or the last ones received."""
        t, last = float(message.get("t") or 0.0), int(message.get("last") or 0)
        facts = self._facts
        if "programs" not in message and facts is not None:
            return Beat(t, last, facts.load1, facts.mem_avail_mb, facts.disk_free_mb,
                        facts.programs, fresh=False)  # fmt: skip
        self._facts = beat = _beat_with_facts(t, last, message)
        return beat

    def _on_end(self, error: AgentError) -> None:
        self._error = error
        self._wakeup.set()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> AgentEvent | Beat:
        while True:
            if self._items:
                item = self._items.popleft()
                if isinstance(item, AgentEvent):
                    if item.seq <= self.last:
                        continue  # already delivered
                    self.last = item.seq
                return item
            if self._stopped:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            if self._again:
                self._again = False
                await self.start()
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    async def ping(self, timeout: float = 10.0) -> Ping:
        """A ping on the watched stream (answered between pushes)."""
        return await self.client.ping(timeout)

    async def stop(self) -> None:
        """End the watch (the agent stops pushing); the stream stays open."""
        self._stopped = True
        self._wakeup.set()
        if self._request is not None:
            self._drop(self._request)


def _event(message: protocol.Message) -> AgentEvent:
    event = message.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
        raise ValueError("event push without an event")
    program = event.get("program")
    return AgentEvent(
        seq=event["seq"],
        time=float(event.get("time") or 0.0),
        kind=str(event.get("kind", "")),
        program=program if isinstance(program, str) else None,
        detail=str(event.get("detail", "")),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _beat_with_facts(t: float, last: int, message: protocol.Message) -> Beat:
    programs = message.get("programs")
    return Beat(
        t=t,
        last=last,
        load1=_number(message.get("load1")),
        mem_avail_mb=_number(message.get("mem_avail_mb")),
        disk_free_mb=_number(message.get("disk_free_mb")),
        programs={str(k): int(v) for k, v in programs.items() if isinstance(v, int)}
        if isinstance(programs, dict)
        else {},
    )
