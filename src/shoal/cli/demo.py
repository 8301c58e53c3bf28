"""``shoal demo``: the README's first command — a tour of Shoal on a local lab.

Brings up a lab of real SSH nodes, then runs the very commands a newcomer would
type (each printed with a ``$`` before it), so what scrolls by is both a
demonstration and a transcript to copy from. Takes the lab down at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEMO_LAB = "demo"
#: The checkout's examples folder (the demo runs its ByteTorrent application).
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="bring up a local lab and show Shoal at work on it",
        description="A guided run on a local lab of real SSH nodes: run, select, "
        "failure handling, cp, and supervised programs through the agent.",
    )
    p.add_argument("--nodes", type=int, default=8, metavar="N", help="lab size (default 8)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave the lab and the service (its dashboard) up afterwards",
    )
    p.set_defaults(handler=cmd_demo)


def _say(text: str) -> None:
    print(f"\n# {text}", flush=True)


def _shoal(*argv: str) -> int:
    from .main import main

    shown = " ".join(a if a and " " not in a and "'" not in a else repr(a) for a in argv)
    print(f"$ shoal {shown}", flush=True)
    code = main(list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _check(code: int, what: str) -> None:
    from shoal.errors import ShoalError

    if code != 0:
        raise ShoalError(f"demo step failed: {what} (exit {code})")


def cmd_demo(args: argparse.Namespace) -> int:
    from shoal.errors import UsageError

    from .dashboarddemo import show_dashboard

    if args.nodes < 3:
        raise UsageError("the demo needs at least 3 nodes")
    started = time.monotonic()
    _say(
        f"A lab of {args.nodes} real SSH nodes on this machine (network namespaces, one sshd each)"
    )
    _shoal("lab", "down", "--name", DEMO_LAB)  # leftovers of an interrupted demo, if any
    _check(_shoal("lab", "up", str(args.nodes), "--name", DEMO_LAB), "lab up")
    try:
        _tour(args.nodes)
        show_dashboard(args.keep, _say)
    finally:
        if not args.keep:
            _say("Cleaning up")
            _shoal("lab", "down", "--name", DEMO_LAB)
        else:
            _say(f"The lab stays up: shoal lab status --name {DEMO_LAB}; the service too")
    _say(f"Demo finished in {time.monotonic() - started:.1f}s. Next: README.md, 'shoal --help'.")
    return 0


def _program_pid(name: str, node: str) -> int:
    """The pid of a supervised program on one node, from ``proc status --json``."""
    import contextlib
    import io
    import json

    from .main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["proc", "status", name, "-s", node, "--json"])
    record = json.loads(buf.getvalue().splitlines()[0])
    return int(record["value"][0]["pid"])


def _tour(n: int) -> None:
    _tour_run(n)
    with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
        _tour_files(Path(tmp))
    _tour_agents()
    _application()
    _standing_controller()
    _shoal("agent", "stop", "-s", "@lab")


def _tour_run(n: int) -> None:
    """Selections, run, a crashed node and the failed set, timeouts."""
    victim = "n3"
    _say("Nodes are in the inventory (group @lab); selections use one grammar everywhere")
    _check(_shoal("select", "@lab"), "select")
    _check(_shoal("select", f"@lab - n[{n - 1}-{n}]"), "select difference")

    _say("Run a command everywhere: identical outputs are merged under a compact node set")
    _check(_shoal("run", "-s", "@lab", "--no-progress", "uname -sr; python3 --version"), "run")
    _shoal(
        "run",
        "-s",
        "@lab",
        "--no-progress",
        'if [ "$SHOAL_INDEX" -lt 3 ]; then echo "early: $SHOAL_NODE"; else echo late; fi',
    )

    _say(f"A node crashes ({victim}): the others answer, it is reported and joins 'failed'")
    _check(_shoal("lab", "kill", victim, "--name", DEMO_LAB), "lab kill")
    _shoal(
        "run", "-s", "@lab", "--no-progress", "--connect-timeout", "2", "--retries", "0", "uptime"
    )
    _shoal("nodes", "failed")
    _check(_shoal("lab", "revive", victim, "--name", DEMO_LAB), "lab revive")
    _say("Rerun exactly the failed nodes once they are back")
    _check(_shoal("run", "-s", "failed", "--no-progress", "hostname"), "rerun failed")

    _say("A command that overruns its timeout is killed on the node, children included")
    _shoal("run", "-s", "n[1-2]", "--no-progress", "--timeout", "1", "sleep 30")


def _tour_files(tmp: Path) -> None:
    """Copy out and back, then push peer to peer, again, and roll back (files in ``tmp``)."""
    src = tmp / "release"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "hello").write_text('#!/bin/sh\necho "hello from $(hostname)"\n')
    (src / "bin" / "hello").chmod(0o755)
    _say("Copy a tree to every node (@: is the nodes' side), run it, pull results back")
    _check(_shoal("cp", "-s", "@lab", "--no-progress", str(src), "@:apps/"), "cp push")
    _check(
        _shoal("run", "-s", "@lab", "--no-progress", "apps/release/bin/hello > out.txt"),
        "run hello",
    )
    out = tmp / "collected"
    _check(_shoal("cp", "-s", "@lab", "--no-progress", "@:out.txt", f"{out}/@/"), "cp pull")
    names = sorted(p.name for p in out.iterdir())
    print(f"  collected one folder per node: {', '.join(names)}")
    print(f"  {out}/n1/out.txt: {(out / 'n1' / 'out.txt').read_text().strip()}")

    _say("Push a tree peer to peer: chunked, verified, switched in atomically")
    site = tmp / "site"
    site.mkdir()
    for i in range(20):
        (site / f"page{i}.html").write_text(f"<h1>page {i}</h1>\n" + "lorem ipsum " * 4000)
    _check(_shoal("push", "-s", "@lab", "--no-progress", str(site), "site"), "push v1")
    (site / "page3.html").write_text("<h1>page 3, edited</h1>\n" + "lorem ipsum " * 4000)
    _say("Change one file and push again: only the changed chunks move")
    _check(_shoal("push", "-s", "@lab", "--no-progress", str(site), "site"), "push v2")
    _check(_shoal("versions", "-s", "@lab", "site"), "versions")
    _check(_shoal("rollback", "-s", "@lab", "site"), "rollback")
    _check(_shoal("run", "-s", "n1", "--no-progress", "head -1 site/page3.html"), "check")


def _tour_agents() -> None:
    """The agents: a supervised program killed and restarted, its events."""
    _say("Supervision: an agent per node keeps programs alive (needs only python3 there)")
    _check(_shoal("agent", "install", "-s", "@lab"), "agent install")
    _check(
        _shoal(
            "proc",
            "start",
            "ticker",
            "-s",
            "@lab",
            "--restart",
            "always",
            "--",
            "sh",
            "-c",
            "while :; do date; sleep 1; done",
        ),
        "proc start",
    )
    _say("Kill the program on one node with SIGKILL; the agent restarts it within a second")
    pid = _program_pid("ticker", "n2")
    _shoal("run", "-s", "n2", "--no-progress", f"kill -9 {pid}")
    time.sleep(1.5)
    _check(_shoal("proc", "status", "ticker", "-s", "@lab"), "proc status")
    _check(_shoal("events", "-s", "n2", "-n", "5"), "events")
    _check(_shoal("proc", "stop", "ticker", "-s", "@lab"), "proc stop")


def _application() -> None:
    spec = EXAMPLES / "bytetorrent" / "bytetorrent.yaml"
    if not spec.exists():
        _say(f"(skipping the application: {spec} is not here; run the demo from a checkout)")
        return
    _say("An application (Plush's ByteTorrent): a sender, receivers, a 'join' barrier, a transfer")
    _check(_shoal("app", "up", str(spec), "--detach"), "app up")
    _check(_shoal("app", "status"), "app status")
    _check(_shoal("app", "logs", "-c", "receivers", "--lines", "1"), "app logs")
    _check(_shoal("app", "down"), "app down")


#: A kept application for the standing-controller chapter: two members, replaced when lost.
KEPT_SPEC = """\
app: kept
components:
  w:
    select: "@lab"
    count: 2
    on_failure: replace
    processes:
      - {name: svc, service: "exec sleep 3600"}
"""


def _standing_controller() -> None:
    """``shoal serve``: a member's node killed and replaced unattended; warm run beside cold."""
    import subprocess

    from shoal.client import ServiceClient
    from shoal.paths import shoal_home

    _say("The standing controller: shoal serve holds a connection to every node and keeps apps")
    print("$ shoal serve --sweep-interval 0 &", flush=True)
    log = shoal_home() / "demo-keeper.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli.main", "serve", "--sweep-interval", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        client = _until("shoal serve attached every node", 60, lambda: _attached(serve))
        _warm_beside_cold()
        with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
            spec = Path(tmp) / "kept.yaml"
            spec.write_text(KEPT_SPEC)
            _check(_shoal("app", "up", str(spec), "--detach"), "app up (kept)")
            _replaced_unattended(client)
            _check(_shoal("app", "down", "kept"), "app down (kept)")
    finally:
        print("$ shoal serve stop", flush=True)
        if serve.poll() is None:
            ServiceClient(str(shoal_home() / "serve.sock"), timeout=10).stop()
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(10)


def _attached(serve: Any) -> Any:
    """The service's client once every lab node's link is up (None before)."""
    from shoal.client import ServiceClient
    from shoal.errors import ServiceError

    if serve.poll() is not None:
        raise ServiceError(f"shoal serve exited with {serve.returncode} (see demo-keeper.log)")
    client = ServiceClient.locate(timeout=30)
    if client is None:
        return None
    links = [n["link"] for n in client.request("GET", "/api/v1/nodes", query={"selection": "@lab"})]
    return client if links and all(link == "up" for link in links) else None


def _until(what: str, timeout: float, probe: Any) -> Any:
    from shoal.errors import ShoalError

    deadline = time.monotonic() + timeout
    while (found := probe()) is None or found is False:
        if time.monotonic() > deadline:
            raise ShoalError(f"demo step failed: {what} not within {timeout:g} s")
        time.sleep(0.1)
    return found


def _warm_beside_cold() -> None:
    """``shoal run -s @lab true`` as whole processes: through the service, then direct."""
    import os
    import subprocess

    _say("A warm run (through shoal serve: no new SSH connection) beside a cold one (direct SSH)")
    argv = [sys.executable, "-m", "shoal.cli.main", "run", "-s", "@lab", "--no-progress", "true"]
    times = {}
    for label, env in (
        ("warm", dict(os.environ)),
        ("cold", {**os.environ, "SHOAL_NO_SERVICE": "1"}),
    ):
        best = float("inf")
        for _ in range(3):
            began = time.monotonic()
            subprocess.run(argv, env=env, capture_output=True, check=False)
            best = min(best, time.monotonic() - began)
        times[label] = best
    print("$ shoal run -s @lab true                     # shoal serve runs", flush=True)
    print(f"  warm: {times['warm']:.3f}s for the whole command (best of 3)")
    print("$ SHOAL_NO_SERVICE=1 shoal run -s @lab true  # direct SSH")
    print(f"  cold: {times['cold']:.3f}s ({times['cold'] / times['warm']:.1f}x the warm run)")


def _replaced_unattended(client: Any) -> None:
    """Kill the node of the member in slot 1; wait for the keeper's replacement event."""
    import json

    from shoal.app import store
    from shoal.state import State

    with State() as st:
        members = [m for m in store.members(st, "kept") if m.state == "active"]
    victim = max(members, key=lambda m: m.slot).node
    after = client.status()["events"]["last"]
    _say(f"Kill {victim}, a member's node, and keep hands off the keyboard")
    began = time.monotonic()
    _check(_shoal("lab", "kill", victim, "--name", DEMO_LAB), "lab kill")
    try:

        def replaced() -> Any:
            found = client.events(after, topic="app")
            return next((e for e in found if e.get("kind") == "member_replaced"), None)

        event = _until("the keeper's replacement", 60, replaced)
        took = time.monotonic() - began
        print(f"  {time.strftime('%H:%M:%S')} the service journaled: {json.dumps(event['detail'])}")
        print(f"  replaced {took:.1f}s after the kill, nobody at the keyboard")
        _shoal("app", "status", "kept")
    finally:
        _check(_shoal("lab", "revive", victim, "--name", DEMO_LAB), "lab revive")
