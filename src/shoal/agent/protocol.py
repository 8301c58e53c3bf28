"""Versioned JSON-lines protocol between the controller and the node agent.

Theory of operation: the controller opens a byte stream to the agent's Unix
socket (SSH streamlocal forwarding, or ``agent.pyz ctl`` on an SSH channel) and
writes one JSON object per line; the agent answers each request with exactly
one JSON object per line, in order. Every message carries ``"v"``, the
protocol version. A request is ``{"v", "id", "op", "args"}``; a reply is
``{"v", "id", "ok": true, "result"}`` or ``{"v", "id", "ok": false, "kind",
"error"}``. A request of another version gets one reply whose error is exactly
``version mismatch: agent X, controller Y`` and the connection is closed: a
peer of another version learns nothing else. Messages are plain JSON (never
pickle) and at most :data:`MAX_LINE` bytes.

Streaming operations (:data:`STREAMING_OPS`: ``watch``, ``exec``). Besides its
one reply, a streaming request may be sent any number of *push* messages
``{"v", "id": <the request's id>, "push": KIND, ...}``; a client demultiplexes
what it reads by ``id`` and by the presence of ``push``. ``exec`` pushes its
output (``out``) and then replies when the command ends; ``watch`` replies at
once and then pushes ``event`` and ``beat`` messages until it is cancelled,
overflows (a last ``overflow`` push) or the connection ends. Ordinary requests
keep exactly one reply each, answered in order; they may be sent while streams
run on the same connection, and their replies come interleaved with the pushes,
always as whole lines. ``cancel {id}`` ends a stream of this connection: a watch
stops pushing, an exec's command is killed (its reply still comes). Closing the
connection ends every stream on it (an exec's process group is killed).

This module is shared by the agent (standard library only, Python >= 3.9) and
the controller.
"""

from __future__ import annotations

import json
from typing import Any

#: Bump when a message changes meaning; agents and controllers of different
#: versions refuse each other.
PROTOCOL_VERSION = 1

#: Longest accepted line (bytes, newline included).
MAX_LINE = 4 << 20

#: Exit status of ``agent.pyz serve`` when an agent already runs in that working
#: area (the controller's start_agent reports "already running", not a failure).
EXIT_RUNNING = 3

#: Operations the agent answers.
OPS = (
    "hello",
    "status",
    "proc.start",
    "proc.stop",
    "proc.restart",
    "proc.status",
    "proc.logs",
    "proc.remove",
    "events",
    "shutdown",
    "step.run",
    "step.open",
    "step.logs",
    "step.status",
    "step.forget",
    "content.begin",
    "content.fetch",
    "content.commit",
    "content.end",
    "content.versions",
    "content.rollback",
    "content.activate",
    "ping",
    "watch",
    "exec",
    "cancel",
    "logs.list",
    "logs.read",
    "logs.ack",
    "agent.handover",
    "agent.share",
    "agent.unshare",
    "audit.scan",
    "audit.page",
    "audit.replace",
)

#: Operations that may push messages besides their reply (see the module docstring).
STREAMING_OPS = ("watch", "exec")

#: Push kinds: ``event`` and ``beat`` (watch), ``overflow`` (a watch dropped because
#: its reader fell behind: watch again from the last seq), ``out`` (exec output).
PUSH_KINDS = ("event", "beat", "overflow", "out")

Message = dict[str, Any]


class ProtocolError(Exception):
    """A message that cannot be accepted; ``kind`` is ``protocol`` or ``version``."""

    def __init__(self, message: str, kind: str = "protocol") -> None:
        super().__init__(message)
        self.kind = kind


def mismatch_message(agent_version: object, controller_version: object) -> str:
    """The one error text a peer of another protocol version receives."""
    return f"version mismatch: agent {agent_version}, controller {controller_version}"


def encode(message: Message) -> bytes:
    """One message as one JSON line (compact, keys sorted so bytes are stable)."""
    data = json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    raw = data.encode("utf-8") + b"\n"
    if len(raw) > MAX_LINE:
        raise ProtocolError(f"message of {len(raw)} bytes exceeds the {MAX_LINE}-byte limit")
    return raw


def decode(line: bytes) -> Message:
    """Parse one line into a JSON object; ProtocolError when it is not one."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nesting: a hostile peer
        raise ProtocolError(f"bad message: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad message: not a JSON object")
    return value


def request(op: str, request_id: int, **args: Any) -> Message:
    """A request of this protocol version."""
    return {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args}


def check_request(message: Message) -> Message:
    """Validate a request; raise ProtocolError (kind ``version`` on a version mismatch)."""
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(mismatch_message(PROTOCOL_VERSION, version), kind="version")
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown operation {op!r}")
    request_id = message.get("id")
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        raise ProtocolError("bad message: 'id' must be an integer or a string")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("bad message: 'args' must be an object")
    return {"v": version, "id": request_id, "op": op, "args": args}


def reply(request_id: object, result: Any) -> Message:
    """A successful reply."""
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}


def push(request_id: object, kind: str, **fields: Any) -> Message:
    """A push message for the streaming request ``request_id``."""
    message: Message = {"v": PROTOCOL_VERSION, "id": request_id, "push": kind}
    message.update(fields)
    return message


def failure(request_id: object, error: str, kind: str = "agent") -> Message:
    """A refused or failed request; ``error`` is one line."""
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "kind": kind, "error": error}


def check_reply(message: Message, request_id: object | None = None) -> Any:
    """The result of a reply, or ProtocolError with the agent's error and kind."""
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(mismatch_message(version, PROTOCOL_VERSION), kind="version")
    if request_id is not None and message.get("id") != request_id:
        raise ProtocolError(f"reply to request {message.get('id')!r}, expected {request_id!r}")
    if message.get("ok") is True:
        return message.get("result")
    error = message.get("error")
    kind = message.get("kind")
    raise ProtocolError(
        str(error) if error else "agent refused the request", str(kind) if kind else "agent"
    )
