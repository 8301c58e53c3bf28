"""The depot and its sources without nodes (issue 16 items 1, 2): tarballs read
without extracting, unsafe members refused by name, URLs with a SHA-256, a new
version storing only new chunks, rm refused while in use, gc."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import random
import tarfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from shoal.content.depot import Depot, record_deployed
from shoal.content.scan import scan
from shoal.errors import ContentError
from shoal.state import State


@pytest.fixture()
def depot(tmp_path: Path) -> Iterator[Depot]:
    with State(tmp_path / "state.db") as st:
        yield Depot(st)


def stored_chunks(depot: Depot) -> int:
    return sum(1 for _ in depot.chunks.glob("*/*")) if depot.chunks.exists() else 0


def make_tree(root: Path, seed: int = 1) -> Path:
    rng = random.Random(seed)
    (root / "bin").mkdir(parents=True)
    (root / "data.bin").write_bytes(rng.randbytes(600_000))
    (root / "bin" / "start.sh").write_text("#!/bin/sh\necho start\n")
    (root / "bin" / "start.sh").chmod(0o755)
    (root / "README").symlink_to("bin/start.sh")
    return root


def tarball(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | None]], mode: str) -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode = kind, size, link, 0o644
    return ti


@pytest.mark.parametrize("mode,suffix", [("w", "tar"), ("w:gz", "tar.gz"), ("w:xz", "tar.xz")])
def test_a_tarball_gives_the_manifest_of_the_same_directory(
    depot: Depot, tmp_path: Path, mode: str, suffix: str
) -> None:
    src = make_tree(tmp_path / "src")
    archive = tmp_path / f"pkg.{suffix}"
    with tarfile.open(archive, mode) as tar:  # type: ignore[call-overload]
        tar.add(src, arcname=".")
    from_dir = depot.put(str(src), "pkg", "dir")
    from_tar = depot.put(str(archive), "pkg", "tar")
    assert from_tar.entry.version == from_dir.entry.version == scan(src).version
    assert from_tar.new_bytes == 0  # every chunk was already stored by the directory put


def test_a_zstd_tarball_is_read(depot: Depot, tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    src = make_tree(tmp_path / "src")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(src, arcname=".")
    archive = tmp_path / "pkg.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    assert depot.put(str(archive), "pkg").entry.version == scan(src).version


@pytest.mark.parametrize(
    "member,why",
    [
        (info("/etc/passwd", size=3), "absolute"),
        (info("a/../../evil", size=3), "'..'"),
        (info("up", tarfile.SYMTYPE, link="../../etc"), "escapes the tree"),
        (info("abs", tarfile.SYMTYPE, link="/etc/shadow"), "absolute path"),
        (info("null", tarfile.CHRTYPE), "device"),
        (info("disk", tarfile.BLKTYPE), "device"),
        (info("pipe", tarfile.FIFOTYPE), "FIFO"),
        (info("hard", tarfile.LNKTYPE, link="/etc/passwd"), "hard link"),
    ],
)
def test_unsafe_members_are_refused_by_name_and_nothing_is_stored(
    depot: Depot, tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    good = info("ok.txt", size=5)
    data = b"abc" if member.size else None
    archive = tarball(tmp_path / "bad.tar.gz", [(good, b"hello"), (member, data)], "w:gz")
    with pytest.raises(ContentError) as caught:
        depot.put(str(archive), "bad")
    assert repr(member.name) in str(caught.value) and why in str(caught.value)
    assert depot.entries() == [] and stored_chunks(depot) == 0


def test_a_symlink_escaping_through_another_symlink_is_refused(
    depot: Depot, tmp_path: Path
) -> None:
    members = [
        (info("d", tarfile.DIRTYPE), None),
        (info("d/up", tarfile.SYMTYPE, link=".."), None),
        (info("d/out", tarfile.SYMTYPE, link="up/.."), None),
    ]
    with pytest.raises(ContentError, match=r"'d/out'.*escapes"):
        depot.put(str(tarball(tmp_path / "x.tar", members, "w")), "bad")


def test_a_new_version_stores_only_its_new_chunks(depot: Depot, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = depot.put(str(src), "app", "1")
    assert first.new_bytes >= 600_000
    with open(src / "data.bin", "r+b") as f:
        f.seek(300_000)
        f.write(b"x" * 100)
    second = depot.put(str(src), "app", "2")
    assert second.entry.version != first.entry.version
    assert 0 < second.new_bytes < 150_000  # the edited chunk(s) and the manifest
    assert depot.resolve("app@latest").label == "2"
    assert depot.resolve(f"depot:app@{first.entry.version[:8]}").label == "1"
    with pytest.raises(ContentError, match="already holds"):
        depot.put(str(make_tree(tmp_path / "other", seed=2)), "app", "1")


def test_rm_is_refused_while_in_use_and_gc_frees_only_unreferenced_chunks(
    depot: Depot, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    one = depot.put(str(src), "app", "1").entry
    (src / "extra.bin").write_bytes(os.urandom(200_000))
    two = depot.put(str(src), "app", "2").entry
    record_deployed(depot.state, "apps/x", {"n3": one.version})
    with pytest.raises(ContentError, match=r"app@1 is in use by n3:apps/x"):
        depot.remove("app@1")
    with pytest.raises(ContentError, match=r"in use by app web"):
        depot.remove("app@2", {two.version: ["app web (software s)"]})
    before = stored_chunks(depot)
    assert depot.gc().chunks == 0
    record_deployed(depot.state, "apps/x", {"n3": two.version})  # n3 moved on
    depot.remove("app@1")
    freed = depot.gc()
    assert freed.chunks >= 1 and stored_chunks(depot) == before - freed.chunks
    _, tree = depot.tree("app@2")  # everything version 2 needs is still there
    assert all(Path(p).exists() for p, _, _ in tree.locations.values())


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_url_is_fetched_and_checked_and_a_wrong_sha256_stores_nothing(
    depot: Depot, tmp_path: Path, http_dir: tuple[str, Path]
) -> None:
    base, www = http_dir
    src = make_tree(tmp_path / "src")
    with tarfile.open(www / "pkg.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=".")
    digest = hashlib.sha256((www / "pkg.tar.gz").read_bytes()).hexdigest()
    wrong = "0" * 64
    with pytest.raises(ContentError, match=f"SHA-256 {digest} is not the expected {wrong}"):
        depot.put(f"{base}/pkg.tar.gz", "web", sha256=wrong)
    assert depot.entries() == [] and stored_chunks(depot) == 0
    assert list((depot.root / "tmp").iterdir()) == []  # the download is gone too
    with pytest.raises(ContentError, match="HTTP 404"):
        depot.put(f"{base}/missing.tar.gz", "web")
    got = depot.put(f"{base}/pkg.tar.gz", "web", "1", sha256=digest.upper())
    assert got.entry.version == scan(src).version and got.entry.source.startswith("http://")
