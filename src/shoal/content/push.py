"""``shoal push``, ``shoal rollback`` and ``shoal versions`` as library calls.

Theory of operation of a push (the coordinator is :mod:`.swarm`, the node side
:mod:`shoal.agent.pushsession`, the on-disk switch :mod:`shoal.agent.activate`):

1. The source scans ``LOCAL_DIR`` into a manifest (:func:`.scan.scan`); its
   hash is the version id. A random token is made for this push.
2. Agents are installed or upgraded where needed (one SSH round when they are
   up to date). Each node's connection learns, from ``$SSH_CONNECTION``, the
   address the node sees the controller at and its own address; the
   controller starts a read-only chunk server (:class:`.scan.SourceBackend`)
   on the former, so nodes can reach the source without any new service.
3. Each node's agent gets ``content.begin`` over SSH (token included), first
   checks it can connect to that server (NAT, ``ProxyJump`` and closed inbound
   ports say no, and so does an address that is not ours to bind): if not,
   the source is tunnelled through the node's SSH connection (a remote port
   forward to a chunk server on our loopback: same token, same hashes) and
   the node fetches from a port on its own loopback, ``path`` "ssh-tunnel"
   (else "direct"); peers stay direct where they reach each other. Unless
   :attr:`PushOptions.plain_data`, every chunk server speaks TLS with a key
   and certificate made for this push (:mod:`.datatls`): the node's own go to
   it in ``content.begin``, and every fetch pins the server's fingerprint (the
   controller's, or the one each node's ``begin`` answered), so chunk bytes
   and the token cross the network encrypted, to the intended server only
   (the tunnelled path too: TLS inside SSH, one code path). It then
   fetches the manifest, validates it, and says which chunks it lacks after
   counting what its store and its deployed versions already hold.
4. :data:`PushOptions.pipeline` workers per node fetch batches the swarm
   assigns (peers first, the source striped, fallbacks for the dead, lying and
   slow) until nothing is missing; then ``content.commit`` assembles the version
   beside the old one and switches ``REMOTE_DIR`` atomically (or, with
   :attr:`PushOptions.switch` off, only stages it there: :func:`activate_async`
   switches later with one rename per node, as a rollout does).
5. Finished nodes keep serving until every node has finished or failed, then
   ``content.end`` closes the session (the token dies, the store is emptied).
   A node that failed is told to end its session too but keep its store (its
   port closes; the agent deletes the store after a while), so running the
   same push again soon fetches only what it still lacks.

Every node ends with a :class:`NodePush` (the per-node outcome of
:mod:`shoal.fanout.results`: the version now current there, or an error, and
the bytes it moved either way); one dead node never stops the others.
Nothing is recorded in the failed set: adapters pass the result to
:func:`shoal.nodes.health.record` with ``Policy.REACHABILITY``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.agent.chunkserver import ChunkServer
from shoal.agent.chunkstore import Throttle
from shoal.agent.linkwaits import RTO_MIN, FetchWaits, fetch_waits, path_loss, probe_seconds
from shoal.agentlink.agentclient import AgentClient
from shoal.agentlink.fleet import (
    AgentOptions,
    AgentOutcome,
    call_async,
    connect_agent,
    install_async,
)
from shoal.errors import AgentError, ChunkFetchError, ConnectError, ContentError, TransportError
from shoal.fanout.results import NodeOutcome, Results
from shoal.fanout.scheduler import fanout
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Connection, RemoteForward, Transport

from .datatls import Identity, make_identity
from .depot import Depot, record_deployed
from .scan import ChunkParams, ScannedTree, SourceBackend, load_cache, save_cache, scan
from .swarm import MAX_FAILURES, PIPELINE, SOURCE_RATE_GUESS, Batch, NodeStats, Swarm


@dataclass
class PushOptions(AgentOptions):
    """Agent fan-out options plus the knobs of a push."""

    pack: bool = False  # -a: small files in compressed packs
    keep: int = 3  # versions kept on each node, the current one included
    rate_limit: float | None = None  # bytes/s per node, each direction
    source_rate: float | None = None  # bytes/s out of the controller's chunk server
    allow_setuid: bool = False
    replace_empty_dir: bool = False  # an empty directory at REMOTE_DIR may be replaced
    durable: bool = True  # flush the node's file system (syncfs) before the switch
    install: bool = True  # install or upgrade agents first
    #: Nodes whose connection broke mid-push (not refusals) get this many more rounds.
    retry_rounds: int = 1
    pipeline: int = PIPELINE
    batch_bytes: int = 1 << 20
    source_batch_bytes: int = 256 << 10
    source_uploads: int = 16
    chunking: ChunkParams = field(default_factory=ChunkParams)
    commit_timeout: float = 900.0
    #: Switch REMOTE_DIR to the new version; False stages it (see :func:`activate_async`).
    switch: bool = True
    #: Chunks and token in clear TCP (trusted networks): no TLS, no certificates.
    plain_data: bool = False


@dataclass
class NodePush(NodeOutcome[str]):
    """How the push went on one node: ``value`` is the version now current there.

    The byte counts are kept for a node that failed too (what it had fetched
    and verified is not fetched again by a re-run).
    """

    previous: str | None = None
    staged: str | None = None  # the version assembled here but not switched to
    need_bytes: int = 0
    received: int = 0
    from_source: int = 0
    from_peers: int = 0
    reused: int = 0
    rejected: int = 0
    path: str = ""  # how it reached the source: "direct" or "ssh-tunnel" ("" if it never did)

    @property
    def current(self) -> str | None:
        return self.value


@dataclass
class PushResult(Results[NodePush]):
    """Every node's :class:`NodePush`, in the order given, and the push's totals."""

    version: str = ""
    total_bytes: int = 0
    files: int = 0
    source_sent: int = 0
    scan_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


@dataclass
class PushProgress:
    """A snapshot for a live display."""

    received: int
    needed: int
    nodes_done: int
    nodes_failed: int
    nodes_total: int
    elapsed: float
    rate: float  # bytes/s received over all nodes
    source_sent: int
    #: Each node's counts so far (copies: received, from_source, from_peers, state...).
    nodes: dict[str, NodeStats] = field(default_factory=dict)

    @property
    def eta(self) -> float | None:
        left = self.needed - self.received
        return left / self.rate if self.rate > 0 and left > 0 else None


ProgressCallback = Callable[[PushProgress], None]


class _SourceServers:
    """The controller's chunk servers, one per address nodes see it at."""

    def __init__(
        self, tree: ScannedTree, token: str, rate: float | None, identity: Identity | None
    ) -> None:
        self.backend = SourceBackend(tree)
        self.throttle = Throttle(rate)
        self.token = token
        self.tls = identity.context() if identity is not None else None
        self.fingerprint = identity.fingerprint if identity is not None else ""
        self.servers: dict[str, asyncio.Task[tuple[ChunkServer, int]]] = {}

    async def _start(self, addr: str) -> tuple[ChunkServer, int]:
        server = ChunkServer(self.backend, self.throttle, self.tls, self.fingerprint)
        server.tokens.add(self.token)
        try:
            port = await server.start(addr, 0)
        except OSError as exc:
            raise ContentError(f"cannot serve chunks on {addr}: {exc.strerror or exc}") from None
        return server, port

    async def port_for(self, addr: str) -> int:
        task = self.servers.get(addr)
        if task is None:
            task = asyncio.ensure_future(self._start(addr))
            self.servers[addr] = task
        return (await task)[1]

    async def tunnel(self, conn: Connection) -> RemoteForward:
        """A port on the node's loopback carried through its SSH connection to our
        chunk server on 127.0.0.1 (for a node that cannot connect to us)."""
        return await conn.forward_remote("127.0.0.1", await self.port_for("127.0.0.1"))

    @property
    def sent(self) -> int:
        return sum(t.result()[0].stats.sent for t in self.servers.values() if _done(t))

    def close(self) -> None:
        for task in self.servers.values():
            if _done(task):
                task.result()[0].close()
            else:
                task.cancel()


def _done(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def addresses(conn: Connection) -> tuple[str, str]:
    """(controller address as the node sees it, the node's own address), from SSH."""
    res = await conn.run('printf "%s" "$SSH_CONNECTION"', timeout=30)
    parts = res.stdout.decode(errors="replace").split()
    if res.exit_status != 0 or len(parts) != 4:
        raise ContentError("cannot learn addresses from $SSH_CONNECTION", node=conn.node.name)
    return parts[0], parts[2]


async def push_async(
    nodes: Sequence[Node],
    local_dir: str | Path,
    remote_dir: str,
    options: PushOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_progress: ProgressCallback | None = None,
    tree: ScannedTree | None = None,
) -> PushResult:
    """Push ``local_dir`` to ``remote_dir`` on ``nodes``; see the module docstring.

    ``local_dir`` may be ``depot:NAME@VERSION`` (served from the depot's store,
    :mod:`.depot`); ``tree`` reuses an earlier :func:`.scan.scan` of ``local_dir``.
    What each node now holds is recorded (:func:`.depot.record_deployed`).
    """
    opts = options or PushOptions()
    if opts.keep < 1:
        raise ContentError("--keep must be at least 1")
    started = time.monotonic()
    with opened(state) as st:
        if tree is None:
            tree = await scan_source(local_dir, opts, st)
        result = PushResult(
            version=tree.version,
            total_bytes=tree.total_bytes,
            files=sum(1 for e in tree.manifest.entries if e.kind == "f"),
            scan_seconds=time.monotonic() - started,
            skipped=list(tree.skipped),
        )
        ready = await _installed(list(nodes), opts, transport, st, result)
        await _swarm_push(ready, tree, remote_dir, opts, transport, st, on_progress, result)
        for _ in range(opts.retry_rounds):
            # a link that broke or went silent, in the install or the push, gets a new one
            again = [n for n in nodes if _retryable(result.results.get(n.name))]
            again = await _installed(again, opts, transport, st, result)
            if not again:
                break
            await _swarm_push(again, tree, remote_dir, opts, transport, st, on_progress, result)
        record_deployed(st, remote_dir, {n.node: n.current for n in result if n.ok and n.current})
    result.results = {n.name: result[n.name] for n in nodes if n.name in result}
    result.duration = time.monotonic() - started
    return result


async def _installed(
    nodes: list[Node],
    opts: PushOptions,
    transport: Transport | None,
    st: State,
    result: PushResult,
) -> list[Node]:
    """``nodes`` whose agent is installed and running (all of them without ``install``);
    the others' failures go into ``result``."""
    if not opts.install or not nodes:
        return nodes
    installed = await install_async(nodes, opts, transport=transport, state=st)
    for r in installed.failed:
        result.results[r.node] = NodePush(r.node, error=r.error)
    return [n for n in nodes if installed[n.name].ok]


def _retryable(outcome: NodePush | None) -> bool:
    """A node whose link broke mid-push (it may resume); not a refusal, not unreachable
    (the scheduler already retried its connection, ``--retries``)."""
    if outcome is None or outcome.ok or outcome.error is None:
        return False
    return outcome.error.retryable and not isinstance(outcome.error, ConnectError)


async def scan_source(local_dir: str | Path, opts: PushOptions, st: State) -> ScannedTree:
    """The tree a push of ``local_dir`` sends (a depot entry's, or a scan of the directory)."""
    if str(local_dir).startswith("depot:"):
        return Depot(st).tree(str(local_dir))[1]
    return await _scan(Path(local_dir), opts, st)


async def _scan(root: Path, opts: PushOptions, st: State) -> ScannedTree:
    """Scan in a thread, with the controller's cache of unchanged files' chunks."""
    cache = load_cache(st, root, opts.chunking) if root.is_dir() else {}
    tree = await asyncio.get_running_loop().run_in_executor(
        None, lambda: scan(root, pack=opts.pack, params=opts.chunking, cache=cache)
    )
    if cache:
        save_cache(st, cache, opts.chunking)
    return tree


async def _swarm_push(
    nodes: list[Node],
    tree: ScannedTree,
    remote_dir: str,
    opts: PushOptions,
    transport: Transport | None,
    st: State,
    on_progress: ProgressCallback | None,
    result: PushResult,
) -> None:
    token = secrets.token_hex(16)
    swarm = Swarm(
        tree.chunks,
        batch_bytes=opts.batch_bytes,
        source_batch_bytes=opts.source_batch_bytes,
        source_uploads=opts.source_uploads,
        peer_uploads=opts.pipeline,
        source_rate=SOURCE_RATE_GUESS,
    )
    swarm.expect([n.name for n in nodes])
    identity = None if opts.plain_data else make_identity("controller")
    servers = _SourceServers(tree, token, opts.source_rate, identity)
    swarm.source.pin = servers.fingerprint
    began = time.monotonic()

    async def op(conn: Connection, node: Node, index: int) -> AgentOutcome:
        try:
            info = await _node_push(conn, node, st, tree, remote_dir, opts, swarm, servers, token)
        except BaseException:
            swarm.node_failed(node.name)
            raise
        return NodeOutcome(node.name, value=info)

    def finished(r: AgentOutcome) -> None:
        if not r.ok:
            swarm.node_failed(r.node)

    async def ticker() -> None:
        while on_progress is not None:
            await asyncio.sleep(0.25)
            on_progress(_progress(swarm, servers, began))

    tick = asyncio.ensure_future(ticker())
    try:
        fanned = await fanout(nodes, op, opts, transport=transport, on_result=finished)
    finally:
        tick.cancel()
        servers.close()
    if on_progress is not None:
        on_progress(_progress(swarm, servers, began))
    result.source_sent += servers.sent
    for r in fanned:
        stats = swarm.stats.get(r.node, NodeStats())
        info = r.value or {}
        before = result.results.get(r.node) or NodePush(r.node)
        result.results[r.node] = NodePush(
            r.node,
            value=info.get("current"),
            error=r.error,
            previous=info.get("previous"),
            staged=info.get("staged"),
            need_bytes=max(stats.need_bytes, before.need_bytes),
            received=before.received + stats.received,
            from_source=before.from_source + stats.from_source,
            from_peers=before.from_peers + stats.from_peers,
            reused=int(info.get("reused", 0)),
            rejected=before.rejected + stats.rejected,
            path=stats.path or before.path,
            duration=before.duration + ((stats.finished or time.monotonic()) - began),
        )


def _progress(swarm: Swarm, servers: _SourceServers, began: float) -> PushProgress:
    received, needed = swarm.totals()
    elapsed = time.monotonic() - began
    states = [s.state for s in swarm.stats.values()]
    return PushProgress(
        received,
        needed,
        states.count("done"),
        states.count("failed"),
        len(states),
        elapsed,
        received / elapsed if elapsed > 0 else 0.0,
        servers.sent,
        {name: dataclasses.replace(s) for name, s in swarm.stats.items()},
    )


async def _node_push(
    conn: Connection,
    node: Node,
    st: State,
    tree: ScannedTree,
    remote_dir: str,
    opts: PushOptions,
    swarm: Swarm,
    servers: _SourceServers,
    token: str,
) -> dict[str, Any]:
    controller_addr, node_addr = await addresses(conn)
    source: tuple[str, int] | None = None
    why = ""
    try:
        source = (controller_addr, await servers.port_for(controller_addr))
    except ContentError as exc:  # not an address of ours (NAT, a jump host): tunnel
        why = str(exc)
    forward: RemoteForward | None = None
    tls = None if opts.plain_data else make_identity(node.name)
    client = await connect_agent(conn, node, st, opts)
    swarm.begun += 1
    if swarm.begun > 1 and not swarm.registered.is_set():
        try:  # let the first node fetch the manifest from the source; the rest from peers
            await asyncio.wait_for(swarm.registered.wait(), 10.0)
        except asyncio.TimeoutError:
            pass
    session = {"version": tree.version, "dir": remote_dir}
    try:
        begin: dict[str, Any] = {"unreachable": why}
        if source is not None:
            begin = await _begin(
                client, tree, remote_dir, opts, swarm, token, source, node_addr, tls, conn
            )
        if begin.get("unreachable"):
            why = begin["unreachable"]
            forward = await servers.tunnel(conn)
            source = (forward.host, forward.port)
            # one peer before the source: it may reach none (a firewall on its side)
            begin = await _begin(
                client, tree, remote_dir, opts, swarm, token, source, node_addr, tls, conn,
                peers=1,
            )  # fmt: skip
            if begin.get("unreachable"):
                raise ContentError(
                    f"cannot reach the controller's chunk server ({why}) "
                    f"nor through SSH ({begin['unreachable']})",
                    node=node.name,
                )
        assert source is not None
        path = "direct" if forward is None else "ssh-tunnel"
        pin = str(begin.get("fingerprint") or "")
        if tls is not None and not pin:
            raise ContentError(
                "its chunk server does not speak TLS (agent too old?)", node=node.name
            )
        swarm.register(
            node.name,
            node_addr,
            int(begin["port"]),
            source,
            begin["missing"],
            begin["held"],
            path,
            pin=pin,
        )
        outcome: dict[str, Any] = {}
        for _ in range(3):
            await _fetch_all(conn, client, node, swarm, opts, session)
            if swarm.fatal is not None:
                raise ContentError(f"push aborted: {swarm.fatal}", node=node.name)
            swarm.stats[node.name].state = "committing"
            outcome = await client.call(
                "content.commit", timeout=opts.commit_timeout, switch=opts.switch, **session
            )
            if outcome.get("need"):
                swarm.add_need(node.name, outcome["need"])
                continue
            break
        else:
            raise ContentError("local files kept changing during the push", node=node.name)
        swarm.node_done(node.name)
        await swarm.wait_all()
        try:
            await client.call("content.end", timeout=60, **session)
        except AgentError:
            pass  # the version is live; the session times out on its own
        outcome["reused"] = int(outcome.get("reused", 0))
        return outcome
    except Exception:
        try:  # the node's port closes now; its store waits for a re-run
            await client.call("content.end", timeout=10, keep=True, **session)
        except Exception:  # best effort on a node that already failed
            pass  # unreachable: the session expires there on its own
        raise
    finally:
        await client.close()
        if forward is not None:
            forward.close()


async def _begin(
    client: AgentClient,
    tree: ScannedTree,
    remote_dir: str,
    opts: PushOptions,
    swarm: Swarm,
    token: str,
    source: tuple[str, int],
    node_addr: str,
    tls: Identity | None,
    conn: Connection,
    peers: int = 2,
) -> dict[str, Any]:
    """``content.begin`` with the source at ``source`` (answers ``unreachable`` if the
    node cannot connect to it, having opened nothing); ``tls``: the node's own key and
    certificate to serve with; the manifest from ``peers`` peers, then the source. Its
    waits follow the loss ``conn``'s link shows (its manifest may come from a peer: a
    path across two links like it)."""
    link = conn.link()
    loss = link.loss if link is not None else 0.0
    rto = link.rto if link is not None else RTO_MIN
    return await client.call(
        "content.begin",
        timeout=120,
        dir=remote_dir,
        version=tree.version,
        blob=tree.blob_hash,
        blob_size=len(tree.blob),
        token=token,
        sources=swarm.manifest_sources(source, peers),
        probe=list(source),
        probe_seconds=probe_seconds(loss),
        waits=fetch_waits(path_loss(loss, loss), rto).wire(),
        bind=node_addr,
        rate=opts.rate_limit,
        keep=opts.keep,
        allow_setuid=opts.allow_setuid,
        replace_empty_dir=opts.replace_empty_dir,
        durable=opts.durable,
        tls=tls.wire() if tls is not None else None,
    )


async def _fetch_all(
    conn: Connection,
    client: AgentClient,
    node: Node,
    swarm: Swarm,
    opts: PushOptions,
    session: dict[str, str],
) -> None:
    """Run the node's workers until it lacks nothing; raise if the node breaks."""
    if not swarm.remaining(node.name):
        return

    async def worker(agent: AgentClient) -> None:
        while True:
            batch = await swarm.next_batch(node.name)
            if batch is None:
                return
            timeout = batch.limit
            waits = _link_waits(conn, swarm, batch.source)
            # the agent connects (and shakes hands) before its limit starts
            wait = timeout + waits.connect + waits.handshake + ANSWER_MARGIN
            call = agent.call(
                "content.fetch",
                timeout=wait + 5.0,  # a backstop: the wait_for below decides
                source=batch.address,
                chunks=batch.chunks,
                limit=timeout,
                waits=waits.wire(),
                **session,
            )
            try:
                outcome = await asyncio.wait_for(call, wait)
            except asyncio.TimeoutError:
                # a lossy link can hold the answer back: this batch failed, not the node
                # (MAX_FAILURES in a row still end it); a late answer is skipped by its id
                outcome = {"failed": batch.chunks, "error": "no answer over SSH in time"}
            except BaseException:
                swarm.complete(batch, None)
                raise
            swarm.complete(batch, outcome)
            _check(node, swarm, batch, outcome)

    extras: list[AgentClient] = []

    async def extra() -> None:
        # the first worker fetches at once; each further one starts when its own agent
        # conversation is open (a round trip or more over a lossy link); one that cannot
        # open costs speed, not the node (the first worker's failures decide that)
        try:
            agent = await AgentClient.open(conn, client.home, opts.python)
        except (AgentError, TransportError):
            return
        extras.append(agent)
        await worker(agent)

    tasks = [asyncio.ensure_future(worker(client))]
    tasks += [asyncio.ensure_future(extra()) for _ in range(max(0, opts.pipeline - 1))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in extras:
            await a.close()


#: Seconds a fetch's answer may take over SSH beyond the fetch's own limit.
ANSWER_MARGIN = 15.0


def _link_waits(conn: Connection, swarm: Swarm, source: str) -> FetchWaits:
    """The waits of a fetch by ``conn``'s node from ``source`` (a peer's name, or the
    source: our end of that path is clean to us), from the loss and RTO our SSH links
    to the node and to the peer show now (:mod:`shoal.agent.linkwaits`)."""
    here = conn.link()
    if here is not None:
        swarm.links[conn.node.name] = here
    ends = [e for e in (here, swarm.links.get(source)) if e is not None]
    loss = path_loss(*(e.loss for e in ends))
    return fetch_waits(loss, max((e.rto for e in ends), default=RTO_MIN))


def _check(node: Node, swarm: Swarm, batch: Batch, outcome: dict[str, Any]) -> None:
    if outcome.get("local"):
        raise ContentError(str(outcome.get("error")), node=node.name)
    if swarm.stats[node.name].failures > MAX_FAILURES:
        raise ChunkFetchError(
            f"cannot fetch chunks (last from {batch.source}: {outcome.get('error')})",
            node=node.name,
        )


def push(
    nodes: Sequence[Node],
    local_dir: str | Path,
    remote_dir: str,
    options: PushOptions | None = None,
    **kwargs: Any,
) -> PushResult:
    """Synchronous :func:`push_async` (for adapters and scripts without an event loop)."""
    return asyncio.run(push_async(nodes, local_dir, remote_dir, options, **kwargs))


async def versions_async(
    nodes: Sequence[Node],
    remote_dir: str,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
) -> Results[AgentOutcome]:
    """Each node's current version of ``remote_dir`` and the versions it keeps."""
    return await call_async(
        nodes, "content.versions", {"dir": remote_dir}, options, transport=transport
    )


async def rollback_async(
    nodes: Sequence[Node],
    remote_dir: str,
    to: str | None = None,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
) -> Results[AgentOutcome]:
    """Switch ``remote_dir`` back to the previous version (or ``to``) on every node
    (and note what each now holds, :func:`.depot.record_deployed`)."""
    args: dict[str, Any] = {"dir": remote_dir}
    if to:
        args["to"] = to
    results = await call_async(nodes, "content.rollback", args, options, transport=transport)
    _record(results, remote_dir, None)
    return results


async def activate_async(
    nodes: Sequence[Node],
    remote_dir: str,
    version: str,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """Switch ``remote_dir`` to ``version``, staged or kept there, on every node: one
    rename each, no transfer (what a push with ``switch=False`` left ready)."""
    args = {"dir": remote_dir, "version": version}
    results = await call_async(
        nodes, "content.activate", args, options, transport=transport, state=state
    )
    _record(results, remote_dir, state)
    return results


def _record(results: Results[AgentOutcome], remote_dir: str, state: State | None) -> None:
    now = {r.node: (r.value or {}).get("current") for r in results if r.ok}
    with opened(state) as st:
        record_deployed(st, remote_dir, {node: v for node, v in now.items() if v})
