"""Agent install and upgrade over the data plane: nodes that have the zipapp serve it.

Theory of operation. :func:`install_async` is :func:`shoal.agentlink.fleet.install_async`
(same steps, same outcomes) in waves when the fleet is large (:data:`SPREAD_FROM`
nodes or more) or asked to: the first wave (``first`` nodes) gets the zipapp by
SFTP from this machine; every node of a wave that runs the new build then
*shares* it (``agent.share``: its agent serves its ``agent.pyz`` in pieces on
the chunk wire, TLS with a key and certificate made here for it, behind a fresh
random token); the next wave, up to :data:`FAN` nodes per holder, fetches it
from holders with the stdlib bootstrap :mod:`shoal.agent.bootfetch`, sent over
each node's SSH connection with the token and the holders' pins on its
standard input. So this machine's link carries the zipapp about once per node
of the first wave, not once per node, and waves grow geometrically.

Nothing starts a process on a node but SSH (the bootstrap, the install steps);
nothing reads the pieces without the token; the fetching node pins each
holder's certificate and checks every piece's and the whole file's SHA-256
before it writes ``agent.pyz.new`` (then the install step checks that the new
build starts before renaming it in): a corrupt or partial copy is refused and
leaves the old agent as it was. A node that no holder serves (every one
unreachable or refused) gets the file by SFTP after all (``fallback``) or fails
with one line naming the node, the path and each holder's refusal. Every share
is closed when the install ends (the holders' ports close by themselves after
:data:`shoal.agent.agentshare.IDLE_SECONDS` if this process dies).
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.agent import bootfetch
from shoal.agent.build import AgentBuild, build
from shoal.agentlink import fleet
from shoal.agentlink.agentclient import AgentClient
from shoal.agentlink.fleet import AgentOptions, AgentOutcome, Write
from shoal.errors import AgentError
from shoal.fanout.results import NodeOutcome, Results
from shoal.fanout.scheduler import ResultCallback
from shoal.logsetup import logger
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Connection, Transport

from .datatls import make_identity

_log = logger(__name__)

#: Fleets of this many nodes or more spread the zipapp (fewer: SFTP to each).
SPREAD_FROM = 16
#: Nodes of the first wave (by SFTP from this machine).
FIRST = 2
#: Nodes of the next wave per holder.
FAN = 4
#: Holders one node's bootstrap tries, in turn.
TRIES = 3
#: The bootstrap's whole run on a node (its fetches are bounded on their own).
BOOT_SECONDS = 120.0


@dataclass
class Sharing:
    """The holders sharing one build, and the copy step that fetches from them."""

    agent: AgentBuild
    options: AgentOptions
    transport: Transport | None
    state: State
    fallback: bool = True
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    #: [host, port, pin] of every holder, in the order they began sharing
    peers: list[list[Any]] = field(default_factory=list)
    holders: list[Node] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    served: int = 0
    #: nodes that got the file from a peer, and those that fell back to SFTP
    fetched: dict[str, str] = field(default_factory=dict)
    fell_back: dict[str, str] = field(default_factory=dict)

    async def add(self, nodes: Sequence[Node]) -> None:
        """``nodes`` (running this build) share it; those that cannot are left out."""

        async def talk(
            client: AgentClient, node: Node, st: State, opts: AgentOptions
        ) -> AgentOutcome:
            identity = make_identity(node.name)
            answer = await client.call(
                "agent.share",
                timeout=opts.call_timeout,
                token=self.token,
                tls=identity.wire(),
                build=self.agent.build_id,
            )
            if answer.get("fingerprint") != identity.fingerprint:
                raise AgentError("agent.share: another certificate answered", node=node.name)
            return NodeOutcome(node.name, value=answer)

        results = await fleet.each_agent(
            nodes, talk, self.options, transport=self.transport, state=self.state
        )
        for node in nodes:
            outcome = results[node.name]
            if not outcome.ok:
                _log.warning("%s: cannot share the agent: %s", node.name, outcome.reason)
                continue
            answer: dict[str, Any] = outcome.value or {}
            if answer.get("sha256") != self.agent.sha256:
                _log.warning("%s: its agent.pyz is not build %s", node.name, self.agent.build_id)
                continue
            self.shared = answer
            self.holders.append(node)
            self.peers.append([node.address, answer["port"], answer["fingerprint"]])

    async def copy(self, conn: Connection, node: Node, home: str, python: str) -> None:
        """:data:`shoal.agentlink.fleet.Copy`: ``<home>/agent.pyz.new`` from holders."""
        start = self.served % len(self.peers)
        self.served += 1
        ring = self.peers[start:] + self.peers[:start]
        dest = f"{home}/agent.pyz.new"
        params = {
            "peers": [p for p in ring if p[0] != node.address][:TRIES],
            "token": self.token,
            "pieces": self.shared["pieces"],
            "size": self.shared["size"],
            "sha256": self.shared["sha256"],
            "dest": dest,
        }
        res = await conn.run(
            f"{shlex.quote(python)} -c {shlex.quote(bootfetch.COMMAND)}",
            input=bootfetch.program(params),
            timeout=BOOT_SECONDS,
        )
        if res.exit_status == 0:
            self.fetched[node.name] = res.stdout.decode(errors="replace").strip()
            return
        said = res.stderr.decode(errors="replace").strip().splitlines()
        why = said[-1] if said else f"exit {res.exit_status}"
        if not self.fallback:
            raise AgentError(f"fetching {dest} from peers failed: {why}", node=node.name)
        _log.warning("%s: %s; copying it from this machine", node.name, why)
        self.fell_back[node.name] = why
        await conn.put(str(fleet.local_zipapp(self.agent)), dest)

    async def close(self) -> None:
        """Every holder stops sharing (their ports close)."""
        if not self.holders:
            return

        async def talk(
            client: AgentClient, node: Node, st: State, opts: AgentOptions
        ) -> AgentOutcome:
            return NodeOutcome(
                node.name, value=await client.call("agent.unshare", token=self.token)
            )

        await fleet.each_agent(
            self.holders, talk, self.options, transport=self.transport, state=self.state
        )


async def install_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    upgrade_only: bool = False,
    state: State | None = None,
    agent: AgentBuild | None = None,
    on_result: ResultCallback[AgentOutcome] | None = None,
    batch: str | None = None,
    write: Write | None = None,
    spread: bool | None = None,
    first: int = FIRST,
    fallback: bool = True,
    sharing: Sharing | None = None,
) -> Results[AgentOutcome]:
    """:func:`shoal.agentlink.fleet.install_async`, in waves over the data plane when
    ``spread`` (None: with :data:`SPREAD_FROM` nodes or more, and no ``batch``, which
    has its own waves); ``sharing`` (tests) is the :class:`Sharing` to use."""
    agent = agent or build()
    opts = options or AgentOptions()
    nodes = list(nodes)
    wanted = len(nodes) >= SPREAD_FROM and not batch if spread is None else spread
    common: dict[str, Any] = dict(
        transport=transport, upgrade_only=upgrade_only, agent=agent, on_result=on_result,
        write=write,
    )  # fmt: skip
    if not wanted:
        return await fleet.install_async(nodes, opts, state=state, batch=batch, **common)
    with opened(state) as st:
        share = sharing or Sharing(agent, opts, transport, st, fallback)
        done: dict[str, AgentOutcome] = {}
        duration = 0.0
        wave, rest = nodes[: max(1, first)], nodes[max(1, first) :]
        try:
            while wave:
                copy = share.copy if share.peers else None
                results = await fleet.install_async(wave, opts, state=st, copy=copy, **common)
                done.update(results.results)
                duration += results.duration
                await share.add([n for n in wave if _runs(results[n.name], agent)])
                size = max(1, first, len(share.peers) * FAN)
                wave, rest = rest[:size], rest[size:]
        finally:
            await share.close()
    _log.info(
        "agent %s: %d nodes fetched it from peers, %d by SFTP after a refusal",
        *(agent.build_id, len(share.fetched), len(share.fell_back)),
    )
    return Results({n.name: done[n.name] for n in nodes}, duration)


def _runs(outcome: AgentOutcome, agent: AgentBuild) -> bool:
    value = outcome.value if outcome.ok else None
    return isinstance(value, dict) and value.get("build") == agent.build_id
