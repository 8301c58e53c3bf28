"""The CLI through ``shoal serve``: the same output, exit status and failed set as direct SSH.

One service (``shoal serve`` as a subprocess over the session lab's state
directory) runs for the module and is always stopped. Each command runs twice,
through the service and with ``--no-service``, and the two are compared with
only what must differ normalised: durations, clock times, uptimes, pids, and
the reason given for a node that cannot be reached (the service says what its
detector saw, at once; direct SSH says its connect timed out). One node is
killed for the module (and revived after).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.lab import Lab
from shoal.testing.serveproc import serving, wait_for_links

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))
DEAD = "n8"


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHOAL, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """``shoal serve`` for the lab's state directory, with ``DEAD`` killed and seen down."""
    # every link up first, then DEAD killed: a node killed during its SSH handshake is
    # seen down only when the handshake's 60 s limit runs out (transport/ssh.py)
    with serving(stop_timeout=30) as proc:
        wait_for_links(
            proc, lambda links: all(v == "up" for v in links.values()), "attach the lab", 60
        )
        lab.kill(DEAD)
        try:
            wait_for_links(proc, _settled, f"see {DEAD} down", 30)
            yield proc
        finally:
            lab.revive(DEAD)


def _settled(links: dict[str, str]) -> bool:
    """Every live node's link up and the dead one down."""
    return links.get(DEAD) == "down" and all(v == "up" for k, v in links.items() if k != DEAD)


_UNREACHABLE = re.compile(r"(down: [^\n]*|connect(ion)? [^\n]*(timed out|refused)[^\n]*)")


def normalised(text: str) -> str:
    text = _UNREACHABLE.sub("<unreachable>", text)
    text = re.sub(r'"duration": [0-9.e-]+', '"duration": <t>', text)
    text = re.sub(r"\d+\.\d+s\b", "<t>", text)  # durations
    text = re.sub(r"\d\d:\d\d:\d\d", "<clock>", text)
    text = re.sub(r"\b\d+[smhd]\b", "<age>", text)  # uptimes
    text = re.sub(r"\b\d{3,}\b", "<pid>", text)
    return re.sub(r"[ \t]+", " ", text)  # table columns sized by what they hold


def both(*args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    return shoal(*args), shoal("--no-service", *args)


def failed_set() -> list[str]:
    listed = shoal("nodes", "failed", "--json").stdout.splitlines()
    return [json.loads(line)["node"] for line in listed]


FAIL_ON_N3 = "hostname; [ $(hostname) = n3 ] && exit 4; echo e >&2"
SAME = [
    ("run", "-s", "n[1-8]", "--connect-timeout", "2", FAIL_ON_N3),
    ("run", "-s", "n[1-8]", "--connect-timeout", "2", "--json", "echo $((6 * 7))"),
    ("run", "-s", "n[1-4", "true"),  # the caret error, exit 2
    ("run", "-s", "@nosuchgroup", "true"),
    ("sweep", "-s", "n[1-8]", "--connect-timeout", "2"),
    ("sweep", "-s", "n[1-8]", "--connect-timeout", "2", "--json"),
    ("events", "-s", "n[1-8]", "--connect-timeout", "2", "-n", "5"),
    ("nodes", "failed"),
]  # fmt: skip


@pytest.mark.parametrize("argv", SAME, ids=[" ".join(a[:3]) for a in SAME])
def test_the_same_output_exit_status_and_failed_set_with_and_without_the_service(
    service: subprocess.Popen[str], argv: tuple[str, ...]
) -> None:
    warm, cold = both(*argv)
    assert warm.returncode == cold.returncode, (warm.stderr, cold.stderr)
    assert normalised(warm.stdout) == normalised(cold.stdout)
    assert normalised(warm.stderr) == normalised(cold.stderr)
    if argv[0] in ("run", "sweep", "events") and warm.returncode != 2:
        assert "connect timed out" in cold.stdout + cold.stderr  # direct SSH tried DEAD
        assert "connect timed out" not in warm.stdout + warm.stderr  # the service knew
        assert DEAD in failed_set()  # both paths put the dead node there and keep it there
    if argv == SAME[0]:
        assert warm.returncode == 3 and "n3 (1) — exit 4" in warm.stdout
        assert DEAD in warm.stderr and "unreachable 1" in warm.stderr
    if argv == SAME[2]:
        assert warm.returncode == 2 and "^" in warm.stderr


#: Program operations change the nodes: the whole sequence runs through the service,
#: then again direct, and each step is compared with its twin.
UP = "echo up; exec sleep 600"
PROC_SEQUENCE = [
    ("proc", "start", "-s", "n[1-8]", "--connect-timeout", "2", "idw", "--", "sh", "-c", UP),
    ("proc", "status", "-s", "n[1-8]", "--connect-timeout", "2", "idw"),
    ("proc", "logs", "-s", "n[1-2]", "idw"),
    ("proc", "restart", "-s", "n[1-3]", "idw"),
    ("proc", "stop", "-s", "n[1-8]", "--connect-timeout", "2", "idw"),
    ("proc", "remove", "-s", "n[1-3]", "idw"),
    ("proc", "remove", "-s", "n[1-3]", "idw"),  # already gone: exit 1 on both
]  # fmt: skip


def test_program_operations_give_the_same_output_through_the_service(
    service: subprocess.Popen[str],
) -> None:
    # each pass its own program (a removed program's log stays on the node)
    tag = f"{os.getpid()}"
    warm = [shoal(*(a.replace("idw", f"w{tag}") for a in argv)) for argv in PROC_SEQUENCE]
    cold = [
        shoal("--no-service", *(a.replace("idw", f"c{tag}") for a in argv))
        for argv in PROC_SEQUENCE
    ]
    shoal("proc", "remove", "-s", "n[4-7]", f"w{tag}")
    shoal("proc", "remove", "-s", "n[4-7]", f"c{tag}")
    for argv, w, c in zip(PROC_SEQUENCE, warm, cold, strict=True):
        assert w.returncode == c.returncode, (argv, w.stderr, c.stderr)
        assert normalised(w.stdout.replace(f"w{tag}", "P")) == normalised(
            c.stdout.replace(f"c{tag}", "P")
        ), argv
        assert normalised(w.stderr.replace(f"w{tag}", "P")) == normalised(
            c.stderr.replace(f"c{tag}", "P")
        ), argv
    assert warm[0].returncode == 3 and warm[-1].returncode == 1
    assert "connect timed out" in cold[0].stderr and "connect timed out" not in warm[0].stderr
    assert "n1: up" in warm[2].stdout


def test_a_run_through_the_service_imports_no_ssh_and_no_asyncio(
    service: subprocess.Popen[str],
) -> None:
    """asyncssh is this process's only way to SSH: not imported means no connection made.
    Nor the selection code or SQLite: the service resolves ``-s`` (start-up is measured)."""
    code = "import sys; from shoal.cli.main import main; sys.exit(main())"
    cmd = [sys.executable, "-X", "importtime", "-c", code, "run", "-s", "n[1-7]", "hostname"]
    warm = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.count("\nn") + warm.stdout.startswith("n") >= 7  # every node answered
    imported = {line.split("|")[-1].strip() for line in warm.stderr.splitlines() if "|" in line}
    assert "asyncio" not in imported and "asyncssh" not in imported
    assert not imported & {"shoal.nodes.select", "shoal.nodes.grammar", "sqlite3"}, imported
    cold = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "SHOAL_NO_SERVICE": "1"}
    )
    assert cold.returncode == 0 and "asyncssh" in cold.stderr  # the bypass goes direct


def test_events_follow_streams_from_the_service_without_polling(
    service: subprocess.Popen[str],
) -> None:
    """``--interval 600``: a polling follow would show nothing for ten minutes."""
    follow = subprocess.Popen(
        [SHOAL, "events", "-s", "n2", "-n", "0", "--follow", "--interval", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # the stream is open
        assert shoal("proc", "start", "-s", "n2", "evf", "--", "sleep", "600").returncode == 0
        assert shoal("proc", "stop", "-s", "n2", "evf").returncode == 0
        seen, deadline = "", time.monotonic() + 30
        assert follow.stdout is not None
        while "evf" not in seen:
            assert time.monotonic() < deadline, f"not streamed within 30 s: {seen!r}"
            ready, _, _ = select.select([follow.stdout], [], [], 0.5)
            if ready:
                seen += follow.stdout.readline()
        assert "n2" in seen
    finally:
        follow.send_signal(signal.SIGINT)
        try:
            follow.wait(10)
        except subprocess.TimeoutExpired:
            follow.kill()
            follow.wait(10)
        shoal("proc", "remove", "-s", "n2", "evf")
    assert follow.returncode == 0  # Ctrl-C is how a follow ends
