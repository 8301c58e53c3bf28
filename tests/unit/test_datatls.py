"""The chunk wire over TLS with pinned certificates (loopback sockets, real TLS)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
from pathlib import Path

import pytest

from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkserver import ChunkServer, StoreBackend, chunk_sources
from shoal.agent.chunkstore import ChunkStore
from shoal.agent.tlspin import pem_fingerprint
from shoal.content.datatls import make_identity

TOKEN = "k" * 32


def _serve(tmp_path: Path, chunks: list[bytes]) -> tuple[ChunkServer, str]:
    store = ChunkStore(tmp_path / "s")
    digests = []
    for data in chunks:
        digest = hashlib.sha256(data).hexdigest()
        store.put(digest, data, "v")
        digests.append(digest)
    ident = make_identity("n1")
    server = ChunkServer(StoreBackend(store), tls=ident.context(), fingerprint=ident.fingerprint)
    server.tokens.add(TOKEN)
    return server, ident.fingerprint


def test_identity_fingerprint_is_the_certificates_and_keys_never_touch_disk(
    tmp_path: Path,
) -> None:
    ident = make_identity("n1")
    assert ident.fingerprint == pem_fingerprint(ident.cert_pem)
    assert make_identity("n1").fingerprint != ident.fingerprint  # fresh per push
    assert "PRIVATE KEY" in ident.key_pem and set(ident.wire()) == {"cert", "key"}
    ident.context()
    assert not list(tmp_path.iterdir())


def test_tls_fetch_with_the_pin_gets_verified_chunks(tmp_path: Path) -> None:
    async def go() -> None:
        blobs = [os.urandom(300_000), os.urandom(70_000)]
        server, pin = _serve(tmp_path, blobs)
        port = await server.start("127.0.0.1")
        want = [(hashlib.sha256(b).hexdigest(), len(b)) for b in blobs]
        dst = ChunkStore(tmp_path / "d")
        fetcher = Fetcher(dst)
        got = await fetcher.fetch("127.0.0.1", port, TOKEN, want, pin=pin)
        assert got.error == "" and sorted(got.got) == sorted(h for h, _ in want)
        assert dst.read(want[0][0]) == blobs[0]
        fetcher.close()
        server.close()

    asyncio.run(go())


def test_a_server_with_another_certificate_is_refused_before_the_token_leaves(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        blob = os.urandom(50_000)
        server, _ = _serve(tmp_path, [blob])
        port = await server.start("127.0.0.1")
        other = make_identity("impostor").fingerprint
        got = await Fetcher(ChunkStore(tmp_path / "d")).fetch(
            "127.0.0.1", port, TOKEN, [(hashlib.sha256(blob).hexdigest(), len(blob))], pin=other
        )
        assert got.lying and not got.got
        assert "is not the pinned" in got.error and "\n" not in got.error
        assert server.used == {}  # no request with the token ever reached it
        server.close()

    asyncio.run(go())


def test_a_plain_client_gets_no_chunk_bytes_from_a_tls_server(tmp_path: Path) -> None:
    async def go() -> None:
        blob = b"MARKER-" * 10_000
        server, _ = _serve(tmp_path, [blob])
        port = await server.start("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        want = [hashlib.sha256(blob).hexdigest()]
        writer.write(json.dumps({"v": 1, "token": TOKEN, "want": want}).encode() + b"\n")
        seen = await asyncio.wait_for(reader.read(), 10)  # the server drops a non-TLS peer
        assert b"MARKER" not in seen and server.used == {}
        writer.close()
        server.close()

    asyncio.run(go())


def test_sources_carry_an_optional_pin_and_refuse_a_bad_one() -> None:
    pin = "ab" * 32
    assert chunk_sources([["h", 1], ["g", 2, pin]]) == [("h", 1, ""), ("g", 2, pin)]
    with pytest.raises(ValueError, match="fingerprint"):
        chunk_sources([["h", 1, "not-a-pin"]])


def test_a_bad_key_is_one_clear_error(tmp_path: Path) -> None:
    from shoal.agent.tlspin import server_context

    ident = make_identity("n1")
    with pytest.raises(ValueError, match="bad TLS key or certificate"):
        server_context(ident.cert_pem, make_identity("x").key_pem, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tls-")]
    assert isinstance(server_context(ident.cert_pem, ident.key_pem, tmp_path), ssl.SSLContext)
