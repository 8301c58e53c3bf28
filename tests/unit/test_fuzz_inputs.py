"""Hostile inputs fuzzed with hypothesis (issue 17 part 2): never a traceback, never a hang.

Each parser a node, peer, client or user can feed is given thousands of generated
inputs, biased towards its own syntax; the only exception allowed out is the one
the parser documents (a ShoalError, ManifestError, ProtocolError, ConnectionError),
and every case must end within hypothesis's deadline. The chunk server gets random
request lines over a real loopback socket and must answer a good request after them.
Counts: FUZZ_EXAMPLES (default 1000 per parser, 7000 cases in all; the bench-sized run is
FUZZ_EXAMPLES=10000).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.agent import manifest as mf
from shoal.agent import protocol
from shoal.agent.chunkfetch import FetchResult, _sizes
from shoal.agent.chunkserver import ChunkServer, StoreBackend
from shoal.agent.chunkstore import ChunkStore
from shoal.errors import ShoalError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per case: a parser that hangs fails here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

#: JSON values of any shape, nested a little.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


def _mix(alphabet: str, words: list[str]) -> st.SearchStrategy[str]:
    """Text made of a syntax's own characters and keywords, plus anything at all."""
    piece = st.sampled_from(words) | st.text(alphabet=alphabet, min_size=1, max_size=6)
    grammar = st.lists(piece, max_size=30).map("".join)
    return grammar | st.text(max_size=60)


SELECTION = _mix(
    "abn0123456789[]-,.@&|^()=<>!~*?' \"\t:%$",
    ["all", "failed", "lab", "n[1-4]", "[site=eu]", " & ", " - ", " | ", "(", ")", "top(", "@"],
)


@FUZZ
@given(SELECTION)
def test_selection_grammar_never_crashes(text: str) -> None:
    from shoal.nodes.grammar import parse

    try:
        parse(text)
    except ShoalError as exc:
        assert "\n" not in str(exc).split("\n", 1)[0]


YAMLISH = _mix(
    "abcn: -\n[]{}&*!|>'\"#%@`0123456789.",
    [
        "app: x\n",
        "components:\n",
        "  c:\n",
        "    select: all\n",
        "    steps:\n",
        "      - run: ",
        "software:\n",
        "barriers:\n",
        "&a ",
        "*a",
        "!!python/object ",
        "{",
        "[",
        "after: ",
        "    count: ",
        "1e999",
        ".nan",
        "${",
        "}",
    ],
)


@FUZZ
@given(YAMLISH)
def test_spec_loader_never_crashes(text: str) -> None:
    from shoal.app.appspec import build
    from shoal.app.located import loads

    try:
        build(loads(text), Path("/nonexistent"))
    except ShoalError:
        pass


XMLISH = _mix(
    "<>/=\"' abcdefghijklmnopqrstuvwxyz&;!-[]",
    [
        "<project name='p'>",
        "</project>",
        "<software name='s'>",
        "</software>",
        "<component name='c'>",
        "</component>",
        "<process name='x'>",
        "<path>",
        "</path>",
        "<!DOCTYPE x [<!ENTITY a 'b'>]>",
        "&a;",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
    ],
)


@FUZZ
@given(XMLISH)
def test_plush_importer_never_crashes(text: str) -> None:
    from shoal.app.plush import import_plush

    try:
        import_plush(text)
    except ShoalError:
        pass


def _entry() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["a", "b/c", "../x", "/etc", ".", "", "a\x00b", "a\nb", "l"])
    return st.fixed_dictionaries(
        {},
        optional={
            "path": names | st.text(max_size=10),
            "kind": st.sampled_from(["f", "d", "l", "c", "b", "p", ""]) | JSON,
            "mode": st.integers(-10, 0o177777) | JSON,
            "size": st.integers(-5, 1 << 70) | JSON,
            "chunks": st.lists(st.lists(JSON, max_size=3), max_size=3) | JSON,
            "target": names | JSON,
        },
    )


MANIFESTS = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"v": st.integers(0, 3) | JSON, "entries": st.lists(_entry(), max_size=6) | JSON},
        optional={"packs": JSON},
    ).map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(MANIFESTS)
def test_manifest_parser_never_crashes(data: bytes) -> None:
    try:
        mf.validate(mf.parse(data))
    except mf.ManifestError:
        pass


MESSAGES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"v": st.integers(0, 3) | JSON, "id": JSON, "op": st.sampled_from(["hello", "x"]) | JSON},
        optional={"args": JSON, "ok": JSON, "result": JSON, "error": JSON, "kind": JSON},
    ).map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(MESSAGES)
def test_agent_protocol_decoder_never_crashes(line: bytes) -> None:
    try:
        message = protocol.decode(line)
        protocol.check_request(message)
    except protocol.ProtocolError:
        pass
    try:
        protocol.check_reply(protocol.decode(line), 1)
    except protocol.ProtocolError:
        pass


HEADERS = st.one_of(
    st.binary(max_size=120),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"n": st.lists(JSON, max_size=4) | JSON, "error": JSON}).map(
        lambda v: json.dumps(v).encode()
    ),
)


@FUZZ
@given(HEADERS)
def test_chunk_answer_header_decoder_never_crashes(head: bytes) -> None:
    pending = [("0" * 64, 10), ("1" * 64, 20)]
    try:
        _sizes(head, pending, FetchResult())
    except ConnectionError:
        pass


REQUESTS = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.integers(0, 2) | JSON,
            "token": st.sampled_from(["k" * 32, "bad"]) | JSON,
            "want": st.lists(st.text(max_size=70) | JSON, max_size=5) | JSON,
        },
    ).map(lambda v: json.dumps(v).encode() + b"\n"),
)


@settings(FUZZ, max_examples=max(50, EXAMPLES // 4))
@given(st.lists(REQUESTS, min_size=1, max_size=3))
def test_chunk_server_survives_any_request_and_still_serves(
    tmp_path_factory: Any, lines: list[bytes]
) -> None:
    data = b"chunk bytes"
    digest = hashlib.sha256(data).hexdigest()
    store = ChunkStore(tmp_path_factory.mktemp("store"))
    store.put(digest, data, "v1")

    async def go() -> bytes:
        server = ChunkServer(StoreBackend(store))
        server.tokens.add("k" * 32)
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for line in lines:
                writer.write(line)
            await writer.drain()
            # whatever came back is JSON lines or bodies; the server then hangs up or waits
            try:
                await asyncio.wait_for(reader.read(1 << 16), 0.5)
            except (TimeoutError, asyncio.TimeoutError, ConnectionError):
                pass
            writer.close()
            good = json.dumps({"v": 1, "token": "k" * 32, "want": [digest]}).encode() + b"\n"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(good)
            head = await asyncio.wait_for(reader.readline(), 5)
            body = await asyncio.wait_for(reader.readexactly(len(data)), 5)
            writer.close()
            return head + body
        finally:
            server.close()

    answer = asyncio.run(go())
    assert answer == json.dumps({"n": [len(data)]}).encode() + b"\n" + data or answer.endswith(
        data
    ), answer
