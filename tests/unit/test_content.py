"""Content push, pure logic: chunking, manifests, path safety, assembly, scheduling, tokens."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from pathlib import Path

import pytest

from shoal.agent import manifest as mf
from shoal.agent.activate import Area, AreaError
from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkserver import ChunkServer, StoreBackend
from shoal.agent.chunkstore import ChunkError, ChunkStore
from shoal.content.scan import ChunkParams, cut_bytes, scan
from shoal.content.swarm import SOURCE, Swarm
from shoal.errors import ContentError

H = "a" * 64


def rand(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


# -- chunking -------------------------------------------------------------------------


def test_chunk_boundaries_survive_an_insertion() -> None:
    data = rand(4_000_000)
    before = cut_bytes(data)
    edited = data[:2_000_000] + b"inserted bytes" + data[2_000_000:]
    after = cut_bytes(edited)
    assert sum(n for _, n in after) == len(edited)
    new = {h for h, _ in after} - {h for h, _ in before}
    moved = sum(n for h, n in after if h in new)
    # only the chunk(s) around the edit change, not everything after it
    assert len(new) <= 2
    assert moved <= 2 * ChunkParams().max
    sizes = [n for _, n in before[:-1]]
    assert min(sizes) >= ChunkParams().min and max(sizes) <= ChunkParams().max


def test_cutting_is_deterministic_and_small_data_is_one_chunk() -> None:
    data = rand(500_000, seed=7)
    assert cut_bytes(data) == cut_bytes(bytes(data))
    assert cut_bytes(b"tiny") == [(hashlib.sha256(b"tiny").hexdigest(), 4)]
    assert cut_bytes(b"") == []


# -- manifests and path safety ---------------------------------------------------------


def manifest(*entries: mf.Entry) -> mf.Manifest:
    return mf.Manifest(list(entries))


def f(path: str, data: bytes = b"x", mode: int = 0o644) -> mf.Entry:
    return mf.Entry(path, "f", mode, len(data), [(hashlib.sha256(data).hexdigest(), len(data))])


def d(path: str) -> mf.Entry:
    return mf.Entry(path, "d", 0o755)


def link(path: str, target: str) -> mf.Entry:
    return mf.Entry(path, "l", 0o777, target=target)


def test_manifest_round_trips_and_its_version_is_stable() -> None:
    m = manifest(d("a"), f("a/b", b"hello"), link("c", "a/b"), f("d"))
    data = m.to_bytes()
    again = mf.parse(data)
    assert again.to_bytes() == data
    assert again.version == m.version == mf.version_of(data)
    assert mf.is_version(m.version)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ((f("../evil"),), "'..'"),
        ((f("/etc/passwd"),), "absolute"),
        ((d("a"), f("a/./b")), "'..'"),
        ((f("a//b"),), "'..'"),
        ((f("a/b"),), "not a directory"),  # parent missing
        ((link("a", "."), f("a/b")), "not a directory"),  # writing through a symlink
        ((f("b"), f("a")), "out of order"),
        ((f("a"), f("a")), "out of order"),
        ((link("l", "../outside"),), "escapes"),
        ((link("l", "/etc"),), "absolute"),
        ((d("x"), link("x/up", ".."), link("y", "x/up/..")), "escapes"),  # escape via a link
        ((link("a", "b"), link("b", "a")), "loop"),
    ],
)
def test_unsafe_manifests_are_rejected(entries: tuple[mf.Entry, ...], message: str) -> None:
    with pytest.raises(mf.ManifestError, match=message):
        mf.validate(manifest(*entries))


def test_links_that_stay_inside_are_accepted() -> None:
    mf.validate(manifest(d("a"), d("a/b"), link("a/b/up", "../.."), link("a/l", "b/up/a")))


def test_parse_rejects_sizes_that_do_not_add_up_and_bad_hashes() -> None:
    good = json.loads(manifest(f("a", b"abc")).to_bytes())
    good["entries"][0]["n"] = 4
    with pytest.raises(mf.ManifestError, match="add up"):
        mf.parse(json.dumps(good).encode())
    good["entries"][0]["c"] = [["nothex", 4]]
    with pytest.raises(mf.ManifestError, match="sha256"):
        mf.parse(json.dumps(good).encode())
    good["entries"][0]["c"] = [[H + "\n" + H, 2], [H[:32] + "\n" + H[:31], 2]]
    with pytest.raises(mf.ManifestError, match="sha256"):  # ids checked in one regex
        mf.parse(json.dumps(good).encode())
    good["entries"][0]["c"] = [[H, 2], [H, True]]
    with pytest.raises(mf.ManifestError, match="chunk size"):
        mf.parse(json.dumps(good).encode())


def test_a_saved_manifest_that_does_not_hash_to_its_version_is_ignored(tmp_path: Path) -> None:
    m = manifest(f("a", b"abc"))
    area = Area(tmp_path / "site")
    area.save_manifest(m.version, m.to_bytes())
    assert area.manifest(m.version) == m
    (area.manifests / f"{m.version}.json").write_bytes(m.to_bytes() + b" ")
    assert area.manifest(m.version) is None  # parses, but is not that version: refetched


def test_setuid_and_setgid_are_dropped_unless_asked() -> None:
    assert mf.file_mode(0o104755) == 0o755
    assert mf.file_mode(0o6755) == 0o755
    assert mf.file_mode(0o6755, allow_setuid=True) == 0o6755


# -- scanning ----------------------------------------------------------------------------


def tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "big").write_bytes(rand(300_000))
    (root / "sub" / "small.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("sub/small.txt")
    return root


def test_scan_is_deterministic_and_refuses_escaping_links(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    one, two = scan(root), scan(root)
    assert one.version == two.version
    paths = [e.path for e in one.manifest.entries]
    assert paths == ["big", "empty", "link", "sub", "sub/small.txt"]
    assert one.total_bytes == 300_006
    packed = scan(root, pack=True)
    assert packed.version != one.version and len(packed.manifest.packs) == 1
    (root / "bad").symlink_to("../../etc")
    with pytest.raises(ContentError, match="escapes"):
        scan(root)


# -- assembly, switch, rollback ------------------------------------------------------------


def stored(tmp_path: Path, source: Path, pack: bool = False) -> tuple[mf.Manifest, ChunkStore]:
    t = scan(source, pack=pack)
    store = ChunkStore(tmp_path / "store")
    for digest, _ in t.chunks:
        data = t.blobs.get(digest)
        if data is None:
            path, offset, size = t.locations[digest]
            data = path.read_bytes()[offset : offset + size]
        store.put(digest, data, t.version)
    return t.manifest, store


@pytest.mark.parametrize("pack", [False, True])
def test_assemble_switch_gc_and_rollback(tmp_path: Path, pack: bool) -> None:
    src = tree(tmp_path / "src")
    (src / "sub" / "small.txt").chmod(0o4755)
    m1, store = stored(tmp_path, src, pack)
    area = Area(tmp_path / "node" / "site")
    (tmp_path / "node").mkdir()
    assert area.current() is None
    area.assemble(m1, m1.version, store)
    assert area.switch(m1.version) is None
    site = tmp_path / "node" / "site"
    assert (site / "big").read_bytes() == (src / "big").read_bytes()
    assert os.readlink(site / "link") == "sub/small.txt"
    assert (site / "sub" / "small.txt").stat().st_mode & 0o7777 == 0o755  # setuid dropped
    # a second version reuses the first one's files: nothing needed from the store
    (src / "big").write_bytes((src / "big").read_bytes()[:150_000] + b"edit")
    m2, full = stored(tmp_path / "other", src, pack)
    old = {h for h, _ in m1.unique_chunks()}
    partial = ChunkStore(tmp_path / "partial")
    for h, _ in m2.unique_chunks():
        if h not in old:
            partial.put(h, full.read(h), m2.version)
    counts = area.assemble(m2, m2.version, partial)
    assert pack or counts["reused"] >= 150_000 - ChunkParams().max
    assert area.switch(m2.version) == m1.version
    assert area.current() == m2.version and area.kept() == [m1.version, m2.version]
    assert area.pick(None) == m1.version
    area.switch(area.pick(None), "rollback")
    assert (site / "big").stat().st_size == 300_000
    assert area.gc(1) == [m2.version]
    with pytest.raises(AreaError, match="no earlier version"):
        area.pick(None)


def test_unchanged_files_are_linked_and_touched_ones_are_not(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    (src / "other").write_bytes(rand(50_000, seed=9))
    m1, store = stored(tmp_path, src)
    area = Area(tmp_path / "site")
    area.assemble(m1, m1.version, store)
    area.switch(m1.version)
    v1 = area.versions / m1.version
    os.utime(v1 / "other", ns=(1, 1))  # an application touched this one
    (src / "new").write_text("n")
    m2, full = stored(tmp_path / "o", src)
    counts = area.assemble(m2, m2.version, full)
    v2 = area.versions / m2.version
    assert (v2 / "big").stat().st_ino == (v1 / "big").stat().st_ino
    assert (v2 / "other").stat().st_ino != (v1 / "other").stat().st_ino
    assert counts["linked"] == 300_000 + 6


def test_a_foreign_directory_is_never_clobbered(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mine").write_text("x")
    with pytest.raises(AreaError, match="not a Shoal deployment"):
        Area(tmp_path / "site").current()


def test_a_local_file_changed_since_its_version_is_fetched_instead(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    m1, store = stored(tmp_path, src)
    area = Area(tmp_path / "site")
    area.assemble(m1, m1.version, store)
    area.switch(m1.version)
    # an application scribbles on the deployed file; the next version must not copy it
    victim = tmp_path / "site" / "big"
    victim.chmod(0o644)
    victim.write_bytes(b"\0" * 300_000)
    (src / "new").write_text("n")
    m2, _ = stored(tmp_path / "o", src)
    with pytest.raises(Exception, match="changed on disk") as info:
        area.assemble(m2, m2.version, ChunkStore(tmp_path / "none"))
    assert info.value.chunks  # type: ignore[attr-defined]
    assert area.current() == m1.version and not (area.staging / m2.version).exists()


def test_store_survives_a_restart_and_rehashes_what_it_reloads(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "s")
    data = rand(70_000)
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data, "v1")
    store.close()
    again = ChunkStore(tmp_path / "s")
    assert again.has(digest) and again.read(digest) == data
    with open(tmp_path / "s" / "v1.data", "r+b") as handle:
        handle.write(b"X")
    third = ChunkStore(tmp_path / "s")
    with pytest.raises(OSError, match="damaged"):
        third.read(digest)
    assert third.prune() == 0 and not (tmp_path / "s" / "v1.data").exists()


def test_placed_chunks_become_the_deployed_file_without_a_copy(tmp_path: Path) -> None:
    from shoal.agent.pushsession import placements

    src = tree(tmp_path / "src")
    block = rand(120_000, seed=7)
    (src / "twice").write_bytes(block + block + b"tail")  # repeats: filled at commit
    (src / "twice").chmod(0o4755)
    t = scan(src)
    m = t.manifest
    store = ChunkStore(tmp_path / "store")
    store.plan(t.version, placements(m, minimum=0))
    chunks = m.unique_chunks()
    held = chunks[1]  # came with another push: copied in at commit

    def data_of(digest: str) -> bytes:
        path, offset, size = t.locations[digest]
        return path.read_bytes()[offset : offset + size]

    store.put(held[0], data_of(held[0]), "other")
    rest = [c for c in chunks if c != held]
    for i in range(0, len(rest), 3):
        batch = rest[i : i + 3]
        store.put_verified(batch, b"".join(data_of(h) for h, _ in batch), t.version)
    area = Area(tmp_path / "site")
    counts = area.assemble(m, m.version, store)
    area.switch(m.version)
    site = tmp_path / "site"
    for name in ("big", "twice"):
        assert (site / name).read_bytes() == (src / name).read_bytes()
        number = [e.path for e in m.entries].index(name)
        placed = tmp_path / "store" / f"{t.version}.f{number}"
        assert (site / name).stat().st_ino == placed.stat().st_ino  # linked, not copied
    assert (site / "twice").stat().st_mode & 0o7777 == 0o755  # setuid still dropped
    assert counts["stored"] == m.total_bytes
    # the same version in a second place: the store's file is live, so it is copied
    other = Area(tmp_path / "site2")
    other.assemble(m, m.version, store)
    copy = other.versions / m.version / "big"
    assert copy.read_bytes() == (src / "big").read_bytes()
    assert copy.stat().st_ino != (site / "big").stat().st_ino
    # after a restart, placed chunks are hashed again: a damaged one must be fetched
    store.close()
    fresh = tmp_path / "again"
    again = ChunkStore(fresh)
    again.plan("v2", placements(m, minimum=0))
    for h, _ in chunks:
        again.put(h, data_of(h), "v2")
    again.close()
    number = [e.path for e in m.entries].index("big")
    with open(fresh / f"v2.f{number}", "r+b") as handle:
        handle.write(b"X")
    reloaded = ChunkStore(fresh)
    reloaded.plan("v2", placements(m, minimum=0))
    with pytest.raises(AreaError, match="changed on disk") as info:
        Area(tmp_path / "site3").assemble(m, "v2", reloaded)
    assert info.value.chunks == [m.entries[number].chunks[0][0]]  # type: ignore[attr-defined]


def test_a_node_push_places_commits_by_linking_and_ends_without_waiting(tmp_path: Path) -> None:
    import zlib

    from shoal.agent.chunkserver import Backend
    from shoal.agent.pushsession import ContentService

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(rand(2_500_000, seed=3))
    t = scan(src)
    blob = zlib.compress(t.manifest.to_bytes())
    blob_hash = hashlib.sha256(blob).hexdigest()

    class Source(Backend):
        def lookup(self, digest: str) -> bytes | None:
            if digest == blob_hash:
                return blob
            spot = t.locations.get(digest)
            if spot is None:
                return None
            path, offset, size = spot
            return path.read_bytes()[offset : offset + size]

    async def go() -> None:
        server = ChunkServer(Source())
        server.tokens.add("k" * 32)
        port = await server.start("127.0.0.1")
        svc = ContentService(tmp_path / "home", lambda *a: None)
        site = str(tmp_path / "deploy" / "site")
        begin = await svc.dispatch(
            "content.begin",
            {
                "dir": site,
                "version": t.version,
                "blob": blob_hash,
                "blob_size": len(blob),
                "token": "k" * 32,
                "sources": [["127.0.0.1", port]],
                "bind": "127.0.0.1",
            },
        )
        missing = begin["missing"]
        for i in range(0, len(missing), 40):
            got = await svc.dispatch(
                "content.fetch",
                {
                    "version": t.version,
                    "source": ["127.0.0.1", port],
                    "chunks": missing[i : i + 40],
                },
            )
            assert not got["failed"], got
        done = await svc.dispatch("content.commit", {"version": t.version})
        assert done["current"] == t.version and done["stored"] == 2_500_000
        chunks = tmp_path / "home" / "chunks"
        deployed = Path(site) / "big.bin"
        assert deployed.read_bytes() == (src / "big.bin").read_bytes()
        assert deployed.stat().st_ino == (chunks / f"{t.version}.f0").stat().st_ino
        ended = await svc.dispatch("content.end", {"version": t.version})
        assert ended["ended"] and ended["pruned"] > 0
        assert not list(chunks.glob(f"{t.version}.*"))  # forgotten before the answer
        await asyncio.gather(*svc._unlinking)
        assert not list(chunks.iterdir())  # and deleted after it
        assert deployed.read_bytes() == (src / "big.bin").read_bytes()  # the version stays
        svc.close()
        server.close()

    asyncio.run(go())


def test_detach_forgets_a_bucket_at_once_and_leaves_the_unlinking(tmp_path: Path) -> None:
    from shoal.agent.chunkstore import unlink_all

    store = ChunkStore(tmp_path / "s")
    data = rand(50_000)
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data, "v1")
    removed, doomed = store.detach({"other"})
    assert removed == 1 and not store.has(digest) and len(doomed) == 2
    assert not (tmp_path / "s" / "v1.data").exists()  # renamed away at once
    store.put(digest, data, "v1")  # a bucket of the same name starts afresh
    unlink_all(doomed)
    assert store.read(digest) == data
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["v1.data", "v1.idx"]
    (tmp_path / "s" / ".x.gone").write_text("left by a crash")
    assert ChunkStore(tmp_path / "s").has(digest)
    assert not (tmp_path / "s" / ".x.gone").exists()


# -- the swarm -----------------------------------------------------------------------------


def test_the_source_stripes_each_chunk_once_then_peers_serve_the_rest() -> None:
    async def go() -> None:
        chunks = [(f"{i:064x}", 100_000) for i in range(12)]
        swarm = Swarm(chunks, batch_bytes=300_000, source_batch_bytes=300_000, source_uploads=3)
        nodes = ["n1", "n2", "n3"]
        swarm.expect(nodes)
        for i, n in enumerate(nodes):
            swarm.register(n, f"10.0.0.{i}", 9000, ("10.0.0.100", 1), range(12), [])
        first = [await swarm.next_batch(n) for n in nodes]
        assert all(b is not None and b.source == SOURCE for b in first)
        picked = [i for b in first if b for i in b.chunks]
        assert len(picked) == len(set(picked)) == 9  # different stripes, each chunk once
        for b in first:
            assert b is not None
            swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        stripe = await swarm.next_batch("n1")  # the source is kept busy first
        assert stripe is not None and stripe.source == SOURCE and stripe.chunks == [9, 10, 11]
        nxt = await swarm.next_batch("n1")  # one stripe per node at a time: now a peer
        assert nxt is not None and nxt.source in ("n2", "n3")
        # a lying peer is never used again, and its chunks come from elsewhere
        swarm.complete(nxt, {"got": [], "failed": nxt.chunks, "lying": True})
        liar = nxt.source
        assert swarm.peers[liar].lying
        swarm.complete(stripe, {"got": stripe.chunks, "bytes": stripe.nbytes, "seconds": 0.1})
        for _ in range(6):
            b = await swarm.next_batch("n1")
            if b is None:
                break
            assert b.source != liar
            swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        assert swarm.stats["n1"].rejected == 1

    asyncio.run(go())


def test_a_node_lacking_little_still_takes_the_last_stripes_from_the_source() -> None:
    """Its first missing chunks lie far behind the source's cursor: the source must
    not sit idle while unsourced chunks remain (it paused near the end of pushes)."""

    async def go() -> None:
        n = 4000
        swarm = Swarm([(f"{i:064x}", 100) for i in range(n)], source_batch_bytes=500)
        swarm.expect(["a", "b"])
        missing = [*range(600), *range(n - 10, n)]  # < n/4, most of it already sourced
        swarm.register("a", "h", 1, ("s", 1), missing, [])
        swarm.register("b", "h", 2, ("s", 1), [], range(n - 10))
        swarm.sourced.update(range(n - 10))
        b = await swarm.next_batch("a")
        assert b is not None and b.source == SOURCE and b.chunks == list(range(n - 10, n - 5))

    asyncio.run(go())


def test_a_dead_first_recipient_sends_its_chunks_back_to_the_source() -> None:
    async def go() -> None:
        chunks = [(f"{i:064x}", 100) for i in range(2)]
        swarm = Swarm(chunks, batch_bytes=100, source_batch_bytes=100, source_uploads=2)
        swarm.expect(["a", "b"])
        swarm.register("a", "h", 1, ("s", 1), [0, 1], [])
        swarm.register("b", "h", 2, ("s", 1), [0, 1], [])
        ba = await swarm.next_batch("a")
        assert ba is not None
        swarm.complete(ba, {"got": ba.chunks, "bytes": 100, "seconds": 0.1})
        swarm.node_failed("a")
        got = []
        for _ in range(2):
            b = await swarm.next_batch("b")
            assert b is not None and b.source == SOURCE
            got += b.chunks
            swarm.complete(b, {"got": b.chunks, "bytes": 100, "seconds": 0.1})
        assert sorted(got) == [0, 1]
        assert await swarm.next_batch("b") is None

    asyncio.run(go())


# -- the chunk endpoint ---------------------------------------------------------------------


def test_chunk_endpoint_needs_the_token_and_serves_only_store_ids(tmp_path: Path) -> None:
    async def go() -> None:
        store = ChunkStore(tmp_path / "s")
        data = rand(100_000)
        digest = hashlib.sha256(data).hexdigest()
        store.put(digest, data, "v")
        server = ChunkServer(StoreBackend(store))
        server.tokens.add("k" * 32)
        port = await server.start("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(json.dumps({"v": 1, "token": "wrong", "want": [digest]}).encode() + b"\n")
        assert json.loads(await reader.readline()) == {"v": 1, "error": "bad token"}
        assert await reader.read() == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        want = ["../../etc/passwd", H, digest]
        writer.write(json.dumps({"v": 1, "token": "k" * 32, "want": want}).encode() + b"\n")
        assert json.loads(await reader.readline()) == {"n": [-1, -1, 100_000]}
        assert await reader.readexactly(100_000) == data
        writer.close()
        fetched = ChunkStore(tmp_path / "f")
        result = await Fetcher(fetched).fetch("127.0.0.1", port, "k" * 32, [(digest, 100_000)])
        assert result.got == [digest] and fetched.read(digest) == data
        (tmp_path / "TEST_CORRUPT_CHUNKS").write_text("")
        server.backend = StoreBackend(store, tmp_path)
        liar = await Fetcher(ChunkStore(tmp_path / "g")).fetch(
            "127.0.0.1", port, "k" * 32, [(digest, 100_000)]
        )
        assert liar.lying and liar.failed == [digest]
        server.close()

    asyncio.run(go())


def test_a_stalled_source_times_out_once_per_request_and_the_task_lives_on(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        data = rand(40_000)
        digest = hashlib.sha256(data).hexdigest()

        async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(json.dumps({"n": [40_000]}).encode() + b"\n" + data[:1000])
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(stall, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fetcher = Fetcher(ChunkStore(tmp_path / "f"), idle_timeout=0.3)
        began = time.monotonic()
        result = await fetcher.fetch("127.0.0.1", port, "k" * 32, [(digest, 40_000)])
        assert result.error == "timed out" and result.failed == [digest]
        assert time.monotonic() - began < 2
        await asyncio.sleep(0.01)  # no cancellation left pending on this task
        soon = await fetcher.fetch(
            "127.0.0.1", port, "k" * 32, [(digest, 40_000)], deadline=time.monotonic() + 0.2
        )
        assert soon.error == "timed out"
        server.close()

    asyncio.run(go())


def test_a_batch_put_checks_ids_and_sizes(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "s")
    a, b = rand(100, seed=1), rand(200, seed=2)
    ha, hb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    with pytest.raises(ChunkError, match="not a chunk id"):
        store.put_verified([(ha, 100), ("../x", 200)], a + b, "v")
    with pytest.raises(ChunkError, match="add up"):
        store.put_verified([(ha, 100), (hb, 201)], a + b, "v")
    store.put_verified([(ha, 100), (hb, 200)], a + b, "v")
    assert store.read(hb) == b and store.span(hb)[1:] == (100, 200)  # type: ignore[index]
    assert (tmp_path / "s" / "v.idx").read_text().count("\n") == 2


def test_the_scan_cache_skips_unchanged_files_and_notices_changed_ones(tmp_path: Path) -> None:
    from shoal.content.scan import load_cache, save_cache
    from shoal.state import State

    root = tree(tmp_path / "t")
    cache: dict = {}
    first = scan(root, cache=cache)
    assert str(root / "big") in cache
    with State(tmp_path / "state.db") as state:
        save_cache(state, cache, ChunkParams())
        again = load_cache(state, root, ChunkParams())
        assert again == cache and load_cache(state, root, ChunkParams(8192, 2048, 32768)) == {}
    # a poisoned entry proves the cache is used; a changed stamp ignores it
    stamp, chunks = again[str(root / "big")]
    again[str(root / "big")] = (stamp, [("f" * 64, 300_000)])
    assert scan(root, cache=dict(again)).manifest.entries[0].chunks == [("f" * 64, 300_000)]
    (root / "big").write_bytes(rand(300_000, seed=2))
    fresh = scan(root, cache=again)
    assert fresh.manifest.entries[0].chunks != chunks and fresh.version != first.version
