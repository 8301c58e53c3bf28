"""The event stream's other faces: Server-Sent Events and the selection filter.

``GET /api/v1/events`` (:mod:`.routes`) answers newline-delimited JSON; asked
with ``Accept: text/event-stream`` it answers the same events as SSE, always
following (an ``EventSource`` reconnects by itself): each event is
``id: SEQ`` + ``event: TOPIC`` + ``data: JSON``; a reconnecting reader's
``Last-Event-ID`` header is ``after`` (the query's ``after`` wins when both
are given), so a resume starts exactly after the last event it received;
events pruned by retention before it are announced by one ``event: lost``;
while idle a comment line ``: heartbeat LAST`` goes out after each quiet
stretch (the service's stream heartbeat), which keeps proxies and the reader's
liveness check content.

``selection=EXPR`` (either face) keeps the events of the nodes that
expression selects when the stream starts (the grammar's errors are the
usual 400); events about no node are dropped by it. Both faces come from the
one NDJSON generator, so ordering, resume and heartbeats are the same code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from shoal.errors import UsageError

#: The media type that selects SSE.
SSE = "text/event-stream"


def wants_sse(accept: str | None) -> bool:
    return bool(accept) and SSE in str(accept)


def last_event_id(header: str | None) -> int | None:
    """``after`` from a ``Last-Event-ID`` header (None when absent)."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if not text.isdigit():
        raise UsageError(f"Last-Event-ID must be an event's sequence number, not {text!r}")
    return int(text)


async def only_nodes(lines: AsyncIterator[bytes], names: set[str]) -> AsyncIterator[bytes]:
    """The NDJSON stream keeping only events about ``names`` (other lines pass)."""
    async for chunk in lines:
        kept = [line for line in chunk.splitlines(keepends=True) if _keep(json.loads(line), names)]
        if kept:
            yield b"".join(kept)


def _keep(record: dict[str, object], names: set[str]) -> bool:
    return "seq" not in record or record.get("node") in names


async def as_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The NDJSON stream of :mod:`.routes` as Server-Sent Events (see the module docstring)."""
    yield b"retry: 1000\n\n"
    async for chunk in lines:
        out = []
        for line in chunk.splitlines():
            record = json.loads(line)
            if "seq" in record:
                topic = "".join(str(record.get("topic") or "event").split())
                out.append(
                    b"id: %d\nevent: %s\ndata: %s\n\n" % (record["seq"], topic.encode(), line)
                )
            elif "heartbeat" in record:
                out.append(b": heartbeat %d\n\n" % int(record.get("last") or 0))
            else:
                out.append(b"event: lost\ndata: %s\n\n" % line)
        yield b"".join(out)
