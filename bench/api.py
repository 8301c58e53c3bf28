"""Benchmark: the service's API at fleet scale: ``GET /api/v1/nodes`` for 1,000 nodes, and
an event's latency to 10 Server-Sent Events subscribers.

Usage: ``.venv/bin/python bench/api.py [--nodes 1000] [--requests 30] [--subscribers 10]
[--events 50] [--lab N]``

The service is the real one: the FastAPI app of :mod:`shoal.service.servedaemon`
over a real :class:`~shoal.control.controller.Controller`, served by uvicorn on a
Unix socket in this process, answering clients in other processes (so client
parsing never shares the service's interpreter). Without ``--lab`` its state
holds ``--nodes`` inventory nodes (``n1..nN``, three groups, gathered facts on
each, 2 % in the failed set) and the links hold one :class:`Link` per node with
states set as a fleet would have them (95 % up with live facts and an RTT, 2 %
suspect, 2 % down, 1 % attaching): nothing is attached, nothing on the network.
With ``--lab N`` a real ``shoal lab`` of N nodes is made instead and the service
attaches to it for real (heavy for N = 1000; removed at the end).

Figures (targets from issue 14; printed, never asserted):

* ``nodes``: wall time of ``GET /api/v1/nodes`` as a client process sees it
  (connect, request, the whole JSON body read and parsed; fresh connection
  each, as :class:`~shoal.client.ServiceClient` does), median and p95 of
  ``--requests``, beside the same records built by the library in-process
  (no HTTP), and the target 50 ms: ratio = median / 50 ms.
* ``sse``: ``--subscribers`` processes follow ``GET /api/v1/events`` with
  ``Accept: text/event-stream``; the service journals ``--events`` events 50 ms
  apart; each subscriber notes when each event's ``data:`` line arrived; the
  latency is that instant minus the event's ``stored`` time (the service's
  clock when the row was written: the same machine, the same clock). Median,
  p95 and max over every (subscriber, event), beside the target 50 ms.
"""

from __future__ import annotations

import os
import sys

# bench/ holds select.py: drop this folder from the path so that the standard
# library's ``select`` (imported by asyncio and subprocess) is not shadowed.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

TARGET_MS = 50.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the client processes ---------------------------------------------------------------------


def _get(path: str, target: str) -> tuple[float, int]:
    began = time.perf_counter()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: shoal\r\nShoal-Protocol: 1\r\nConnection: close\r\n\r\n"
        .encode()
    )  # fmt: skip
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        body = _unchunk(body)
    records = json.loads(body)
    return (time.perf_counter() - began) * 1000, len(records)


def _unchunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def role_nodes(path: str, requests: int) -> None:
    """Time GET /api/v1/nodes ``requests`` times (after one warm-up); JSON on stdout."""
    _get(path, "/api/v1/nodes")
    times, count = [], 0
    for _ in range(requests):
        took, count = _get(path, "/api/v1/nodes")
        times.append(took)
    print(json.dumps({"times_ms": times, "records": count}))


def role_subscriber(path: str, events: int) -> None:
    """Follow the SSE stream until ``events`` bench events arrived; latencies on stdout."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(
        b"GET /api/v1/events?topic=bench HTTP/1.1\r\nHost: shoal\r\nShoal-Protocol: 1\r\n"
        b"Accept: text/event-stream\r\n\r\n"
    )
    print("ready", flush=True)
    pending, latencies = b"", []
    while len(latencies) < events:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        now = time.time()
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                record = json.loads(line[6:])
                if record.get("kind") == "tick":
                    latencies.append((now - record["stored"]) * 1000)
    sock.close()
    print(json.dumps({"latencies_ms": latencies}), flush=True)


# -- the service ------------------------------------------------------------------------------


def fill_state(home: Path, count: int) -> None:
    """``count`` inventory nodes with facts, 2 % failed (not timed)."""
    from shoal.nodes import health
    from shoal.nodes.facts import FactRecord, store_facts
    from shoal.nodes.inventory import import_nodes
    from shoal.nodes.model import Node
    from shoal.state import State

    rng = random.Random(7)
    nodes = [
        Node(
            f"n{i}",
            host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            user="shoal",
            port=22,
            groups=("all-sites", f"site{i % 3}", "even" if i % 2 == 0 else "odd"),
            attrs={"rack": i // 40, "lat": rng.uniform(-60, 60), "lon": rng.uniform(-180, 180)},
        )
        for i in range(1, count + 1)
    ]
    with State(home / "state.db") as st:
        import_nodes(nodes, state=st)
        facts = {"os": "debian", "cpus": 4, "mem_mb": 8192, "disk_free_gb": 40.5, "arch": "x86_64"}
        store_facts(
            [FactRecord(n.name, time.time(), rng.uniform(0.2, 40), facts) for n in nodes], state=st
        )
        failed = {n.name: "down: no answer for 3 s" for n in nodes[:: max(1, count // 20)]}
        health.mark_failed(failed, state=st)


def fake_links(ctl: Any) -> None:
    """One Link per inventory node, in the states a fleet shows (nothing attached)."""
    from shoal.control.detector import Detector, Phase
    from shoal.control.links import Link

    links = ctl.links.links
    rng = random.Random(11)
    now = time.monotonic()
    for i, node in enumerate(ctl.managed()):
        link = Link(node)
        link.detector = Detector(now)
        link.attaches = link.connects = 1
        share = i % 100
        if share < 95:
            link.ever_up = link.streaming = True
            links.facts.rtt(node.name, rng.uniform(0.2, 40))
            links.facts.update(
                node.name,
                {"load1": rng.uniform(0, 4), "mem_available_mb": 4096, "disk_free_mb": 4e4},
            )
        elif share < 97:
            link.ever_up = link.streaming = True
            link.detector.phase, link.detector.reason = Phase.SUSPECT, "silent for 1.2 s"
        elif share < 99:
            link.ever_up = True
            link.detector.phase, link.detector.reason = Phase.DOWN, "no sshd answers"
        links.links[node.name] = link


async def serve(home: Path, args: argparse.Namespace, fake: bool) -> dict[str, Any]:
    import uvicorn

    from shoal.control.controller import Controller, ServiceConfig
    from shoal.control.journal import ServiceEvent
    from shoal.service.servedaemon import _Server, bind, build_app

    ctl = Controller(ServiceConfig(home, sweep_interval=0, beat_interval=1.0))
    stop = asyncio.Event()
    ctl.stop = stop
    ctl.start()
    if fake:
        fake_links(ctl)
        running = None
    else:
        running = asyncio.create_task(ctl.run(stop))
        await ctl.links.links.wait_up(timeout=600)
    path = home / "serve.sock"
    sock = bind(path)
    server = _Server(uvicorn.Config(build_app(ctl), lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    out: dict[str, Any] = {"nodes_in_state": len(ctl.managed())}
    try:
        out["library_ms"] = library_steps(ctl)
        out["metrics_ms"] = metrics_render(ctl)
        me = [sys.executable, __file__]
        got = await asyncio.to_thread(
            subprocess.run,
            [*me, "--role", "nodes", "--socket", str(path), "--requests", str(args.requests)],
            capture_output=True,
            text=True,
            check=True,
        )
        out["nodes"] = json.loads(got.stdout)

        subscriber = [*me, "--role", "subscriber", "--socket", str(path)]
        subs = [
            await asyncio.create_subprocess_exec(
                *subscriber, "--events", str(args.events), stdout=asyncio.subprocess.PIPE
            )
            for _ in range(args.subscribers)
        ]
        for sub in subs:
            assert sub.stdout is not None
            assert (await sub.stdout.readline()).strip() == b"ready"
        await asyncio.sleep(0.5)  # every stream open and waiting
        for i in range(args.events):
            ctl.journal.record(ServiceEvent("bench", "tick", detail=str(i)))
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        for sub in subs:
            answer, _ = await asyncio.wait_for(sub.communicate(), 60)
            latencies += json.loads(answer.splitlines()[-1])["latencies_ms"]
        out["sse"] = {"latencies_ms": latencies, "expected": args.events * args.subscribers}
    finally:
        stop.set()
        server.should_exit = True
        await serving
        if running is not None:
            await running
        sock.close()
        ctl.close()
    return out


def library_steps(ctl: Any, rounds: int = 5) -> dict[str, float]:
    """The steps of GET /api/v1/nodes's handler in-process (no HTTP), median ms of each;
    ``reread``: the snapshot read again from the state, as after a change (not in total)."""
    from shoal.service.inventorycache import InventoryCache, read_snapshot
    from shoal.service.noderoutes import node_record

    steps: dict[str, list[float]] = {}
    cache = InventoryCache()

    def timed(name: str, began: float) -> float:
        now = time.perf_counter()
        steps.setdefault(name, []).append((now - began) * 1000)
        return now

    for _ in range(rounds):
        t = time.perf_counter()
        read_snapshot(ctl.state)
        t = timed("reread", t)
        snap = cache.snapshot(ctl.state)
        t = timed("snapshot", t)
        links = {r["node"]: r for r in ctl.links.links.status()}
        t = timed("links", t)
        for n in snap.nodes:
            link = links.get(n.name)
            node_record(n, link, snap.failed.get(n.name), dict(snap.facts.get(n.name, ())))
        t = timed("records", t)
    medians = {name: statistics.median(v) for name, v in steps.items()}
    return {**medians, "total": sum(v for k, v in medians.items() if k != "reread")}


def metrics_render(ctl: Any, rounds: int = 5) -> float:
    """Median ms of rendering /metrics in-process (the loop's share of a scrape)."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from shoal.service.metrics import ServiceCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(ctl, SimpleNamespace()))
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def lab_state(home: Path, count: int) -> Any:
    from shoal.lab import Lab, LabSpec
    from shoal.nodes.inventory import import_nodes
    from shoal.state import State

    lab = Lab.up(LabSpec(n=count, name=f"api{os.getpid() % 10000}"))
    with State(home / "state.db") as st:
        import_nodes(lab.nodes(), state=st)
    return lab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--subscribers", type=int, default=10)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--lab", type=int, default=0, help="a real lab of N nodes instead")
    ap.add_argument("--role", choices=("nodes", "subscriber"), help=argparse.SUPPRESS)
    ap.add_argument("--socket", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "nodes":
        return role_nodes(args.socket, args.requests)
    if args.role == "subscriber":
        return role_subscriber(args.socket, args.events)

    with tempfile.TemporaryDirectory(prefix="shoal-bench-api-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        os.environ["SHOAL_HOME"] = str(home)
        lab = None
        if args.lab:
            lab = lab_state(home, args.lab)
        else:
            fill_state(home, args.nodes)
        try:
            out = asyncio.run(serve(home, args, fake=lab is None))
        finally:
            if lab is not None:
                lab.down()
    report(out, args, real=lab is not None)


def report(out: dict[str, Any], args: argparse.Namespace, real: bool) -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (noisy above 1)")
    times = out["nodes"]["times_ms"]
    med = statistics.median(times)
    how = "a real lab, attached" if real else "inventory + fake link states"
    print(f"GET /api/v1/nodes, {out['nodes']['records']} nodes ({how}), {len(times)} requests:")
    print(f"  median {med:.1f} ms, p95 {_percentile(times, 0.95):.1f} ms, "
          f"min {min(times):.1f} ms")  # fmt: skip
    lib = out["library_ms"]
    steps = ", ".join(f"{k} {v:.1f}" for k, v in lib.items() if k not in ("total", "reread"))
    print(f"  the handler's library calls alone {lib['total']:.1f} ms ({steps}); the "
          f"snapshot read again after a state change {lib['reread']:.1f} ms")  # fmt: skip
    print(f"  target {TARGET_MS:.0f} ms: ratio {med / TARGET_MS:.2f}")
    print(f"/metrics rendered for the same fleet: {out['metrics_ms']:.1f} ms (median, in-process)")
    lat = out["sse"]["latencies_ms"]
    print(f"one event -> {args.subscribers} SSE subscribers, {args.events} events "
          f"({len(lat)}/{out['sse']['expected']} deliveries):")  # fmt: skip
    if lat:
        p50 = statistics.median(lat)
        print(f"  latency after the store: median {p50:.1f} ms, p95 "
              f"{_percentile(lat, 0.95):.1f} ms, max {max(lat):.1f} ms")  # fmt: skip
        print(f"  target {TARGET_MS:.0f} ms: ratio (p95) {_percentile(lat, 0.95) / TARGET_MS:.2f}")


if __name__ == "__main__":
    main()
