"""``shoal run``'s fast path (cli/fastpath.py + service/fastpathroute.py) on the real lab.

One service runs for the module (always stopped); ``DEAD`` is killed for the
module and revived after. Every form the fast path takes is run three ways and
compared byte for byte but for durations: the fast path (the ``shoal``
console script), the CLI through the service without it (``main(argv)``: the
entry point's fast path is skipped when argv is given) and, where no node is
unreachable (the service reports what its detector saw, direct SSH its connect
timeout), ``--no-service``. Terminals are real ptys, a closed pipe a real
pipe, Ctrl-C a real SIGINT with the nodes' commands checked gone. The forms it
does not take are shown to fall through (``answer`` returns None) and still
give the direct path's output.
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

from .conftest import remote

pytestmark = pytest.mark.lab

SHOAL = str(Path(sys.executable).with_name("shoal"))
VIA_SERVICE = [sys.executable, "-c", "import sys; from shoal.cli.main import main; "
               "sys.exit(main(sys.argv[1:]))"]  # fmt: skip
#: The fast path alone: 97 when it falls through.
FAST_ONLY = [sys.executable, "-c", "import sys; from shoal.cli.fastpath import answer; "
             "code = answer(sys.argv[1:]); sys.exit(97 if code is None else code)"]  # fmt: skip
FELL_THROUGH = 97
DEAD = "n7"


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[subprocess.Popen[str]]:
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
    return links.get(DEAD) == "down" and all(v == "up" for k, v in links.items() if k != DEAD)


def durations(data: bytes) -> bytes:
    """Only the timings differ between two runs of one command."""
    data = re.sub(rb'"duration": [0-9.e-]+', b'"duration": <t>', data)
    return re.sub(rb"\b\d+\.\d+s\b", b"<t>", data)


_DRAW = re.compile(rb"\r\[[#-]+\] (\d+)/(\d+) failed (\d+)|\r +\r")


def progress(stderr: bytes) -> tuple[bytes, list[int], bytes]:
    """stderr without its progress line; how many nodes each draw counted, and the last
    draw's failed count (which node finishes when differs from run to run)."""
    draws = [m for m in _DRAW.finditer(stderr) if m.group(1)]
    last = draws[-1].group(3) if draws else b""
    return _DRAW.sub(b"", stderr), [int(m.group(1)) for m in draws], last


def same(a: tuple[int, bytes, bytes], b: tuple[int, bytes, bytes]) -> bool:
    """The same status and bytes, but for durations and the order a progress line counted."""
    return (a[0], durations(a[1]), progress(durations(a[2]))) == (
        b[0], durations(b[1]), progress(durations(b[2]))
    )  # fmt: skip


def run(
    argv: list[str], *, tty: tuple[bool, bool] = (False, False), **env: str
) -> tuple[int, bytes, bytes]:
    """(status, stdout, stderr) of ``argv``; each stream a pty when its ``tty`` says so."""
    fds: list[tuple[int, int]] = [os.openpty() if t else os.pipe() for t in tty]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=fds[0][1], stderr=fds[1][1],
        env={**os.environ, **env},
    )  # fmt: skip
    for _, w in fds:
        os.close(w)
    got = {r: b"" for r, _ in fds}
    open_fds = set(got)
    deadline = time.monotonic() + 120
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 1.0)
        for r in ready:
            try:
                data = os.read(r, 65536)
            except OSError:  # a pty's EIO once its last writer closed
                data = b""
            if data:
                got[r] += data
            else:
                open_fds.discard(r)
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    for r, _ in fds:
        os.close(r)
    return code, got[fds[0][0]], got[fds[1][0]]


FAIL_ON_N3 = "hostname; echo e >&2; [ $(hostname) = n3 ] && exit 4; true"
ESCAPES = r"printf 'red \033[31m x\n'; printf 'bidi \342\200\256 y\n' >&2"
CUT = "head -c 200000 /dev/zero | tr '\\0' x"  # 200 kB a node, 64 KiB kept
#: Forms the fast path takes; the last field: whether the dead node is in the selection.
TAKEN: list[tuple[tuple[str, ...], tuple[bool, bool], bool]] = [
    (("run", "-s", "n[1-6]", FAIL_ON_N3), (False, False), False),  # grouped, exit 1
    (("run", "-s", "n[1-8]", "--connect-timeout", "2", FAIL_ON_N3), (False, False), True),
    (("run", "-s", "n[1-6]", "--json", FAIL_ON_N3), (False, False), False),
    (("run", "-s", "n[1-8]", "--json", "--connect-timeout", "2", "true"), (False, False), True),
    (("run", "-s", "n[1-4", "true"), (False, False), False),  # the caret, exit 2
    (("run", "-s", "n[1-4", "--json", "true"), (False, False), False),
    (("run", "-s", "@nosuchgroup", "true"), (False, False), False),
    (("run", "-s", "n1", "--", "   "), (False, False), False),  # an empty command
    (("run", "-s", "n[1-3]", "--timeout", "0.5", "sleep 5"), (False, False), False),
    (("run", "-s", "n[1-2]", "-e", "X=a b", "echo $X"), (False, False), False),
    (("run", "-s", "n[1-2]", ESCAPES), (True, False), False),  # escaped on a terminal
    (("run", "-s", "n[1-2]", "--no-progress", ESCAPES), (True, True), False),
    (("run", "-s", "n[1-2]", "--json", ESCAPES), (True, True), False),
    (("run", "-s", "n[1-2]", ESCAPES), (False, False), False),  # a pipe gets the bytes
    (("run", "-s", "n[1-6]", FAIL_ON_N3), (False, True), False),  # a progress line
    (("run", "-s", "n[1-8]", "--connect-timeout", "2", ESCAPES), (True, True), True),
    (("run", "-s", "n[1-3]", "--max-output", "64K", CUT), (False, False), False),
    (("run", "-s", "n[1-3]", "--max-output", "64K", "--json", CUT), (False, False), False),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "tty", "dead"), TAKEN, ids=[" ".join(t[0]) for t in TAKEN])
def test_the_fast_path_writes_what_the_cli_writes(
    service: subprocess.Popen[str], argv: tuple[str, ...], tty: tuple[bool, bool], dead: bool
) -> None:
    fast = run([SHOAL, *argv], tty=tty)
    via = run([*VIA_SERVICE, *argv], tty=tty)
    assert same(fast, via), (fast, via)
    if not dead:  # the direct path tells of an unreachable node in its own words
        direct = run([SHOAL, "--no-service", *argv], tty=tty)
        assert same(fast, direct), (fast, direct)
    assert run([*FAST_ONLY, *argv], tty=tty)[0] != FELL_THROUGH  # it was the fast path
    if argv[-1] == FAIL_ON_N3 and "--json" not in argv:
        assert fast[0] == (3 if dead else 1) and b"n3 (1) \xe2\x80\x94 exit 4" in fast[1]
    if argv[2] == "n[1-4":
        assert fast[0] == 2 and (b"^" in fast[2] or b'"kind"' in fast[2])
    if tty[1] and not {"--json", "--no-progress"} & set(argv):
        _, counted, _ = progress(fast[2])
        assert counted == list(range(1, 9 if dead else 7)), fast[2]  # drawn per node
        assert re.search(rb"\r {20,}\r", fast[2]), fast[2]  # then blanked
    if argv[-1] == CUT:
        if "--json" in argv:
            kept = {(r["stdout"], r["dropped"]) for r in map(json.loads, fast[1].splitlines())}
            assert kept == {("x" * 65536, 200_000 - 65536)}, fast[1][-300:]
        else:
            assert fast[1].count(b"x") == 65536, fast[1][-300:]  # one group
        assert "--json" in argv or b"cut: n[1-3]" in fast[2], fast[2]
    if argv[-1] == ESCAPES and "--json" not in argv:
        assert (b"\\x1b[31m" in fast[1]) == tty[0] and (b"\x1b[31m" in fast[1]) != tty[0]
        assert b"[stderr] bidi" in fast[1]


def test_the_fast_path_imports_no_argparse(service: subprocess.Popen[str]) -> None:
    # the installed console script itself (scripts/setup.sh writes one without pip's `import re`)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    cmd = [SHOAL, "run", "-s", "n1", "true"]
    took = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert took.returncode == 0, took.stderr
    imported = {line.split("|")[-1].strip() for line in took.stderr.splitlines() if "|" in line}
    assert "shoal.cli.fastpath" in imported
    assert not imported & {"argparse", "json", "re", "enum", "asyncio", "shoal.errors"}, imported


def test_a_closed_stdout_ends_quietly_with_141(service: subprocess.Popen[str]) -> None:
    for argv in ([SHOAL], [SHOAL, "--no-service"], FAST_ONLY):
        r, w = os.pipe()
        os.close(r)
        proc = subprocess.run(
            [*argv, "run", "-s", "n[1-3]", "echo hello"], stdout=w, stderr=subprocess.PIPE,
            timeout=60,
        )  # fmt: skip
        os.close(w)
        assert (proc.returncode, proc.stderr) == (141, b""), argv


def _sleeping(lab: Lab, marker: str) -> list[str]:
    return [
        node.name
        for node in lab.nodes()[:2]
        if remote(node, f"pgrep -f '[{marker[0]}]{marker[1:]}' || true").strip()  # not pgrep's sh
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_the_nodes_commands(
    service: subprocess.Popen[str], lab: Lab, sig: signal.Signals
) -> None:
    marker = f"sleep 4{os.getpid() % 100}.{int(sig)}"
    proc = subprocess.Popen(
        [*FAST_ONLY, "run", "-s", "n[1-2]", f"{marker}; echo never"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(_sleeping(lab, marker)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command did not start on both nodes"
            time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    told = b"shoal: interrupted\n" if sig == signal.SIGINT else b"shoal: terminated\n"
    assert (proc.returncode, out, err) == (128 + sig, b"", told)
    deadline = time.monotonic() + 15
    while _sleeping(lab, marker):
        assert time.monotonic() < deadline, "the nodes' commands outlived the Ctrl-C"
        time.sleep(0.2)


#: Forms the fast path leaves to the CLI (the service says so before anything runs).
DECLINED: list[tuple[tuple[str, ...], tuple[bool, bool]]] = [
    (("run", "-s", "n[1-2]", "--stream", "hostname"), (False, False)),
    (("run", "-v", "-s", "n[1-2]", "hostname"), (False, False)),
    (("run", "--bogus", "true"), (False, False)),  # argparse's usage error
    (("run", "--help"), (False, False)),
    (("run", "-w", "n1", "true"), (False, False)),  # ad-hoc targets go direct
    (("run", "--host-keys", "accept-new", "-s", "n1", "true"), (False, False)),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "tty"), DECLINED, ids=[" ".join(d[0]) for d in DECLINED])
def test_what_the_fast_path_does_not_take_falls_through(
    service: subprocess.Popen[str], argv: tuple[str, ...], tty: tuple[bool, bool]
) -> None:
    assert run([*FAST_ONLY, *argv], tty=tty)[0] == FELL_THROUGH
    whole = run([SHOAL, *argv], tty=tty)
    via = run([*VIA_SERVICE, *argv], tty=tty)
    if "--stream" in argv:  # lines as they come: in any order
        whole, via = [(c, b"".join(sorted(o.splitlines(True))), e) for c, o, e in (whole, via)]
    assert (whole[0], durations(whole[1])) == (via[0], durations(via[1]))
    if argv[1] == "--bogus":
        assert whole[0] == 2 and b"unrecognized arguments: --bogus" in whole[2]


def test_no_service_or_told_not_to_use_it_falls_through(
    service: subprocess.Popen[str], tmp_path: Path
) -> None:
    argv = ["run", "-s", "n1", "true"]
    assert run([*FAST_ONLY, *argv], SHOAL_HOME=str(tmp_path))[0] == FELL_THROUGH  # no socket
    for env in ({"SHOAL_NO_SERVICE": "1"}, {"MQ_NODES": "n1"}, {"CLUSTERSHELL_CFGDIR": "/x"}):
        assert run([*FAST_ONLY, *argv], **env)[0] == FELL_THROUGH, env
    assert run([*FAST_ONLY, "--no-service", *argv])[0] == FELL_THROUGH
    assert run([*FAST_ONLY, *argv])[0] == 0
