"""Central log collection on real nodes: nothing lost, nothing twice, nothing freed early.

Programs write sequence-numbered lines into tiny, constantly rotating logs
while the controller collects; the store must end up with every line exactly
once. ``--free`` must leave files it did not store alone, and a full disk on
the controller must fail with one clear line and leave the nodes' files as
they were.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient, StreamClient
from shoal.nodes.model import Node
from shoal.ops import logcollect
from shoal.state import State

from .conftest import remote, unmount

pytestmark = pytest.mark.lab

WRITER = """
import sys, time, os
n, rate, width = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t0 = time.time()
for i in range(n):
    pad = os.urandom(width).hex() if width else "path=/api/v1/items status=200"
    sys.stdout.write(f"2026-12-01T12:00:00Z INFO req seq={i:08d} {pad}\\n")
    if i % 50 == 49:
        sys.stdout.flush()
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.time()))
sys.stdout.write("done\\n")
sys.stdout.flush()
time.sleep(3600)
"""
SEQ = re.compile(rb"seq=(\d{8})")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def opts() -> agents.AgentOptions:
    return agents.AgentOptions()


@pytest.fixture(scope="module")
def trio(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()[5:8]
    assert run(agents.install_async(nodes, opts())).ok
    yield nodes
    for name in ("la.w", "lb.w", "lc.w", "ld.w", "le.w", "lg.w", "lh.w", "li.w"):
        run(agents.call_async(nodes, "proc.remove", {"name": name}, opts()))
    run(agents.stop_async(nodes, opts()))


def start_writer(nodes: list[Node], name: str, lines: int, rate: int, width: int = 0) -> None:
    spec = agents.proc_spec(
        name,
        ["python3", "-c", WRITER, str(lines), str(rate), str(width)],
        restart="never",
        log_max_bytes=8192,
        log_backups=1,
        log_budget_bytes=64 << 20,
    )
    run(agents.call_async(nodes, "proc.remove", {"name": name}, opts()))
    assert run(agents.proc_start_async(nodes, spec, opts())).ok


def wait_done(node: Node, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if remote(node, f"tail -c 5 .shoal/logs/{name}.log", check=False) == "done\n":
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} on {node.name} did not finish writing")


def collect(state: State, nodes: list[Node], **kw: Any) -> Any:
    results = run(
        logcollect.collect_async(nodes, logcollect.CollectOptions(**kw), opts(), state=state)
    )
    return results


def node_files(node: Node, name: str) -> str:
    return remote(node, f"cd .shoal/logs && sha256sum {name}.log* | sort -k2", check=False)


def test_collect_while_rotating_then_again_no_gap_no_duplicate(
    trio: list[Node], tmp_path: Path
) -> None:
    lines = 12_000
    start_writer(trio, "la.w", lines, rate=4000)  # ~1 MiB, a rotation every ~100 lines
    with State(tmp_path / "state.db") as state:
        for rounds in range(4):  # while it writes and rotates
            results = collect(state, trio, free=rounds % 2 == 1)
            assert results.ok, [str(r.error) for r in results.failed]
            time.sleep(0.7)
        for node in trio:
            wait_done(node, "la.w")
        results = collect(state, trio, free=True)
        assert results.ok, [str(r.error) for r in results.failed]
        again = collect(state, trio)
        assert all(r.value.raw == 0 for r in again), "a second collect found nothing new"
        for node in trio:
            got = list(logcollect.lines(state, node.name, "la.w"))
            seqs = [int(m.group(1)) for line in got if (m := SEQ.search(line))]
            assert seqs == list(range(lines)), f"{node.name}: gap or duplicate"
            assert got[-1] == b"done"
        hits = list(logcollect.grep(r"seq=00001234 ", state=state))
        assert sorted(h.node for h in hits) == sorted(n.name for n in trio)
        # rotated files were freed only after they were stored: what is left is recent
        left = remote(trio[0], "ls .shoal/logs/ | grep -c '^la.w.log.' || true").strip()
        assert int(left) <= 1


def test_free_never_deletes_an_uncollected_file(trio: list[Node], tmp_path: Path) -> None:
    start_writer(trio[:1], "lb.w", 3000, rate=20_000)
    start_writer(trio[:1], "lc.w", 3000, rate=20_000)
    node = trio[0]
    wait_done(node, "lb.w")
    wait_done(node, "lc.w")
    before_c = node_files(node, "lc.w")
    assert before_c.count("lc.w.log.") >= 10
    with State(tmp_path / "state.db") as state:
        results = collect(state, [node], app="lb", free=True)
        assert results.ok, [str(r.error) for r in results.failed]
        assert results[node.name].value.freed, "lb's rotated files were freed"
        assert node_files(node, "lc.w") == before_c  # not collected: untouched
        assert remote(node, "ls .shoal/logs/ | grep -c '^lb.w.log.' || true").strip() == "0"
        # a free with a checksum the store does not hold is refused by the node
        listing = run(agents.call_async([node], "logs.list", {}, opts()))[node.name].value
        rotated = next(f for f in listing["files"] if f["stream"] == "lc.w" and f["rotated"])
        bad = {"file": rotated["file"], "ino": rotated["ino"], "size": rotated["size"]}
        refused = run(
            agents.call_async([node], "logs.ack", {**bad, "sha256": "0" * 64, "free": True}, opts())
        )
        assert not refused.ok and "kept" in str(refused[node.name].error)
        assert node_files(node, "lc.w") == before_c


def test_disk_full_on_the_controller_fails_clearly_and_leaves_the_nodes_alone(
    trio: list[Node], tmp_path: Path
) -> None:
    node = trio[1]
    start_writer([node], "lc.w", 6000, rate=50_000, width=48)  # ~700 KB, random: ~2x gzip
    wait_done(node, "lc.w")
    before = node_files(node, "lc.w")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        with State(small / "state.db") as state:
            results = collect(state, [node], free=True)
            assert not results.ok
            error = str(results[node.name].error)
            assert "\n" not in error
            assert "No space left on device" in error or "full" in error, error
            stored = {
                logcollect.stored_digest(state, node.name, dict(row))[1]
                for row in state.db.execute("SELECT * FROM log_files WHERE acked = 1")
            }
        after = node_files(node, "lc.w")
        kept = {line.split()[0] for line in after.splitlines()}
        was = {line.split()[0] for line in before.splitlines()}
        assert kept <= was, "a file on the node changed"
        assert was - kept <= stored, "a file left the node that the store does not hold"
        assert len(kept) > len(was) // 2  # the disk filled long before the end
    finally:
        subprocess.run(["umount", str(small)], check=True)


def fill(directory: Path) -> None:
    """Write a filler file in ``directory`` until its filesystem has no room left."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1):
            for _ in range(1 << 16):  # bounded: the tmpfs is far smaller
                try:
                    handle.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break


def test_disk_full_as_the_node_frees_a_file_leaves_that_file_recorded(
    trio: list[Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller's disk fills the moment the node has freed its first file: the
    store's record of that file was committed before the node was told, and the error
    says the file was freed (before, the record was lost and the error said nothing was)."""
    node = trio[1]
    remote(node, "rm -f .shoal/logs/le.w.log*")
    start_writer([node], "le.w", 500, rate=50_000, width=48)  # ~70 KB: 8 rotated files
    wait_done(node, "le.w")
    before = node_files(node, "le.w")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    freed: list[str] = []

    def filling(original: Any) -> Any:
        async def call(self: Any, op: str, **args: Any) -> Any:
            answer = await original(self, op, **args)
            if op == "logs.ack" and answer["freed"] and not freed:
                freed.append(answer["file"])
                fill(small)
            return answer

        return call

    for cls in (AgentClient, StreamClient):
        monkeypatch.setattr(cls, "call", filling(cls.call))
    try:
        with State(small / "state.db") as state:
            results = collect(state, [node], app="le", free=True)
            assert freed, "the node freed a file before the disk filled"
            assert not results.ok, "the disk filled: the collect cannot have succeeded"
            error = str(results[node.name].error)
            assert "\n" not in error
            assert "full" in error and f"{freed[0]} was freed on the node" in error, error
            acked = {
                logcollect.stored_digest(state, node.name, dict(row))[1]
                for row in state.db.execute("SELECT * FROM log_files WHERE acked = 1")
            }
        after = node_files(node, "le.w")
        kept = {line.split()[0] for line in after.splitlines()}
        was = {line.split()[0] for line in before.splitlines()}
        assert kept <= was, "a file on the node changed"
        assert len(was - kept) == 1, "exactly the one file freed before the disk filled left"
        assert was - kept <= acked, "a file left the node that the store does not record"
    finally:
        subprocess.run(["umount", str(small)], check=True)
        run(agents.call_async([node], "proc.remove", {"name": "le.w"}, opts()))


FILLER = """
import sys, time
rate = int(sys.argv[1])
for i in range(50 * rate):  # bounded: 50 s; the test removes it long before
    sys.stdout.write(f"2026-12-01T12:00:00Z INFO req seq={i:08d} path=/api/v1/items/{i}\\n")
    if i % 20 == 19:
        sys.stdout.flush()
        time.sleep(20 / rate)
"""
GAP = re.compile(rb"\[shoal agent: (\d+) bytes of output lost here: (.+)\]")
NOT_WRITTEN = re.compile(r"/\S+/lf\.w\.log: No space left on device, \d+ bytes of output lost")
LINE = re.compile(rb"2026-12-01T12:00:00Z INFO req seq=(\d{8}) path=/api/v1/items/(\d+)")


def log_errors(node: Node, options: agents.AgentOptions) -> list[str]:
    status = run(agents.status_async([node], options))[node.name]
    assert status.ok, status.error
    return [str(e) for e in status.value["errors"]]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_disk_full_on_a_node_while_a_program_logs_keeps_its_logs_and_collect_frees_room(
    trio: list[Node], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node's disk fills under a program's rotating log: the agent says which file on
    which node cannot be written (one line, in its status and in what collect says), the
    logs written before are intact and collected whole, the loss is noted where it
    happened, and ``--free`` makes room so that the log is written again."""
    node = trio[2]
    area = f"/tmp/shoal-logfull-{node.name}"
    remote(node, f"mkdir -p {area} && mount -t tmpfs -o size=1m tmpfs {area}")
    small = agents.AgentOptions(home=f"{area}/.shoal")
    caplog.set_level(logging.WARNING, logger="shoal.ops.logcollect")
    try:
        assert run(agents.install_async([node], small)).ok
        spec = agents.proc_spec(
            "lf.w",
            ["python3", "-c", FILLER, "4000"],
            restart="never",
            log_max_bytes=16384,
            log_backups=1,
            log_budget_bytes=64 << 20,  # keeps every uncollected file: the disk fills first
        )
        assert run(agents.proc_start_async([node], spec, small)).ok
        path = f"{area}/.shoal/logs/lf.w.log"
        wait_until(
            lambda: any(path in e for e in log_errors(node, small)), 30, "the full disk reported"
        )
        errors = [e for e in log_errors(node, small) if path in e]
        assert errors == [f"No space left on device: {path}"], errors
        with State(tmp_path / "state.db") as state:
            results = run(
                logcollect.collect_async(
                    [node], logcollect.CollectOptions(free=True), small, state=state
                )
            )
            assert results.ok, results[node.name].error
            assert results[node.name].value.freed, "collect freed rotated files: room again"
            told = results[node.name].value.write_errors
            assert len(told) == 1 and NOT_WRITTEN.fullmatch(told[0]), told
            assert told[0].startswith(f"{path}: "), told
            warned = [r.getMessage() for r in caplog.records if r.name == "shoal.ops.logcollect"]
            assert warned == [f"{node.name}: cannot write {told[0]}"], warned
            wait_until(
                lambda: not any(path in e for e in log_errors(node, small)),
                30,
                "the log written again",
            )
            stopped = run(agents.call_async([node], "proc.stop", {"name": "lf.w"}, small))
            assert stopped.ok, stopped[node.name].error
            results = run(
                logcollect.collect_async([node], logcollect.CollectOptions(), small, state=state)
            )
            assert results.ok, results[node.name].error
            got = list(logcollect.lines(state, node.name, "lf.w"))
        expected, notes = 0, []
        for index, line in enumerate(got):  # every line whole, in order, a gap only noted
            gap = GAP.fullmatch(line)
            if gap:
                notes.append((index, gap))
                continue
            match = LINE.fullmatch(line)
            if match is None and index + 1 < len(got) and GAP.fullmatch(got[index + 1]):
                continue  # the line the full disk cut: ended there, never joined to a later one
            assert match, f"a cut or joined line in the log: {line[:120]!r}"
            seq = int(match.group(1))
            assert match.group(2) == str(seq).encode(), f"a joined line: {line[:120]!r}"
            if seq != expected:
                assert seq > expected, f"seq {seq} twice or out of order"
                assert notes and notes[-1][0] == index - 1, f"no note before the gap at {seq}"
            expected = seq + 1
        assert notes, "the output lost to the full disk is noted where it was lost"
        assert all(gap.group(2) == b"No space left on device" for _, gap in notes)
        assert notes[0][0] > 3000, "what was written before the disk filled is all there"
    finally:
        run(agents.call_async([node], "proc.remove", {"name": "lf.w"}, small))
        run(agents.stop_async([node], small))
        unmount(node, area)
        remote(node, f"rmdir {area}", check=False)


def serve_until_logs_ran(tmp_path: Path, node: Node, **config: Any) -> dict[str, Any]:
    """Run a Controller (``config``: ServiceConfig fields) until its ``logs`` job has run
    once (bounded: 30 s), then stop it; that job's schedule status."""
    from shoal.control.controller import Controller, ServiceConfig

    controller = Controller(ServiceConfig(state_dir=tmp_path, sweep_interval=0, **config))
    controller.managed = lambda: [node]  # type: ignore[method-assign]

    async def serve_a_while() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        try:
            for _ in range(60):  # bounded: 30 s
                await asyncio.sleep(0.5)
                logs = next(s for s in controller.scheduler.status() if s["name"] == "logs")
                if logs["last_end"]:
                    break
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    try:
        run(serve_a_while())
        return next(s for s in controller.scheduler.status() if s["name"] == "logs")
    finally:
        controller.close()


def test_the_service_collects_on_its_schedule(trio: list[Node], tmp_path: Path) -> None:
    node = trio[2]
    start_writer([node], "ld.w", 500, rate=5000)
    wait_done(node, "ld.w")
    logs = serve_until_logs_ran(tmp_path, node, logs_interval=1.0)
    assert "bytes from 1 node(s)" in str(logs["last_status"]), logs
    with State(tmp_path / "state.db") as state:
        seqs = [
            int(m.group(1))
            for x in logcollect.lines(state, node.name, "ld.w")
            if (m := SEQ.search(x))
        ]
    assert seqs == list(range(500))


def test_the_service_keeps_the_store_within_its_size_budget_but_never_unacked_files(
    trio: list[Node], tmp_path: Path
) -> None:
    node = trio[2]
    start_writer([node], "lg.w", 500, rate=5000)  # rotated files (acked at once) and a live one
    wait_done(node, "lg.w")
    logs = serve_until_logs_ran(tmp_path, node, logs_interval=1.0, logs_max_bytes=1)
    assert re.search(r"[1-9][0-9]* file\(s\) pruned \([0-9]+ bytes over", logs["last_status"]), logs
    with State(tmp_path / "state.db") as state:
        kept = state.db.execute(
            "SELECT DISTINCT f.acked, f.rotated FROM log_files f"
            " JOIN log_segments s ON s.file_id = f.id"
        ).fetchall()
        assert [tuple(r) for r in kept] == [(0, 0)], "only files not yet acked are left"
        live = list(logcollect.lines(state, node.name, "lg.w"))
        assert live and live[-1] == b"done"


def test_grep_since_is_when_the_node_wrote_the_lines_not_when_they_were_collected(
    trio: list[Node], tmp_path: Path
) -> None:
    node = trio[1]
    start_writer([node], "lg.w", 300, rate=20_000)  # rotated and live files, written now
    wait_done(node, "lg.w")
    time.sleep(1.5)
    since = time.time()
    start_writer([node], "lh.w", 300, rate=20_000)  # written after `since`
    wait_done(node, "lh.w")
    with State(tmp_path / "state.db") as state:
        results = collect(state, [node])  # both collected after `since`
        assert results.ok, [str(r.error) for r in results.failed]
        assert list(logcollect.lines(state, node.name, "lg.w", since=since)) == []
        assert len(list(logcollect.lines(state, node.name, "lg.w"))) == 301
        newer = list(logcollect.lines(state, node.name, "lh.w", since=since))
        assert [int(m.group(1)) for x in newer if (m := SEQ.search(x))] == list(range(300))
        hits = {h.stream for h in logcollect.grep("seq=00000001", state=state, since=since)}
        assert hits == {"lh.w"}


#: 100 lines (~5 KB, below the 8 KiB rotation), then on $HOME/<marker> 300 more, "done".
PHASED = (
    'for i in $(seq 100); do echo "first seq=$(printf %08d $i) padding-padding"; done; '
    'while [ ! -e "$HOME/$0" ]; do sleep 0.1; done; '
    'for i in $(seq 101 400); do echo "later seq=$(printf %08d $i) padding-padding"; done; '
    "echo done; exec sleep 3600"
)


def test_size_retention_between_collects_keeps_a_live_file_and_the_next_ack_succeeds(
    trio: list[Node], tmp_path: Path
) -> None:
    node = trio[2]
    marker = f"li-go-{int(time.time() * 1000)}"
    spec = agents.proc_spec(
        "li.w", ["sh", "-c", PHASED, marker], restart="never", log_max_bytes=8192, log_backups=1
    )
    run(agents.call_async([node], "proc.remove", {"name": "li.w"}, opts()))
    assert run(agents.proc_start_async([node], spec, opts())).ok
    try:
        deadline = time.monotonic() + 30
        while "seq=00000100" not in remote(node, "cat .shoal/logs/li.w.log", check=False):
            assert time.monotonic() < deadline, "the first lines never came"
            time.sleep(0.2)
        with State(tmp_path / "state.db") as state:
            assert collect(state, [node], app="li").ok  # the live file, not rotated yet
            pruned = logcollect.prune(state=state, max_bytes=0)
            assert (pruned.files, pruned.over > 0) == (0, True), pruned
            remote(node, f"touch {marker}")
            wait_done(node, "li.w")  # the file it collected from rotated meanwhile
            results = collect(state, [node], app="li")
            assert results.ok, [str(r.error) for r in results.failed]
            assert results[node.name].value.acked >= 1
            got = list(logcollect.lines(state, node.name, "li.w"))
            seqs = [int(m.group(1)) for x in got if (m := SEQ.search(x))]
            assert seqs == list(range(1, 401)), "every line once, in order"
            assert logcollect.prune(state=state, max_bytes=0).files >= 1  # acked: may go
    finally:
        run(agents.call_async([node], "proc.remove", {"name": "li.w"}, opts()))
        remote(node, f"rm -f {marker}", check=False)
