"""The push coordinator: which node fetches which chunks from whom, and when.

Theory of operation. The coordinator lives inside the controller's push (no
service to run) and knows everything the nodes report: which chunks each
node still lacks (``need``), which nodes hold which chunks in their stores
(``holders``), which batches are in flight, and how each source has behaved.
Every node runs a few workers (:data:`PIPELINE`); each asks
:meth:`Swarm.next_batch` for work, tells its agent to fetch that batch
(``content.fetch``) and reports the outcome with :meth:`Swarm.complete`.
A batch is up to :attr:`Swarm.batch_bytes` of chunks from *one* source, chosen
in this order:

1. **From the source, striped**, when the source has a free slot (at most
   :attr:`Swarm.source_uploads` batches at once) and this node has no source
   batch in flight: the next chunks nobody holds or is fetching yet
   (``sourced``), in order. The source is the one link every chunk must cross,
   so it is kept busy first; it hands each chunk to one node only, so it sends
   each chunk out about once and different first recipients carry different
   stripes, which they then serve to the others.
2. **From a peer**: the first chunks the node lacks that an eligible peer
   holds, from the peer with the best (uploads in flight + 1) / measured rate,
   so busy or slow peers are used less. A peer serves at most
   :attr:`Swarm.peer_uploads` batches at once.
3. **From the source again**, when no peer can help: more new chunks, or a
   chunk that was sourced but has no live, honest holder and nobody fetching
   it (its first recipient died, lied or timed out), or that has been in flight
   elsewhere for more than :attr:`Swarm.straggle` seconds: stragglers never
   hold the others back.

A node reaches the source at the address it registered with: the controller's
chunk server directly, or a port on its own loopback tunnelled through the
controller's SSH connection when it cannot connect to us (``path``). A peer a
node cannot connect to (the fetch says ``unreachable``: NAT, a firewall) is
never chosen for that node again (:attr:`Swarm.blocked`) and counts as no
holder for it, so it takes those chunks from elsewhere, the source at worst;
the peer stays good for everyone else. A node that has failed
:data:`ISOLATED_AFTER` connects to peers, reaching none, over a clean link (a
firewall on its own side) is served by the source alone (:attr:`Swarm.isolated`)
rather than paying a connect timeout for every peer left. A node whose peer batch failed
(timed out: on a lossy network node-to-node paths cross two lossy links, the
source's one) takes its next batches from the source for
:attr:`Swarm.penalty` seconds (:attr:`Swarm.shy_until`) instead of trying peer
after peer, each a connect timeout away.

Sizes and times follow measured rates (each source's per-flow rate, an
exponential average of its completed batches' bytes over seconds), so 4 Mbit/s
and 1 Gbit/s links are both run near full without timing out
(:func:`batch_limit`, :func:`fetch_limit`, :func:`overdue_after`): a batch
holds about :data:`BATCH_SECONDS` of its source's flow, between a floor and the
configured ceiling; its fetch may take four times its expected time (plus the
connect allowance); a sourced chunk counts as a straggler only once it has
been in flight three times its expected time. The source's rate starts at a
slow guess (:data:`SOURCE_RATE_GUESS`), so its first stripes are small and
reach peers within a second or two on a slow link; it grows as batches come in.

Otherwise the worker waits for the next completion (an event, no polling).
A source that sends bytes that do not match their hash is marked lying and
never used again; one that times out or refuses is penalised for
:attr:`Swarm.penalty` seconds; a node that dies is dropped as a holder and its
in-flight chunks return to the pool. A chunk the source itself cannot serve
(the local file changed after the scan) fails the push (:attr:`Swarm.fatal`).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from shoal.logsetup import logger
from shoal.transport.tcpinfo import LinkState

_log = logger(__name__)
SOURCE = "(source)"
#: Fetches a node runs at once, and uploads a peer serves at once. Every link must run
#: near full for a swarm to finish near S/B (each node downloads the whole content while
#: uploading most of it), and more flows per link fill it better: 200 MB to 8 nodes at
#: 100 Mbit/s, 1.26-1.27x S/B with 5 against 1.34x with 3 (16 nodes, CPU-bound here: equal).
PIPELINE = 5
#: How far past its first missing chunk a node looks for work (chunks).
WINDOW = 512
#: How many of its next wanted chunks a node's peer choice counts in each option.
LOOKAHEAD = 64
#: Peers compared per choice at most (a random sample of the eligible holders).
SAMPLE = 8
#: Completions within this many seconds wake waiting workers once.
WAKE_DELAY = 0.005
#: A worker that keeps failing gives up after this many failed batches in a row.
MAX_FAILURES = 12
#: Connects to peers a node failed, having reached none, before the source alone
#: serves it: its fetchers try this many at once, so one connect timeout is lost.
ISOLATED_AFTER = 3
#: ...unless our SSH link to it loses this share or more: there a connect that timed
#: out more likely lost its SYNs than met a firewall.
ISOLATE_MAX_LOSS = 0.02
#: A node whose peer batch failed takes source batches this many times smaller.
SHY_SPLIT = 8
#: Seconds of a source's measured per-flow rate one batch holds: long beside the SSH
#: round trip each ``content.fetch`` costs (20-60 ms quiet, 0.2-0.6 s at load 30 or
#: over 4 Mbit/s links), short enough that fresh stripes reach peers soon.
BATCH_SECONDS = 1.0
#: The smallest batch (bytes), whatever the rate: two chunks of the 16 KiB average.
MIN_BATCH = 32 << 10
#: The source's per-flow rate (bytes/s) assumed until its first batches are measured:
#: at 4 Mbit/s with 16 flows each gets ~31 KB/s, and 256 KiB first stripes took 8 s
#: before any peer could serve a byte; at 100 Mbit/s 64 KiB stripes grow back to the
#: ceiling within a few batches.
SOURCE_RATE_GUESS = 64e3
#: A fetch may take this many times its expected time at the measured rate...
SLACK = 4.0
#: ... plus this allowance for its connect and TLS handshake (the fixed part of the limit
#: before rates were measured; a lossy link's own waits come from agent/linkwaits).
CONNECT_ALLOWANCE = 15.0
#: ... and never less than at this rate (bytes/s): the limit before rates were measured.
FLOOR_RATE = 200e3


#: Bytes one ``content.fetch`` costs on the controller's link, all in (request, SSH and
#: TCP framing, acknowledgements of the answer): measured 0.25 S of 10 MB for 3,150 batches.
CONTROL_BYTES = 800
#: The share of the source's link the controller's fetch requests may take.
CONTROL_SHARE = 0.05


def batch_limit(rate: float, ceiling: int, seconds: float = BATCH_SECONDS) -> int:
    """Bytes for one batch from a source whose flows run at ``rate`` bytes/s."""
    return int(min(ceiling, max(MIN_BATCH, rate * seconds)))


def batch_seconds(nodes: int, workers: int, source_link: float) -> float:
    """How long a peer batch should last so that the requests of ``nodes`` x ``workers``
    fetch workers stay within :data:`CONTROL_SHARE` of the source's link (bytes/s):
    every request crosses it, and at 4 Mbit/s 100 nodes asking for 100 KB batches
    (one second each) would have spent 45 % of it on requests."""
    need = nodes * workers * CONTROL_BYTES / (CONTROL_SHARE * max(source_link, 1e3))
    return max(BATCH_SECONDS, need)


def fetch_limit(nbytes: int, rate: float) -> float:
    """Seconds a fetch of ``nbytes`` may take from a source measured at ``rate``: at
    4 Mbit/s a 1 MiB peer batch shared with four other uploads needs ~10 s and a
    fixed 20 s limit cut the unlucky flows again and again (7 of 100 nodes failed)."""
    return CONNECT_ALLOWANCE + max(nbytes / FLOOR_RATE, SLACK * nbytes / max(rate, 1e3))


def overdue_after(base: float, nbytes: int, rate: float) -> float:
    """Seconds after which a chunk in a batch of ``nbytes`` at ``rate`` is a straggler
    (re-fetched from the source): at 4 Mbit/s a sound 256 KiB source stripe takes
    ~8 s, and a fixed 8 s re-sent half of them (egress 1.6-1.8x S)."""
    return max(base, 3.0 * nbytes / max(rate, 1e3))


@dataclass
class Peer:
    """Something chunks can be fetched from: a node's agent or the controller."""

    name: str
    host: str
    port: int
    pin: str = ""  # its certificate's SHA-256 (TLS), "" for a plain server
    uploads: int = 0
    rate: float = 5e6  # bytes/s, exponentially averaged from completed batches
    penalty_until: float = 0.0
    lying: bool = False
    alive: bool = True


@dataclass
class Batch:
    node: str
    source: str  # peer name or SOURCE
    host: str
    port: int
    chunks: list[int]
    nbytes: int
    started: float = field(default_factory=time.monotonic)
    pin: str = ""  # the source's certificate fingerprint (TLS), "" when plain
    limit: float = 60.0  # seconds the fetch may take (:func:`fetch_limit`)

    @property
    def address(self) -> list[Any]:
        """The ``source`` of a ``content.fetch``: [host, port] or [host, port, pin]."""
        return _address(self.host, self.port, self.pin)


def _address(host: str, port: int, pin: str) -> list[Any]:
    return [host, port, pin] if pin else [host, port]


@dataclass
class NodeStats:
    """What one node received, from whom, and how it ended."""

    need_bytes: int = 0
    received: int = 0
    from_source: int = 0
    from_peers: int = 0
    rejected: int = 0  # batches refused because a source lied
    state: str = "waiting"  # waiting, fetching, committing, done, failed
    path: str = ""  # how it reaches the source once registered: direct or ssh-tunnel
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    failures: int = 0


class Swarm:
    def __init__(
        self,
        chunks: Sequence[tuple[str, int]],
        *,
        batch_bytes: int = 1 << 20,
        source_batch_bytes: int = 256 << 10,
        source_uploads: int = 16,
        peer_uploads: int = PIPELINE,
        straggle: float = 8.0,
        penalty: float = 10.0,
        source_rate: float = 5e6,  # the push passes SOURCE_RATE_GUESS
    ) -> None:
        self.sizes = [n for _, n in chunks]
        self.batch_bytes = batch_bytes
        self.source_batch_bytes = source_batch_bytes
        self.source_uploads = source_uploads
        self.peer_uploads = peer_uploads
        self.straggle = straggle
        self.penalty = penalty
        self.holders: list[set[str]] = [set() for _ in self.sizes]
        self.need: dict[str, set[int]] = {}
        self.order: dict[str, list[int]] = {}
        self.cursor: dict[str, int] = {}
        self.inflight: dict[str, set[int]] = {}
        self.flying: dict[int, float] = {}  # chunk → when its oldest fetch is overdue
        self.flying_count: dict[int, int] = {}
        self.sourced: set[int] = set()
        self.from_source: dict[str, int] = {}  # source batches in flight per node
        self.peers: dict[str, Peer] = {}
        self.source_hosts: dict[str, tuple[str, int]] = {}
        self.blocked: dict[str, set[str]] = {}  # node → peers it cannot connect to
        #: nodes that could connect to no peer they tried (:data:`ISOLATED_AFTER`)
        self.isolated: set[str] = set()
        self.unreached: dict[str, int] = {}  # node → connects to peers that failed
        self.shy_until: dict[str, float] = {}  # node → when it may try peers again
        self.shy_streak: dict[str, int] = {}  # node → peer failures since its last peer success
        self.links: dict[str, LinkState] = {}  # node → what our SSH link to it shows
        self.source = Peer(SOURCE, "", 0, rate=source_rate)
        self.stats: dict[str, NodeStats] = {}
        self.expected: set[str] = set()
        self.finished: set[str] = set()
        self.fatal: str | None = None
        self._changed = asyncio.Event()
        self._all_done = asyncio.Event()
        #: Set once a node holds the manifest, so later nodes fetch it from peers.
        self.registered = asyncio.Event()
        self.begun = 0
        self._wake_pending = False
        self.source_cursor = 0

    # -- membership --------------------------------------------------------------

    def expect(self, nodes: Sequence[str]) -> None:
        self.expected.update(nodes)
        for name in nodes:
            self.stats.setdefault(name, NodeStats())

    def register(
        self,
        node: str,
        host: str,
        port: int,
        source: tuple[str, int],
        missing: Sequence[int],
        held: Sequence[int],
        path: str = "direct",
        pin: str = "",
    ) -> None:
        self.peers[node] = Peer(node, host, port, pin)
        self.source_hosts[node] = source
        self.need[node] = set(missing)
        self.order[node] = sorted(missing)
        self.cursor[node] = 0
        self.inflight[node] = set()
        for i in held:
            self.holders[i].add(node)
        st = self.stats.setdefault(node, NodeStats())
        st.need_bytes = sum(self.sizes[i] for i in missing)
        st.state, st.path = "fetching", path
        self.registered.set()
        self._notify()

    def manifest_sources(self, source: tuple[str, int], count: int = 2) -> list[list[Any]]:
        """Where a node should fetch the manifest: ``count`` registered peers, then the
        source (each peer it cannot connect to costs it a connect timeout)."""
        peers = [p for p in self.peers.values() if p.alive and not p.lying]
        random.shuffle(peers)
        found = [_address(p.host, p.port, p.pin) for p in peers[:count]]
        return [*found, _address(*source, self.source.pin)]

    def add_need(self, node: str, chunks: Sequence[int]) -> None:
        """Chunks a node turned out to lack at commit time (a local file changed)."""
        self.need[node].update(chunks)
        self.order[node] = sorted(self.need[node])
        self.cursor[node] = 0
        for i in chunks:
            self.holders[i].discard(node)
        self.stats[node].need_bytes += sum(self.sizes[i] for i in chunks)
        self.stats[node].state = "fetching"
        self._notify()

    def node_done(self, node: str) -> None:
        st = self.stats[node]
        st.state, st.finished = "done", time.monotonic()
        self._finish(node)

    def node_failed(self, node: str) -> None:
        st = self.stats.setdefault(node, NodeStats())
        if st.state != "done":
            st.state, st.finished = "failed", time.monotonic()
        peer = self.peers.get(node)
        if peer is not None and st.state == "failed":
            peer.alive = False
        self._finish(node)

    def _finish(self, node: str) -> None:
        self.finished.add(node)
        if self.expected <= self.finished:
            self._all_done.set()
        self._notify()

    async def wait_all(self) -> None:
        await self._all_done.wait()

    def abort(self, reason: str) -> None:
        self.fatal = reason
        self._notify()

    # -- scheduling --------------------------------------------------------------

    def _notify(self) -> None:
        """Wake waiting workers, at most once per :data:`WAKE_DELAY` (completions coalesce)."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            asyncio.get_running_loop().call_later(WAKE_DELAY, self._wake)
        except RuntimeError:  # no loop (unit tests of the bookkeeping)
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = False
        self._changed.set()
        self._changed = asyncio.Event()

    def remaining(self, node: str) -> bool:
        return bool(self.need.get(node))

    async def next_batch(self, node: str) -> Batch | None:
        """The next batch for one of ``node``'s workers; None when it lacks nothing."""
        while True:
            if self.fatal is not None:
                return None
            need = self.need[node]
            if not need:
                return None
            batch = self._plan(node)
            if batch is not None:
                return batch
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass  # re-plan: penalties expire and stragglers age

    def _blocked(self, node: str) -> set[str]:
        """The peers ``node`` cannot connect to: every one, once it is isolated."""
        if node in self.isolated:
            return set(self.peers)
        return self.blocked.get(node, set())

    def _eligible(self, node: str, now: float) -> dict[str, Peer]:
        blocked = self._blocked(node)
        return {
            name: p
            for name, p in self.peers.items()
            if name != node
            and name not in blocked
            and p.alive
            and not p.lying
            and p.penalty_until <= now
            and p.uploads < self.peer_uploads
        }

    def _candidates(self, node: str) -> Iterator[int]:
        """Chunks ``node`` lacks and is not fetching, in order, within a window of
        :data:`WINDOW` from its first missing one (bounded work per decision)."""
        order, need, mine = self.order[node], self.need[node], self.inflight[node]
        start = self.cursor.get(node, 0)
        while start < len(order) and order[start] not in need:
            start += 1
        self.cursor[node] = start
        for k in range(start, min(len(order), start + WINDOW)):
            i = order[k]
            if i in need and i not in mine:
                yield i

    def _unsourced(self, node: str) -> Iterator[int]:
        """Chunks ``node`` lacks that nobody has taken from the source yet, in order."""
        need, mine, sourced = self.need[node], self.inflight[node], self.sourced
        i, n = self.source_cursor, len(self.sizes)
        while i < n and i in sourced:
            i += 1
        self.source_cursor = i
        if len(need) < n // 4:  # few chunks wanted: walk the node's own list from the cursor
            order = self.order[node]
            start = bisect.bisect_left(order, i)  # everything before the cursor is sourced
            for j in order[start : start + 4 * WINDOW]:
                if j not in sourced and j in need and j not in mine:
                    yield j
            return
        for j in range(i, min(n, i + 4 * WINDOW)):
            if j not in sourced and j in need and j not in mine:
                yield j

    def _plan(self, node: str) -> Batch | None:
        now = time.monotonic()
        shy = self.shy_until.get(node, 0.0) > now
        # a node on a lossy path pulls small batches in parallel: each TCP flow stalls on
        # its own doubled retransmission timeouts, so several short ones finish sooner
        small = batch_limit(self.source.rate, self.source_batch_bytes)
        if shy:
            small = max(1, small // SHY_SPLIT)
        source_free = self.source.uploads < self.source_uploads
        # 1. keep the source busy: one stripe per node in flight, new chunks only
        if source_free and not self.from_source.get(node):
            picked = self._take(self._unsourced(node), lambda i: True, small)
            if picked:
                return self._start(node, self.source, picked)
        # 2. from the best peer holding the first chunks we lack
        eligible = {} if shy else self._eligible(node, now)
        if eligible:
            best = self._best_peer(node, eligible)
            if best is not None:
                peer = best
                # the source's link: its per-flow rate times the flows it serves at once
                seconds = batch_seconds(
                    len(self.peers), self.peer_uploads, self.source.rate * self.source_uploads
                )
                picked = self._take(
                    self._candidates(node),
                    lambda i: peer.name in self.holders[i],
                    batch_limit(peer.rate, self.batch_bytes, seconds),
                )
                return self._start(node, peer, picked)
        if not source_free:
            return None
        # 3. nothing from peers: more new chunks from the source, or orphans and
        #    stragglers (sourced, but no live honest holder and none arriving soon)
        picked = self._take(self._unsourced(node), lambda i: True, small)
        if not picked:
            blocked = self._blocked(node)
            live = {n for n, p in self.peers.items() if p.alive and not p.lying} - blocked

            def orphan(i: int) -> bool:
                if shy:
                    return True
                if self.holders[i] & live:
                    return False
                overdue = self.flying.get(i)
                if overdue is None or now > overdue:
                    return True
                # in flight only to nodes this one cannot reach: no use waiting for it
                return bool(blocked) and not any(i in self.inflight.get(n, ()) for n in live)

            picked = self._take(self._candidates(node), orphan, small)
        if not picked:
            return None
        return self._start(node, self.source, picked)

    def _best_peer(self, node: str, eligible: dict[str, Peer]) -> Peer | None:
        """Of the eligible holders of the first chunk ``node`` lacks that any holds, the
        one expected to deliver most: rate / (uploads + 1) times how many of the node's
        next :data:`LOOKAHEAD` wanted chunks it holds (a batch is what one peer holds, and
        each costs a request on the source's link). Measured at 32 nodes, 4 Mbit/s: 1.52x
        S/B against 1.73-1.76x with the least busy holder, but peer batches stay near
        100 KiB: nodes progress in step, so what a peer holds that a node lacks is small."""
        options: list[Peer] = []
        for i in self._candidates(node):
            options = [eligible[h] for h in self.holders[i] if h in eligible]
            if options:
                break
        if not options:
            return None
        ahead = list(islice(self._candidates(node), LOOKAHEAD))
        if len(options) > SAMPLE:
            options = random.sample(options, SAMPLE)

        def value(p: Peer) -> float:
            held = sum(1 for j in ahead if p.name in self.holders[j])
            return max(held, 1) * max(p.rate, 1e5) / (p.uploads + 1)

        return max(options, key=value)

    def _take(self, candidates: Iterator[int], accept: Any, limit: int = 0) -> list[int]:
        picked: list[int] = []
        total = 0
        limit = limit or self.batch_bytes
        for i in candidates:
            if accept(i):
                picked.append(i)
                total += self.sizes[i]
                if total >= limit or len(picked) >= 1000:
                    break
        return picked

    def _start(self, node: str, peer: Peer, chunks: list[int]) -> Batch:
        peer.uploads += 1
        if peer is self.source:
            self.sourced.update(chunks)
            self.from_source[node] = self.from_source.get(node, 0) + 1
        self.inflight[node].update(chunks)
        nbytes = sum(self.sizes[i] for i in chunks)
        overdue = time.monotonic() + overdue_after(self.straggle, nbytes, peer.rate)
        for i in chunks:
            self.flying[i] = min(self.flying.get(i, overdue), overdue)
            self.flying_count[i] = self.flying_count.get(i, 0) + 1
        host, port = self.source_hosts[node] if peer.name == SOURCE else (peer.host, peer.port)
        _log.debug("%s: %d chunk(s) from %s (%s:%s)", node, len(chunks), peer.name, host, port)
        limit = fetch_limit(nbytes, peer.rate)
        return Batch(node, peer.name, host, port, chunks, nbytes, pin=peer.pin, limit=limit)

    def complete(self, batch: Batch, outcome: dict[str, Any] | None) -> None:
        """Record what a fetch did; ``outcome`` None means the worker's own node broke."""
        peer = self.source if batch.source == SOURCE else self.peers.get(batch.source)
        if peer is not None:
            peer.uploads = max(0, peer.uploads - 1)
        node = batch.node
        if batch.source == SOURCE:
            self.from_source[node] = max(0, self.from_source.get(node, 1) - 1)
        self.inflight[node].difference_update(batch.chunks)
        for i in batch.chunks:
            left = self.flying_count.get(i, 1) - 1
            if left <= 0:
                self.flying_count.pop(i, None)
                self.flying.pop(i, None)
            else:
                self.flying_count[i] = left
        st = self.stats[node]
        if outcome is None:
            self._notify()
            return
        got = [i for i in outcome.get("got", []) if 0 <= i < len(self.sizes)]
        for i in got:
            self.need[node].discard(i)
            self.holders[i].add(node)
        nbytes = int(outcome.get("bytes", 0))
        st.received += nbytes
        if batch.source == SOURCE:
            st.from_source += nbytes
        else:
            st.from_peers += nbytes
        seconds = float(outcome.get("seconds", 0.0))
        if peer is not None and nbytes and seconds > 0:
            peer.rate = 0.7 * peer.rate + 0.3 * (nbytes / seconds)
        failed = outcome.get("failed", [])
        if failed:
            _log.debug(
                "%s: %d of %d chunk(s) from %s failed after %.1fs: %s",
                node, len(failed), len(batch.chunks), batch.source,
                time.monotonic() - batch.started, outcome.get("error") or "-",
            )  # fmt: skip
        if batch.source != SOURCE and not outcome.get("unreachable"):
            # (a peer it cannot connect to is blocked below: no reason to shun the others)
            if failed and not got:
                # its peers fail it (a lossy or congested path): the source for a while,
                # twice as long at each failure in a row (two lossy links lose far more
                # than one: at 30 % each way, 200 KB node to node took over 70 s, 2-8 s
                # from the controller)
                streak = self.shy_streak.get(node, 0)
                self.shy_streak[node] = streak + 1
                self.shy_until[node] = time.monotonic() + self.penalty * 2 ** min(streak, 6)
            elif got:
                self.shy_streak[node] = 0
        if outcome.get("unreachable") and peer is not None and peer is not self.source:
            # a fact about this pair (NAT, a firewall), not the peer's fault nor the node's
            _log.info("%s cannot connect to peer %s: %s", node, peer.name, outcome.get("error"))
            self.blocked.setdefault(node, set()).add(peer.name)
            misses = self.unreached[node] = self.unreached.get(node, 0) + 1
            link = self.links.get(node)
            clean = link is None or link.loss < ISOLATE_MAX_LOSS  # lossy: SYNs were lost
            if (
                misses >= ISOLATED_AFTER
                and clean
                and not st.from_peers
                and node not in self.isolated
            ):
                # it connects to no one (a firewall on its side): each peer left to try
                # would cost a connect timeout, so the source serves it from now on
                _log.info("%s reached no peer in %d tries: source only", node, misses)
                self.isolated.add(node)
            self._notify()
            return
        if outcome.get("lying") and peer is not None:
            st.rejected += 1
            _log.warning("%s: chunks from %s did not match their hashes", node, batch.source)
            if peer is not self.source:
                peer.lying = True
        elif failed and peer is not None:
            if peer is self.source:
                if not outcome.get("error"):
                    self.abort("the source no longer has some chunks (a local file changed)")
            else:
                peer.penalty_until = time.monotonic() + self.penalty
        st.failures = st.failures + 1 if failed and not got else 0
        if not failed:
            st.failures = 0
        self._notify()

    # -- progress ------------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """(bytes received, bytes needed) over every node."""
        return (
            sum(s.received for s in self.stats.values()),
            sum(s.need_bytes for s in self.stats.values()),
        )
