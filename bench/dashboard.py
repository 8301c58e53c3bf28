"""Benchmark: the dashboard with 1,000 nodes, first render and frame time under event load.

    .venv/bin/python bench/dashboard.py [--nodes 1000] [--rate 100] [--seconds 10]

Measured in headless Chromium (Debian's, driven by Playwright: see
:mod:`shoal.testing.chromium`). The page is the real dashboard
(:mod:`shoal.web.dashboard`, its shipped assets); the API behind it is a stub
on loopback with the service's wire formats: ``GET /api/v1/nodes`` answers
``--nodes`` fake inventory nodes with link states, and ``GET /api/v1/events``
as Server-Sent Events sends node events (``node_suspect``, ``node_down``,
``node_up`` on random nodes) at ``--rate`` per second. No lab and no SSH: the
figure is the browser's work, and a real service cannot be made to emit a
steady 100 node events/s without 1,000 flapping nodes.

Figures, from the page itself: first render (navigation start to the tiles
painted: ``performance.now()`` in the first animation frame after the node
list is drawn) and the frame time under load (``requestAnimationFrame``
deltas over ``--seconds``: median, p95, max, and frames over 50 ms; and the
script time the dashboard's per-frame batch took). The
peer, side by side on the same stub and browser, is the pattern AWX's UI
follows: one DOM update per event as it arrives (the tile, then the counts
recomputed from the DOM). Ratios ours/peer are printed.
"""

from __future__ import annotations

import sys

# bench/ holds scripts named like standard modules (select.py): never import them
sys.path[:] = [p for p in sys.path if p not in ("", __file__.rsplit("/", 1)[0])]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import HTMLResponse, StreamingResponse  # noqa: E402

from shoal.testing.chromium import browser, skip_reason  # noqa: E402
from shoal.web import dashboard  # noqa: E402

KINDS = ("node_suspect", "node_down", "node_up")

#: The peer: the same tiles, one DOM update per event as it arrives.
PEER_SCRIPT = """(names) => {
  const grid = document.createElement('div'); grid.id = 'tiles';
  const counts = document.createElement('div');
  document.body.append(counts, grid);
  for (const n of names) {
    const t = document.createElement('div'); t.className = 'tile s-up'; t.dataset.node = n;
    t.textContent = n; grid.append(t);
  }
  const state = {node_up: 's-up', node_suspect: 's-suspect', node_down: 's-down'};
  window.shoalDashboard = {perf: {events: 0}};
  const source = new EventSource('/api/v1/events?protocol=1');
  source.addEventListener('node', (m) => {
    const e = JSON.parse(m.data);
    document.querySelector(`[data-node="${e.node}"]`).className = 'tile ' + state[e.kind];
    const tally = {};
    for (const t of grid.children) tally[t.className] = (tally[t.className] || 0) + 1;
    counts.textContent = JSON.stringify(tally);
    window.shoalDashboard.perf.events += 1;
  });
}"""

FRAMES_SCRIPT = """(ms) => new Promise((done) => {
  const deltas = []; let last = performance.now(); const end = last + ms;
  const start = window.shoalDashboard.perf.events, work = window.shoalDashboard.perf.work || 0;
  function tick(now) {
    deltas.push(now - last); last = now;
    if (now < end) requestAnimationFrame(tick);
    else done({deltas, events: window.shoalDashboard.perf.events - start,
               work: (window.shoalDashboard.perf.work || 0) - work});
  }
  requestAnimationFrame(tick);
})"""


def stub(nodes: int, rate: float) -> FastAPI:
    """The dashboard over a stub API with ``nodes`` nodes and ``rate`` node events/s."""
    names = [f"n{i:04d}" for i in range(nodes)]
    app = FastAPI()
    dashboard.mount(app)

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return {"pid": 0, "version": "bench", "protocol": 1}

    @app.get("/api/v1/nodes")
    async def listed() -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "host": f"10.{i // 250}.{i % 250}.1",
                "user": "root",
                "port": 22,
                "groups": [f"g{i % 10}"],
                "attrs": {
                    "lat": str(random.uniform(-50, 60)),
                    "lon": str(random.uniform(-170, 170)),
                },
                "link": "up",
                "link_reason": "",
                "failed": None,
                "facts": {"load1": 0.1, "cores": 4},
            }
            for i, n in enumerate(names)
        ]

    @app.get("/peer")
    async def peer() -> HTMLResponse:
        return HTMLResponse('<!doctype html><link rel="stylesheet" href="/ui/style.css"><body>')

    @app.get("/api/v1/events", response_model=None)
    async def events(request: Request) -> Any:
        if "text/event-stream" not in request.headers.get("accept", ""):
            return StreamingResponse(iter([b""]), media_type="application/x-ndjson")
        return StreamingResponse(_sse(names, rate), media_type="text/event-stream")

    return app


async def _sse(names: list[str], rate: float) -> AsyncIterator[bytes]:
    seq, start, tick = 0, time.monotonic(), 0.01
    while True:
        due = int((time.monotonic() - start) * rate)
        chunk = []
        while seq < due:
            seq += 1
            record = {"seq": seq, "time": time.time(), "topic": "node",
                      "kind": random.choice(KINDS), "node": random.choice(names),
                      "program": None, "detail": "bench"}  # fmt: skip
            chunk.append(f"id: {seq}\nevent: node\ndata: {json.dumps(record)}\n\n")
        if chunk:
            yield "".join(chunk).encode()
        await asyncio.sleep(tick)


def serve_in_thread(app: FastAPI) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def frames(deltas: list[float]) -> dict[str, float]:
    ordered = sorted(deltas[1:])
    return {
        "median": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
        "over50": sum(1 for d in ordered if d > 50),
    }


def measure(url: str, names: list[str], seconds: float) -> dict[str, Any]:
    with browser() as chrome:
        page = chrome.new_page()
        page.goto(f"{url}/")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        first = page.evaluate("window.shoalDashboard.perf.painted")
        ours = page.evaluate(FRAMES_SCRIPT, seconds * 1000)
        peer_page = chrome.new_page()
        peer_page.goto(f"{url}/peer")
        t0 = time.monotonic()
        peer_page.evaluate(PEER_SCRIPT, names)
        peer_page.evaluate("new Promise((r) => requestAnimationFrame(() => r()))")
        peer_first = (time.monotonic() - t0) * 1000
        peer = peer_page.evaluate(FRAMES_SCRIPT, seconds * 1000)
    return {"first": first, "ours": ours, "peer_first": peer_first, "peer": peer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="node events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"bench/dashboard: cannot run: {reason}", file=sys.stderr)
        return 2
    app = stub(args.nodes, args.rate)
    url, server, thread = serve_in_thread(app)
    try:
        names = [f"n{i:04d}" for i in range(args.nodes)]
        got = measure(url, names, args.seconds)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    ours, peer = frames(got["ours"]["deltas"]), frames(got["peer"]["deltas"])
    print(f"dashboard, {args.nodes} nodes, {args.rate:g} node events/s for {args.seconds:g} s "
          f"(headless Chromium, stub API on loopback)")  # fmt: skip
    print(f"  first render (navigation -> tiles painted): {got['first']:.0f} ms")
    for label, f, run in (("ours (batched per frame)", ours, got["ours"]),
                          ("peer (one DOM update per event)", peer, got["peer"])):  # fmt: skip
        rate = run["events"] / args.seconds
        print(f"  {label}: frame median {f['median']:.1f} ms, p95 {f['p95']:.1f} ms, "
              f"max {f['max']:.1f} ms, frames > 50 ms: {f['over50']:.0f}; "
              f"events applied {rate:.0f}/s")  # fmt: skip
    per_frame = got["ours"]["work"] / max(1, len(got["ours"]["deltas"]))
    print(f"  ours: script time in the batched update {per_frame:.2f} ms per frame")
    print(f"  ratio ours/peer: p95 frame {ours['p95'] / peer['p95']:.2f}, "
          f"max frame {ours['max'] / peer['max']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
