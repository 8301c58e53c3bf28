"""The XML-RPC adapter's pure parts: the wire (hostile bodies refused), types, faults, scopes."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from types import SimpleNamespace
from typing import Any

import pytest

from shoal.errors import ConnectError, RequestError, SelectionSyntaxError, UsageError
from shoal.service import xmlrpc as rpc


def call(name: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, name, allow_none=True).encode()


def test_a_call_is_read_with_its_params() -> None:
    params, name = rpc.loads(call("proc.start", "web", {"name": "x", "command": ["a"]}, 3))
    assert name == "proc.start"
    assert params == ("web", {"name": "x", "command": ["a"]}, 3)


@pytest.mark.parametrize(
    "body",
    [
        # a harmless internal entity: xmlrpc.client.loads would read "nodes.list"
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY n "nodes.list">]>'
        b"<methodCall><methodName>&n;</methodName></methodCall>",
        # billion laughs
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
        )
        + b"]><methodCall><methodName>&j;</methodName></methodCall>",
        # an external entity
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>&x;</methodName></methodCall>",
        # a parameter entity pulling an external DTD
        b'<?xml version="1.0"?><!DOCTYPE m SYSTEM "http://127.0.0.1:9/evil.dtd">'
        b"<methodCall><methodName>a</methodName></methodCall>",
    ],
)
def test_any_document_type_declaration_is_refused(body: bytes) -> None:
    with pytest.raises(RequestError, match="document type declarations are not accepted"):
        rpc.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b"<methodCall><methodName>x",
        b"\x00junk",
        b"",
        b"<methodCall><params></params></methodCall>",
        xmlrpc.client.dumps(("a",), methodresponse=True).encode(),
        b"<methodCall><methodName>a</methodName><params><param><value><int>x</int>"
        b"</value></param></params></methodCall>",
    ],
)
def test_bad_bodies_are_refused_in_one_line(body: bytes) -> None:
    with pytest.raises(RequestError) as refused:
        rpc.loads(body)
    assert "\n" not in str(refused.value)


def test_values_go_out_in_xmlrpc_types() -> None:
    value = rpc.wire({"big": 5 << 40, "small": -7, "ok": True, "none": None, 3: (1.5, "s")})
    assert value == {"big": float(5 << 40), "small": -7, "ok": True, "none": None, "3": [1.5, "s"]}
    assert isinstance(value["big"], float)
    xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True)  # no OverflowError


def test_library_errors_are_faults_with_the_cli_kind_and_a_stable_code() -> None:
    fault = rpc.fault_of(ConnectError("connection refused", node="n3"))
    assert (fault.faultCode, fault.faultString) == (9, "unreachable: n3: connection refused")
    syntax = rpc.fault_of(SelectionSyntaxError("web[", 4, "expected an attribute name"))
    assert syntax.faultCode == rpc.FAULT_CODES["selection"]
    assert syntax.faultString.startswith("selection: ")
    assert len(set(rpc.FAULT_CODES.values())) == len(rpc.FAULT_CODES)


def fake_request(scope: str | None) -> Any:
    return SimpleNamespace(state=SimpleNamespace(scope=scope) if scope else SimpleNamespace())


def test_a_read_token_may_call_read_methods_only() -> None:
    reader = fake_request("read")
    for name, found in rpc.METHODS.items():
        if not found.writes:
            continue
        answer = asyncio.run(rpc.dispatch(reader, name, ()))
        assert isinstance(answer, xmlrpc.client.Fault) and answer.faultCode == rpc.FORBIDDEN, name
    assert asyncio.run(rpc.dispatch(reader, "system.listMethods", ())) == (sorted(rpc.METHODS),)
    calls = [{"methodName": "apps.down", "params": ["x"]}, {"methodName": "system.listMethods"}]
    batch = asyncio.run(rpc.dispatch(reader, "system.multicall", (calls,)))
    assert isinstance(batch, tuple)
    assert batch[0][0]["faultCode"] == rpc.FORBIDDEN and batch[0][1] == [sorted(rpc.METHODS)]


def test_every_method_that_starts_or_changes_something_is_marked_writes() -> None:
    writes = {n for n, m in rpc.METHODS.items() if m.writes}
    assert writes == {
        "apps.up", "apps.down", "apps.sweep", "proc.start", "proc.stop", "proc.restart",
        "runs.run", "runs.start", "pushes.start", "content.rollback", "service.stop",
    }  # fmt: skip


def test_unknown_methods_and_bad_arity_are_protocol_faults() -> None:
    req = fake_request("admin")
    unknown = asyncio.run(rpc.dispatch(req, "nope", ()))
    assert isinstance(unknown, xmlrpc.client.Fault) and unknown.faultCode == rpc.UNKNOWN_METHOD
    arity = asyncio.run(rpc.dispatch(req, "system.methodHelp", ("a", "b")))
    assert isinstance(arity, xmlrpc.client.Fault) and arity.faultCode == rpc.BAD_PARAMS
    typed = asyncio.run(rpc.dispatch(req, "system.methodHelp", (3,)))
    assert isinstance(typed, xmlrpc.client.Fault) and typed.faultCode == rpc.BAD_PARAMS
    assert "must be str" in typed.faultString


def test_every_method_has_help_and_a_signature_matching_its_parameters() -> None:
    import inspect

    for name, found in rpc.METHODS.items():
        assert found.help, name
        params = list(inspect.signature(found.call).parameters.values())[1:]
        least = sum(1 for p in params if p.default is inspect.Parameter.empty)
        for signature in found.signatures:
            assert least <= len(signature) - 1 <= len(params), (name, signature)


def test_usage_error_from_a_method_is_a_usage_fault() -> None:
    assert rpc.fault_of(UsageError("bad")).faultString == "usage: bad"
