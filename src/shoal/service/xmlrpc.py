"""XML-RPC at ``POST /RPC2`` (supervisord's convention), over the HTTP API's own handlers.

Every method calls the route handler the HTTP API serves (the same function,
handed the same request: one implementation), and answers what that route
answers as JSON, in XML-RPC's types: a streamed answer (runs, program
operations, events) is collected whole; ``null`` is ``<nil/>`` (Python's
``xmlrpc.client`` reads it; pass ``allow_none=True`` only to send one);
integers beyond XML-RPC's 32 bits are sent as doubles (exact up to 2**53).

``system.listMethods``, ``system.methodHelp``, ``system.methodSignature`` and
``system.multicall`` describe and batch the rest (:data:`METHODS`).

Faults: a library error is ``Fault(code, "KIND: [NODE: ]MESSAGE")`` with the
CLI's error kinds (``selection: ...``, ``usage: ...``); its ``faultCode`` is
fixed per kind (:data:`FAULT_CODES`). Protocol faults use the codes of the
XML-RPC fault interoperability convention: -32700 unparsable or refused
body, -32600 not a call, -32601 unknown method, -32602 bad parameters,
-32603 internal error. An HTTP answer always has status 200 unless the body
is too large (413, before any parsing).

Safety of the wire: the body is parsed by expat with this module's handlers
(not ``xmlrpc.client.loads``'s parser): a document type declaration, and so
any entity definition, is refused before it is read (no billion laughs, no
quadratic blowup, no external entities, whatever the expat version); bodies
over :data:`MAX_BODY` are refused unread; a compressed body is not inflated.

Access is the HTTP API's: the service's middleware authenticates the request
before it reaches here (the socket's peer uid; a bearer token on TCP). A
request whose token is read-only (``request.state.scope == "read"``) gets
fault :data:`FORBIDDEN` from any method that changes state or starts a
process (``Method.writes``).
"""

from __future__ import annotations

import inspect
import json
import logging
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from shoal.errors import RequestError, ShoalError

from . import approutes, jobs, noderoutes, pushroutes, routes, runroutes

router = APIRouter()
log = logging.getLogger("shoal.serve.xmlrpc")

#: Largest request body read, bytes (a larger one is answered 413 unread).
MAX_BODY = 1 << 20

#: faultCode per error kind (stable: clients may switch on them).
FAULT_CODES = {
    "error": 1,
    "usage": 2,
    "config": 3,
    "state": 4,
    "inventory": 5,
    "selection": 6,
    "lab": 7,
    "transport": 8,
    "unreachable": 9,
    "hostkey": 10,
    "auth": 11,
    "timeout": 12,
    "failed": 13,
    "local": 14,
    "service": 15,
    "agent": 16,
    "version": 17,
    "content": 18,
    "app": 19,
}
PARSE_ERROR = -32700
NOT_A_CALL = -32600
UNKNOWN_METHOD = -32601
BAD_PARAMS = -32602
INTERNAL = -32603
#: A read-only token called a method that changes state.
FORBIDDEN = 403

_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Method:
    """One XML-RPC method: its handler, signatures and help."""

    name: str
    call: Callable[..., Awaitable[Any]]
    #: each a list: the return type, then the parameters' types
    signatures: tuple[tuple[str, ...], ...]
    help: str
    #: changes state or starts a process (refused to read-only tokens)
    writes: bool


METHODS: dict[str, Method] = {}


def method(
    name: str, *signatures: tuple[str, ...], writes: bool = False
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register the decorated ``async def f(request, *params)`` as method ``name``."""

    def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        METHODS[name] = Method(name, fn, signatures, inspect.cleandoc(fn.__doc__ or ""), writes)
        return fn

    return register


# -- the wire -------------------------------------------------------------------------------


_UNPARSABLE = (expat.ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, IndexError)


def _no_dtd(*_: object) -> None:
    raise RequestError("document type declarations are not accepted")


def loads(data: bytes) -> tuple[tuple[Any, ...], str]:
    """``(params, method_name)`` of a call; :class:`RequestError` on a bad or hostile body."""
    target = xmlrpc.client.Unmarshaller(use_builtin_types=True)
    parser = expat.ParserCreate(None, None)
    parser.StartDoctypeDeclHandler = _no_dtd
    parser.EntityDeclHandler = _no_dtd
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = target.start
    parser.EndElementHandler = target.end
    parser.CharacterDataHandler = target.data
    parser.buffer_text = True
    target.xml("", None)  # expat hands over text, not bytes (as xmlrpc.client's parser)
    try:
        parser.Parse(data, True)
        params = target.close()
    except RequestError:
        raise
    except _UNPARSABLE as exc:
        raise RequestError(f"not an XML-RPC document: {exc}") from None
    name = target.getmethodname()
    if not name:
        raise RequestError("not an XML-RPC call (no methodName)")
    return params, name


def wire(value: Any) -> Any:
    """``value`` in XML-RPC's types (JSON's, big integers as doubles)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -_INT_MAX - 1 <= value <= _INT_MAX else float(value)
    if isinstance(value, dict):
        return {str(k): wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire(v) for v in value]
    return wire(jsonable_encoder(value))


def fault_of(exc: ShoalError) -> xmlrpc.client.Fault:
    """A library error as a fault: its kind's code, ``KIND: [NODE: ]MESSAGE``."""
    return xmlrpc.client.Fault(FAULT_CODES.get(exc.kind, 1), f"{exc.kind}: {exc.located()}")


def _answer(payload: tuple[Any, ...] | xmlrpc.client.Fault) -> Response:
    body = xmlrpc.client.dumps(payload, methodresponse=True, allow_none=True, encoding="utf-8")
    return Response(body.encode(), media_type="text/xml; charset=utf-8")


async def _body(request: Request) -> bytes | None:
    """The body, or None when it is larger than MAX_BODY (nothing more is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return None
    return bytes(data)


@router.post("/RPC2", include_in_schema=False)
async def rpc2(request: Request) -> Response:
    """The XML-RPC endpoint (see the module docstring)."""
    data = await _body(request)
    if data is None:
        return Response(f"request body over {MAX_BODY} bytes\n", status_code=413)
    try:
        params, name = loads(data)
    except RequestError as exc:
        return _answer(xmlrpc.client.Fault(PARSE_ERROR, f"parse error: {exc}"))
    return _answer(await dispatch(request, name, params))


async def dispatch(
    request: Request, name: str, params: tuple[Any, ...]
) -> tuple[Any] | xmlrpc.client.Fault:
    """Call method ``name``: ``(result,)`` or the fault it ends in."""
    found = METHODS.get(name)
    if found is None:
        return xmlrpc.client.Fault(UNKNOWN_METHOD, f"unknown method {name!r} (system.listMethods)")
    if found.writes and getattr(request.state, "scope", None) == "read":
        return xmlrpc.client.Fault(FORBIDDEN, f"forbidden: {name} needs a token that may write")
    try:
        inspect.signature(found.call).bind(request, *params)
    except TypeError as exc:
        return xmlrpc.client.Fault(BAD_PARAMS, f"bad parameters for {name}: {exc}")
    try:
        return (wire(await found.call(request, *params)),)
    except (ValidationError, RequestError) as exc:
        text = str(exc).splitlines()[0] if isinstance(exc, RequestError) else _validation(exc)
        return xmlrpc.client.Fault(BAD_PARAMS, f"bad parameters for {name}: {text}")
    except ShoalError as exc:
        return fault_of(exc)
    except Exception as exc:
        log.error("XML-RPC %s failed", name, exc_info=exc)
        return xmlrpc.client.Fault(INTERNAL, f"internal error: {exc!r}")


def _validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'params'}: {e.get('msg')}"
        for e in exc.errors()
    )


def _want(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise RequestError(f"{what} must be {getattr(kind, '__name__', kind)}, not {value!r}")
    return value


async def collected(response: StreamingResponse) -> list[dict[str, Any]]:
    """The records of an NDJSON answer, read to its end."""
    data = bytearray()
    async for chunk in response.body_iterator:
        data += chunk if isinstance(chunk, bytes | bytearray) else str(chunk).encode()
    return [json.loads(line) for line in bytes(data).splitlines() if line.strip()]


def _per_node(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A fan-out's answer: its per-node records and its summary line."""
    summary = next((r["summary"] for r in records if "summary" in r), None)
    return {"nodes": [r for r in records if "summary" not in r], "summary": summary}


# -- system ---------------------------------------------------------------------------------


@method("system.listMethods", ("array",))
async def _list_methods(request: Request) -> list[str]:
    """The names of every method."""
    return sorted(METHODS)


def _known(name: Any) -> Method:
    found = METHODS.get(_want(name, str, "the method name"))
    if found is None:
        raise RequestError(f"unknown method {name!r}")
    return found


@method("system.methodHelp", ("string", "string"))
async def _method_help(request: Request, name: str) -> str:
    """The help text of method NAME."""
    return _known(name).help


@method("system.methodSignature", ("array", "string"))
async def _method_signature(request: Request, name: str) -> list[list[str]]:
    """The signatures of method NAME: each [return type, parameter types...]."""
    return [list(s) for s in _known(name).signatures]


@method("system.multicall", ("array", "array"))
async def _multicall(request: Request, calls: list[Any]) -> list[Any]:
    """Several calls in one request, in order: each [result] or a fault struct.

    CALLS is an array of {"methodName": NAME, "params": [...]}; each is
    checked on its own (a read-only token may batch read methods).
    """
    out: list[Any] = []
    for call in _want(calls, list, "calls"):
        if not isinstance(call, dict) or not isinstance(call.get("methodName"), str):
            out.append({"faultCode": NOT_A_CALL, "faultString": "not a call struct"})
            continue
        name, params = call["methodName"], call.get("params", [])
        if name == "system.multicall" or not isinstance(params, list):
            answer: Any = xmlrpc.client.Fault(NOT_A_CALL, f"{name}: not allowed in a multicall")
        else:
            answer = await dispatch(request, name, tuple(params))
        if isinstance(answer, xmlrpc.client.Fault):
            out.append({"faultCode": answer.faultCode, "faultString": answer.faultString})
        else:
            out.append(list(answer))
    return out


# -- the service ----------------------------------------------------------------------------


@method("service.status", ("struct",))
async def _status(request: Request) -> Any:
    """The service: pid, version, protocol, uptime, links, apps, schedules, events."""
    return await routes.status(request)


@method("events.read", ("array",), ("array", "int"), ("array", "int", "int"),
        ("array", "int", "int", "string"), ("array", "int", "int", "string", "string"))  # fmt: skip
async def _events(
    request: Request,
    after: int = -1,
    limit: int = 0,
    topic: str = "",
    node: str = "",
) -> list[dict[str, Any]]:
    """Stored events after sequence AFTER (-1: the newest LIMIT), at most LIMIT (0: default).

    TOPIC and NODE filter ("" for any). A {"lost": ...} record comes first when
    retention pruned events after AFTER.
    """
    response = await routes.events(
        request,
        after=None if _want(after, int, "after") < 0 else after,
        follow=False,
        node=_want(node, str, "node") or None,
        topic=_want(topic, str, "topic") or None,
        limit=_want(limit, int, "limit") or None,
    )
    return await collected(response)


@method("service.stop", ("struct",), writes=True)
async def _stop(request: Request) -> Any:
    """Stop the service (it answers first)."""
    return await routes.stop_service(request)


# -- nodes, runs, programs ------------------------------------------------------------------


@method("nodes.list", ("array",), ("array", "string"))
async def _nodes(request: Request, selection: str = "") -> Any:
    """The nodes (of SELECTION; all when empty): link state and reason, failed reason, facts."""
    return await noderoutes.nodes(request, _want(selection, str, "selection") or None)


@method("nodes.failed", ("array",))
async def _failed(request: Request) -> Any:
    """The failed set: name, reason, since, updated."""
    return await noderoutes.failed_nodes(request)


def _run_request(selection: str, command: str, options: dict[str, Any] | None) -> Any:
    return noderoutes.RunRequest(
        selection=_want(selection, str, "selection") or None,
        command=_want(command, str, "command"),
        options=_want(options, dict, "options") or {},
    )


@method("runs.run", ("struct", "string", "string"), ("struct", "string", "string", "struct"),
        writes=True)  # fmt: skip
async def _run(
    request: Request, selection: str, command: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run COMMAND on the nodes of SELECTION ("" for every node) and wait for all.

    OPTIONS: timeout, parallel, env, sudo, retries, connect_timeout, delay.
    Answers {"nodes": [run --json records], "summary": {nodes, kinds, ok, duration}}.
    """
    body = _run_request(selection, command, options)
    response = await runroutes.runs(request, body, stream=True)
    assert isinstance(response, StreamingResponse)
    return _per_node(await collected(response))


@method("runs.start", ("struct", "string", "string"), ("struct", "string", "string", "struct"),
        writes=True)  # fmt: skip
async def _run_start(
    request: Request, selection: str, command: str, options: dict[str, Any] | None = None
) -> Any:
    """Start COMMAND on the nodes of SELECTION; answers at once {"id", "href", "state"}.

    Follow it with runs.get(ID). OPTIONS as runs.run's.
    """
    body = _run_request(selection, command, options)
    response = await runroutes.runs(request, body, stream=False)
    return json.loads(bytes(response.body))


@method("runs.get", ("struct", "string"))
async def _run_get(request: Request, run_id: str) -> Any:
    """Run ID: its state, request, summary or error, and the per-node records so far."""
    return jobs.jobs(request).get("run", _want(run_id, str, "the run id")).as_json()


async def _proc(request: Request, action: str, **fields: Any) -> dict[str, Any]:
    body = noderoutes.ProcRequest(**fields)
    return _per_node(await collected(await noderoutes.proc(request, action, body)))


@method("proc.status", ("struct", "string"), ("struct", "string", "string"))
async def _proc_status(request: Request, selection: str, name: str = "") -> Any:
    """Programs on the nodes of SELECTION (NAME alone when given), per node."""
    return await _proc(request, "status", selection=selection or None, name=name or None)


@method("proc.start", ("struct", "string", "struct"), writes=True)
async def _proc_start(request: Request, selection: str, spec: dict[str, Any]) -> Any:
    """Start the program SPEC ({"name", "command", ...}) on the nodes of SELECTION."""
    return await _proc(request, "start", selection=selection or None, spec=spec)


@method("proc.stop", ("struct", "string", "string"), writes=True)
async def _proc_stop(request: Request, selection: str, name: str) -> Any:
    """Stop program NAME on the nodes of SELECTION."""
    return await _proc(request, "stop", selection=selection or None, name=name)


@method("proc.restart", ("struct", "string", "string"), writes=True)
async def _proc_restart(request: Request, selection: str, name: str) -> Any:
    """Restart program NAME on the nodes of SELECTION."""
    return await _proc(request, "restart", selection=selection or None, name=name)


@method("proc.logs", ("struct", "string", "string"), ("struct", "string", "string", "int"))
async def _proc_logs(request: Request, selection: str, name: str, lines: int = 50) -> Any:
    """The last LINES lines of program NAME's log on the nodes of SELECTION."""
    return await _proc(request, "logs", selection=selection or None, name=name, lines=lines)


# -- applications ---------------------------------------------------------------------------


@method("apps.list", ("array",))
async def _apps(request: Request) -> Any:
    """Every application in the state, with the keeper's last round of it."""
    return await approutes.apps(request)


@method("apps.status", ("struct", "string"))
async def _app_status(request: Request, name: str) -> Any:
    """Application NAME's status from its agents (app status --json)."""
    return await approutes.app_status(request, _want(name, str, "name"))


@method("apps.up", ("struct", "string"), ("struct", "string", "struct"), writes=True)
async def _app_up(request: Request, spec: str, select: dict[str, str] | None = None) -> Any:
    """Bring the application of spec file SPEC (a path on the service's machine) up.

    SELECT overrides components' selections ({COMPONENT: EXPR}). Returns at
    once; follow with events.read (topic "app") or apps.status.
    """
    body = approutes.UpRequest(spec=spec, select=select or None)
    return await approutes.app_up(request, body)


@method("apps.down", ("struct", "string"), writes=True)
async def _app_down(request: Request, name: str) -> Any:
    """Take application NAME down (its processes stopped, its files removed)."""
    return await approutes.app_down(request, _want(name, str, "name"))


@method("apps.sweep", ("struct",), writes=True)
async def _sweep(request: Request) -> Any:
    """Sweep the managed nodes, then one keeper round over every kept application, now."""
    return await approutes.sweep(request)


# -- content --------------------------------------------------------------------------------


@method("pushes.start", ("struct", "string", "string", "string"),
        ("struct", "string", "string", "string", "struct"), writes=True)  # fmt: skip
async def _push_start(
    request: Request,
    source_dir: str,
    remote_dir: str,
    selection: str,
    options: dict[str, Any] | None = None,
) -> Any:
    """Push SOURCE_DIR (on the service's machine) to REMOTE_DIR on the nodes of SELECTION.

    Answers at once {"id", "href", "state"}; follow with pushes.get(ID).
    OPTIONS are push options (pack, keep, rate_limit, source_rate...).
    """
    body = pushroutes.PushRequest(
        source_dir=source_dir,
        remote_dir=remote_dir,
        selection=_want(selection, str, "selection") or None,
        options=_want(options, dict, "options") or {},
    )
    return json.loads(bytes((await pushroutes.pushes(request, body)).body))


@method("pushes.get", ("struct", "string"))
async def _push_get(request: Request, push_id: str) -> Any:
    """Push ID: its state, latest progress per node and, once over, each node's record."""
    return await pushroutes.show_push(request, _want(push_id, str, "the push id"))


@method("content.versions", ("array", "string"), ("array", "string", "string"))
async def _versions(request: Request, remote_dir: str, selection: str = "") -> Any:
    """Each node's current and kept versions of REMOTE_DIR (of SELECTION's nodes)."""
    return await pushroutes.versions(
        request, _want(remote_dir, str, "remote_dir"), _want(selection, str, "selection") or None
    )


@method("content.rollback", ("array", "string", "string"),
        ("array", "string", "string", "string"), writes=True)  # fmt: skip
async def _rollback(request: Request, remote_dir: str, selection: str, to: str = "") -> Any:
    """Switch REMOTE_DIR back on the nodes of SELECTION (to version TO, else the previous)."""
    body = pushroutes.RollbackRequest(
        remote_dir=remote_dir, selection=_want(selection, str, "selection") or None, to=to or None
    )
    return await pushroutes.rollback(request, body)
