"""The JSON convention and a closed pipe, for every command that talks to nodes.

(:mod:`shoal.cli.render` writes the convention down; the unit test
``test_output_contract`` holds the commands that need no node.) Each command
runs as the real CLI against three lab nodes: with ``--json`` its stdout is
JSON lines, a per-node result has ``node``, ``ok`` and ``status`` for every
selected node, and stderr stays empty; with a reader already gone its status
is 141 and nothing but silence reaches stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.testing.ptyrun import on_terminal

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
PROGRAM = "contract"
PUSHED = "contract-tree"


def with_options(argv: tuple[str, ...], *options: str) -> tuple[str, ...]:
    """``options`` right after the command's words (``agent status``, ``run``)."""
    depth = 2 if argv[0] in ("agent", "proc", "facts") else 1
    return (*argv[:depth], *options, *argv[depth:])


def shoal(*argv: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *argv], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def three(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three nodes with a running agent, a supervised program and a pushed tree."""
    names = ",".join(n.name for n in lab.nodes()[:3])
    tree = tmp_path_factory.mktemp("tree")
    (tree / "a.txt").write_text("a\n")
    for argv in (
        ("agent", "install", "-s", names),
        ("proc", "start", PROGRAM, "-s", names, "--", "sh", "-c", "echo hello; sleep 600"),
        ("push", str(tree), PUSHED, "-s", names, "--no-progress"),
    ):
        p = shoal(*argv)
        assert p.returncode == 0, (argv, p.stderr)
    (tree / "b.txt").write_text("b\n")
    assert shoal("push", str(tree), PUSHED, "-s", names, "--no-progress").returncode == 0
    try:
        yield names
    finally:
        shoal("proc", "remove", PROGRAM, "-s", names)


#: argv (``-s NODES`` is added), then "result" (one per-node result per node) or the key
#: every object has (items of another kind: events, log lines).
NODE_COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("run", "echo hi"), "result"),
    (("run", "--stream", "echo hi"), "node"),
    (("cp", "/etc/hostname", "@:/tmp/contract-copy"), "result"),
    (("agent", "status"), "result"),
    (("agent", "install"), "result"),
    (("proc", "status"), "result"),
    (("proc", "restart", PROGRAM), "result"),
    (("proc", "logs", PROGRAM), "node"),
    (("events",), "node"),
    (("sweep",), "node"),
    (("versions", PUSHED), "result"),
    (("facts", "refresh"), "result"),
]


@pytest.mark.parametrize(
    ("argv", "shape"), NODE_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_json_is_json_lines_with_a_record_per_node(
    three: str, argv: tuple[str, ...], shape: str
) -> None:
    p = shoal(*with_options(argv, "-s", three, "--json"))
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr  # no summary beside JSON
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert records and all(isinstance(r, dict) for r in records), p.stdout
    nodes = set(three.split(","))
    if shape == "result":
        assert [r["node"] for r in records if "ok" in r] == sorted(nodes), records
        assert all(r["ok"] is True and r["status"] == "ok" for r in records), records
    else:
        assert all(shape in r for r in records), records
        assert {r["node"] for r in records} <= nodes


def test_a_failed_node_is_an_error_object_on_stderr_beside_records(three: str) -> None:
    p = shoal("proc", "logs", "no-such-program", "-s", three, "--json")
    assert p.returncode == 1, p.stderr
    errors = [json.loads(line) for line in p.stderr.splitlines()]
    assert sorted(e["node"] for e in errors) == sorted(three.split(",")), errors
    assert all(set(e) == {"kind", "error", "node"} and e["kind"] == "agent" for e in errors)


@pytest.mark.parametrize(
    "argv",
    [
        *[argv for argv, _ in NODE_COMMANDS],
        *[with_options(argv, "--json") for argv, _ in NODE_COMMANDS],
    ],
    ids=lambda v: " ".join(v),
)
def test_a_closed_pipe_ends_every_node_command_quietly(three: str, argv: tuple[str, ...]) -> None:
    if argv[0] == "cp" and "--json" not in argv:
        pytest.skip("cp prints nothing to stdout without --json")  # (its summary: stderr)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes
    try:
        p = shoal(*with_options(argv, "-s", three), stdout=write_end)
    finally:
        os.close(write_end)
    assert p.returncode == 141, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr


def _records(p: subprocess.CompletedProcess[str], three: str) -> list[dict[str, Any]]:
    assert p.returncode == 0 and p.stderr == "", p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert sorted(r["node"] for r in records) == sorted(three.split(","))
    assert all(r["ok"] and r["status"] == "ok" for r in records), records
    return records


def test_push_and_rollback_json_and_closed_pipe(three: str, tmp_path: Path) -> None:
    target = f"{PUSHED}-2"
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text(f"{i}\n")
        pushed = _records(shoal("push", str(tmp_path), target, "-s", three, "--json"), three)
        assert all(r["version"] for r in pushed)
    back = _records(shoal("rollback", target, "-s", three, "--json"), three)
    assert all(r["value"]["current"] != pushed[0]["version"] for r in back), back
    (tmp_path / "2.txt").write_text("2\n")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        for argv in (("push", str(tmp_path), target), ("rollback", target)):
            p = shoal(*argv, "-s", three, stdout=write_end)
            assert p.returncode == 141, (argv, p.returncode, p.stderr)
            assert "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr
    finally:
        os.close(write_end)


def _on_terminal(*argv: str) -> tuple[int, bytes]:
    """``argv``'s exit status and all it wrote, run with stdout and stderr on a terminal."""
    return on_terminal([*SHOAL, *argv])


@pytest.mark.parametrize(
    "argv", [("agent", "install"), ("sweep",), ("facts", "refresh")], ids=lambda a: a[0]
)
def test_long_work_shows_progress_on_a_terminal_only(three: str, argv: tuple[str, ...]) -> None:
    code, out = _on_terminal(*argv, "-s", three)
    assert code == 0, out
    assert b"\r[##########" in out and b"] 3/3 failed 0" in out, out  # the bar, redrawn
    assert b"\r" + b" " * 45 + b"\r" in out, out  # and blanked before the table
    p = shoal(*argv, "-s", three)
    assert p.returncode == 0 and "[#" not in p.stderr + p.stdout, p.stderr  # a pipe: none
