"""Odd and hostile entries in a pushed tree (issue 11 items 3, 10 and 14).

The scan must refuse what a manifest cannot carry safely (names that are not
UTF-8), treat a tree changing under it as changed (never a raw OSError, never
SIGBUS), never open a FIFO, socket or device, and keep the top directory's
mode; a node must refuse a manifest whose names are not Unicode, an empty
directory it did not make, and the agent's own working area as REMOTE_DIR.
Processes that could hang (a FIFO) run in a child with a timeout.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shoal.agent import manifest as mf
from shoal.agent.activate import Area, AreaError, resolve_target
from shoal.agent.chunkstore import ChunkStore
from shoal.content.scan import ChunkParams, load_cache, save_cache, scan
from shoal.errors import ContentError
from shoal.state import State

BAD = os.fsdecode(b"bad\xffname")  # a name that is not UTF-8 (a lone surrogate here)


def run_child(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, killed after ``timeout`` (subprocess.run kills it)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )


# -- names that are not UTF-8 ----------------------------------------------------------


def test_a_name_that_is_not_utf8_is_refused_naming_the_path_escaped(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / BAD).write_bytes(b"x")
    with pytest.raises(ContentError) as caught:
        scan(root)
    message = str(caught.value)
    assert "sub/bad\\xffname" in message and "not valid UTF-8" in message
    message.encode("utf-8")  # printable on any terminal, one line
    assert "\n" not in message


def test_a_symlink_target_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "link").symlink_to(BAD)
    with pytest.raises(ContentError, match="symlink target is not valid UTF-8"):
        scan(root)


def test_a_root_whose_own_path_is_not_utf8_still_pushes_with_the_cache(tmp_path: Path) -> None:
    root = tmp_path / BAD
    root.mkdir()
    (root / "data").write_bytes(os.urandom(20_000))
    state = State(tmp_path / "state.db")
    try:
        cache = load_cache(state, root, ChunkParams())
        tree = scan(root, cache=cache)
        save_cache(state, cache, ChunkParams())
    finally:
        state.close()
    assert [e.path for e in tree.manifest.entries] == ["data"]


def test_a_node_refuses_names_that_only_look_different_as_strings() -> None:
    # "\udcc3\udca9" is the bytes of "é" seen as not-UTF-8: one file name, two strings.
    # The link check would take it for a plain directory while the kernel follows
    # "é" -> "." and then ".." out of the tree.
    alias = "\udcc3\udca9"
    assert os.fsencode(alias) == os.fsencode("é")
    value = {
        "format": mf.FORMAT,
        "m": 0o755,
        "entries": [
            {"p": "x", "t": "l", "l": f"{alias}/.."},
            {"p": "é", "t": "l", "l": "."},
        ],
        "packs": [],
    }
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(mf.ManifestError, match="not valid UTF-8"):
        mf.parse(data)
    value["entries"] = [{"p": alias, "t": "d", "m": 0o755}, {"p": "é", "t": "d", "m": 0o755}]
    with pytest.raises(mf.ManifestError, match="not valid UTF-8"):
        mf.parse(json.dumps(value, sort_keys=True).encode())


# -- a tree that changes under the scan ------------------------------------------------


def test_files_vanishing_during_the_scan_read_as_changed(tmp_path: Path) -> None:
    root = tmp_path / "t"
    outcomes: list[str] = []
    for attempt in range(40):  # bounded: the deleter races the scan's lstat loop
        shutil_tree(root)
        names = sorted(os.listdir(root), reverse=True)
        go = threading.Event()

        def delete(names: list[str] = names, go: threading.Event = go) -> None:
            go.wait()
            for name in names:
                os.unlink(root / name)

        deleter = threading.Thread(target=delete)
        deleter.start()
        try:
            go.set()
            scan(root)
            outcomes.append("ok")
        except ContentError as exc:
            assert "changed while it was being scanned" in str(exc), exc
            outcomes.append("changed")
        finally:
            deleter.join()
        if "changed" in outcomes and attempt >= 3:
            break
    assert "changed" in outcomes, outcomes


def shutil_tree(root: Path) -> None:
    root.mkdir(exist_ok=True)
    for name in os.listdir(root):
        os.unlink(root / name)
    for i in range(3000):
        (root / f"f{i:05d}").write_bytes(b"")


def test_a_file_truncated_while_it_is_cut_is_changed_not_sigbus(tmp_path: Path) -> None:
    big = tmp_path / "t" / "big"
    big.parent.mkdir()
    code = f"""
import os, threading
from pathlib import Path
from shoal.content.scan import scan
from shoal.errors import ContentError
big = Path({str(big)!r})
data = os.urandom(48 << 20)
changed = 0
for _ in range(6):
    big.write_bytes(data)
    t = threading.Timer(0.02, os.truncate, (big, 4096))
    t.start()
    try:
        scan(big.parent)
    except ContentError as exc:
        assert "changed while it was being scanned" in str(exc), exc
        changed += 1
    t.join()
print("done", changed)
"""
    result = run_child(code, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith("done")


def test_a_file_swapped_for_a_fifo_after_the_scan_does_not_hang_the_source(
    tmp_path: Path,
) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "data").write_bytes(os.urandom(100_000))
    code = f"""
import os
from pathlib import Path
from shoal.content.scan import SourceBackend, scan
root = Path({str(root)!r})
tree = scan(root)
digest = tree.chunks[0][0]
os.unlink(root / "data")
os.mkfifo(root / "data")
backend = SourceBackend(tree)
print(backend.lookup(digest), backend.changed)
"""
    result = run_child(code, timeout=20)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"None [{str(root / 'data')!r}]"


def test_fifos_sockets_devices_and_newlines_neither_hang_nor_crash(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    if os.geteuid() == 0:
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "new\nline").write_bytes(b"line\n")
    (root / "esc\x1b[2Jname").write_bytes(b"")
    code = f"""
from shoal.content.scan import scan
t = scan({str(root)!r})
t2 = scan({str(root)!r}, pack=True)
print(sorted(t.skipped), [e.path for e in t.manifest.entries])
"""
    try:
        result = run_child(code, timeout=30)
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = ["fifo", "null", "sock"] if os.geteuid() == 0 else ["fifo", "sock"]
    files = ["esc\x1b[2Jname", "new\nline"]
    assert result.stdout.strip() == f"{skipped} {files}"


# -- the top directory's mode ----------------------------------------------------------


def test_the_top_directory_keeps_its_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "key").write_bytes(b"secret")
    src.chmod(0o700)
    tree = scan(src)
    assert tree.manifest.root_mode == 0o700
    assert mf.parse(tree.manifest.to_bytes()).root_mode == 0o700
    src.chmod(0o750)
    assert scan(src).version != tree.version  # the mode is part of the version
    store = ChunkStore(tmp_path / "store")
    for digest, _ in tree.chunks:
        path, offset, size = tree.locations[digest]
        store.put(digest, path.read_bytes()[offset : offset + size], tree.version)
    area = Area(tmp_path / "node" / "site")
    area.assemble(tree.manifest, tree.version, store)
    area.switch(tree.version)
    assert stat.S_IMODE(os.stat(tmp_path / "node" / "site").st_mode) == 0o700


def test_format_1_manifests_still_read_with_the_old_top_mode() -> None:
    data = b'{"entries":[{"m":420,"n":0,"p":"a","t":"f","c":[]}],"format":1,"packs":[]}'
    assert mf.parse(data).root_mode == 0o755
    with pytest.raises(mf.ManifestError, match="format"):
        mf.parse(data.replace(b'"format":1', b'"format":3'))
    with pytest.raises(mf.ManifestError, match="format"):
        mf.parse(data.replace(b'"format":1', b'"format":true'))
    with pytest.raises(mf.ManifestError, match="mode"):
        mf.parse(data.replace(b'"format":1', b'"format":2'))  # format 2 needs "m"


# -- what a push may replace on the node -----------------------------------------------


def test_an_empty_directory_is_replaced_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "site"
    target.mkdir()
    with pytest.raises(AreaError, match=r"empty directory.*--replace-empty-dir"):
        Area(target).current()
    assert Area(target, replace_empty_dir=True).current() is None


def test_home_agent_area_and_root_are_never_deploy_targets(tmp_path: Path) -> None:
    home = tmp_path / "home" / "u"
    agent = home / ".shoal"
    (agent / "logs").mkdir(parents=True)
    (home / "alias").symlink_to(agent)
    for remote in (
        ".",
        str(home),
        str(home.parent),
        "/",
        ".shoal",
        ".shoal/logs",
        ".shoal/chunks/x",
        ".shoal/apps",
        "alias/logs",
    ):
        with pytest.raises(AreaError, match="cannot deploy to"):
            resolve_target(remote, home=home, agent_home=agent)
    for remote in ("~", "~/", "/"):
        with pytest.raises(AreaError, match="cannot deploy to"):
            resolve_target(remote)  # the agent's real home
    for remote in ("site", ".shoal2", ".shoal/apps/web/sw/bin", "alias/apps/web/sw/bin"):
        assert resolve_target(remote, home=home, agent_home=agent).name in remote
    other = tmp_path / "other" / ".x.shoal"  # an agent whose home is a site's area
    with pytest.raises(AreaError, match="working area"):
        resolve_target(str(other.parent / "x"), home=home, agent_home=other)
    with pytest.raises(AreaError, match="symlink Shoal did not make"):  # "alias" itself
        Area(resolve_target("alias", home=home, agent_home=agent)).current()
