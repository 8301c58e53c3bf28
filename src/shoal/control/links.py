"""Warm links: one held SSH connection per managed node, its agent watched, its failures seen.

Theory of operation. :class:`Links` keeps one :class:`Link` per node. Each
link's task loops: attach (one SSH connection made by
:func:`shoal.transport.factory.make_transport`, so host keys are verified
exactly as the CLI verifies them), ensure the agent (the cached working area's
agent answering ``hello`` with this build; else the fleet's install step:
probe, install or upgrade, start), then watch it over one long-lived agent
stream until that breaks. Everything heard on the stream (beats, replies,
events) feeds the node's :class:`~.detector.Detector`; events go to the
journal; beats and ping times feed :class:`~.livefacts.LiveFacts`.

* **Attach at a bounded rate**: every handshake passes :class:`AttachGate`, a
  token bucket (``attach_rate`` per second, ``attach_burst``), a cap on
  handshakes in flight (``handshakes``, 64: the client's CPU) and one per sshd
  that counts them (``handshakes_per_sshd``, 8: below sshd's default
  ``MaxStartups 10:30:100``; nodes behind one ``ProxyJump`` share their jump
  host's).
* **Reconnect** with exponential backoff and full jitter (``backoff_base``
  doubling to ``backoff_cap``); the detector's ``reconnect`` hint (a down
  node's host answers TCP again, or a live host's channel is wedged) cuts a
  wait short. An sshd that refuses at attach
  (``MaxStartups`` drops the connection in the banner) is retried, and a node
  is marked down only when the detector's probe also finds no sshd.
* **Link states** (:class:`LinkState`): ``attaching`` (never up since this
  process started), ``up``, ``suspect``, ``down`` (in the failed set with the
  detector's reason), ``no-agent`` (reached, but no agent could be started),
  ``refused`` (host key changed or unknown, or authentication refused: the
  CLI's message; that node alone).
* **An agent killed under a held channel**: the stream ends while the SSH
  connection lives: ``agent_lost``, the agent is started again over the held
  connection (as the sweep would), ``agent_revived``, and watching resumes
  from the last stored event ``seq`` (nothing lost, nothing twice).
* **Watching**: the agent's ``watch`` (:mod:`shoal.agentlink.agentwatch`:
  events pushed as recorded, a beat every ``beat_interval`` carrying load,
  memory and free disk) from the journal's cursor for the node, and a ``ping``
  every ``ping_every`` (RTT, clock skew) on the same stream; calls and
  execs share it (the stream is multiplexed). The agent ensured at attach is
  this build, so it has ``watch``; a node whose sshd will not forward to the
  agent's socket is ``no-agent``.

:class:`WarmTransport` is a :class:`~shoal.transport.base.Transport` whose
``connect(node)`` returns the held connection (``close()`` does nothing), so
every library call (``run_async``, fleet operations, ``app up``, sweep) runs
unchanged over warm connections and opens no SSH connection. Its ``run``
goes through the agent's ``exec`` on the watched stream (``run_via="agent"``,
the default: ``run true`` on 32 lab nodes takes 0.59-0.88x the wall time and
0.62-0.93x the machine's CPU of an SSH session channel on the held
connection, which costs sshd a fork, PAM and a login per command; alternated
runs in ``bench/serve.py``), an SSH session channel when the agent stream is
not up or the command needs sudo.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.agent.build import AgentBuild, build
from shoal.agentlink import eventlog
from shoal.agentlink.agentclient import (
    AgentClient,
    StreamClient,
    cached_home,
    remember,
    start_agent,
)
from shoal.agentlink.agentwatch import Beat
from shoal.agentlink.fleet import AgentOptions, install_async
from shoal.app.pool import SharedConnection
from shoal.errors import (
    AgentError,
    AgentLinkBroken,
    AgentNotRunning,
    AuthError,
    CommandTimeout,
    ConnectError,
    EmptySelectionError,
    HostKeyError,
    ShoalError,
    TransportError,
)
from shoal.nodes import health
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport import sshconfig
from shoal.transport.base import (
    MAX_OUTPUT,
    CommandResult,
    Connection,
    LineCallback,
    Transport,
)
from shoal.transport.factory import make_transport

from .attach import AttachGate, backoff, probe_alive
from .detector import NOTHING, Detector, DetectorConfig, Phase, Step
from .journal import Journal, ServiceEvent
from .livefacts import LiveFacts, beat_facts

if TYPE_CHECKING:
    from .controller import Controller


class LinkState(enum.Enum):
    ATTACHING = "attaching"
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
    NO_AGENT = "no-agent"
    REFUSED = "refused"


@dataclass
class LinkConfig:
    """Settings of the warm links (typed; the service's config fills them)."""

    #: seconds between beats (the agent's watch beat, or a poll of an older agent)
    beat_interval: float = 1.0
    #: how often detectors are ticked
    tick: float = 0.1
    #: SSH handshakes started per second at most, and the bucket's size
    attach_rate: float = 50.0
    attach_burst: int = 10
    #: SSH handshakes in flight at once, in all and per sshd (a node's own, or the jump
    #: host every node behind it shares: 8 stays below sshd's MaxStartups 10:30:100)
    handshakes: int = 64
    handshakes_per_sshd: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    connect_timeout: float = 10.0
    #: the confirm probe: parallel TCP connects to sshd, each this long at most
    probe_connects: int = 4
    probe_timeout: float = 0.8
    #: seconds between live-facts writes (and shell fact samples of older agents)
    facts_every: float = 10.0
    #: seconds between pings on a watched stream (RTT, clock skew): a ping costs the
    #: controller a write and a reply, about what 5 beats cost
    ping_every: float = 30.0
    #: how long an agent request may take (a beat that long is a broken stream)
    call_timeout: float = 10.0
    host_keys: str = "verify"
    keepalive: float = 5.0
    #: how a warm ``run`` reaches the node: ``ssh`` (a session channel on the held
    #: connection) or ``agent`` (the agent's ``exec`` on the watched stream)
    run_via: str = "agent"
    agent: AgentOptions = field(default_factory=AgentOptions)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def validate(self) -> LinkConfig:
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"links {name} must be positive")
        counts = (self.attach_burst, self.handshakes, self.handshakes_per_sshd, self.probe_connects)
        if min(counts) < 1:
            raise ValueError(
                "links attach_burst, handshakes, handshakes_per_sshd and probe_connects "
                "must be >= 1"
            )
        if self.run_via not in ("ssh", "agent"):
            raise ValueError(f"links run_via must be ssh or agent, not {self.run_via!r}")
        self.detector.validate()
        return self


#: Prints the held connection's SSH_CONNECTION and SSH_CLIENT (what an exec is given).
SSH_ENV_COMMAND = 'printf "%s\\n%s" "$SSH_CONNECTION" "$SSH_CLIENT"'

#: Lateness of our own event loop (seconds) past which a stall is ours, not the nodes':
#: silence during it is excused, a probe that timed out during it has no verdict.
STALL_LAG = 0.25

#: Rounds of cancel-and-wait (1 s each) that stop() gives the links' tasks.
STOP_ROUNDS = 10

_POSITIVE = (
    "beat_interval", "tick", "attach_rate", "backoff_base", "backoff_cap", "connect_timeout",
    "probe_timeout", "facts_every", "ping_every", "call_timeout",
)  # fmt: skip


class Link:
    """One managed node: its held connection, agent stream, detector and counters."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.conn: Connection | None = None
        self.home: str | None = None
        self.agent_id: str | None = None
        self.detector: Detector | None = None
        self.ever_up = False
        self.streaming = False
        self.refused: str | None = None
        self.no_agent: str | None = None
        self.last_error = ""
        #: SSH connections made to this node (a warm run makes none)
        self.connects = 0
        self.attaches = 0
        self.agent_restarts = 0
        self.since = time.time()
        #: SSH_CONNECTION and SSH_CLIENT of the held connection (execs get them)
        self.ssh_env: dict[str, str] | None = None
        #: the watched agent stream (calls and execs share it), while watching
        self.client: StreamClient | None = None
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()

    @property
    def state(self) -> LinkState:
        if self.refused is not None:
            return LinkState.REFUSED
        if self.detector is not None and self.detector.phase is Phase.DOWN:
            return LinkState.DOWN
        if self.no_agent is not None:
            return LinkState.NO_AGENT
        if not self.ever_up:
            return LinkState.ATTACHING
        if self.detector is not None and self.detector.phase is Phase.SUSPECT:
            return LinkState.SUSPECT
        return LinkState.UP if self.streaming else LinkState.ATTACHING

    @property
    def reason(self) -> str:
        if self.refused is not None:
            return self.refused
        if self.detector is not None and self.detector.phase is not Phase.UP:
            return self.detector.reason
        if self.no_agent is not None:
            return self.no_agent
        return "" if self.streaming else self.last_error

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node.name,
            "link": self.state.value,
            "reason": self.reason,
            "since": self.since,
            "connects": self.connects,
            "agent_restarts": self.agent_restarts,
        }


class _Held(SharedConnection):
    """A node's held connection lent to one caller: ``close()`` leaves it open.

    ``run`` goes through the agent's ``exec`` on the watched stream when
    ``via_agent`` (and the command needs no sudo), else an SSH session channel on
    the held connection. An exec'd command sees the held connection's own
    ``SSH_CONNECTION`` and ``SSH_CLIENT`` (asked once per link over SSH), so what
    a command learns from them (push: the controller's address) is what an SSH
    session would tell it."""

    def __init__(self, link: Link, conn: Connection, via_agent: bool = False) -> None:
        super().__init__(conn)
        self.node = link.node
        self._link = link
        self._via_agent = via_agent

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        sudo: bool = False,
        on_line: LineCallback | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        client = self._link.client
        if not self._via_agent or client is None or sudo:
            return await super().run(
                command,
                timeout=timeout,
                env=env,
                input=input,
                sudo=sudo,
                on_line=on_line,
                max_output=max_output,
            )
        if self._link.ssh_env is None:  # what an SSH session sees of us, once per link
            got = await self.inner.run(SSH_ENV_COMMAND, timeout=30)
            values = got.stdout.decode(errors="replace").split("\n")
            self._link.ssh_env = dict(zip(("SSH_CONNECTION", "SSH_CLIENT"), values, strict=False))
        env = {**self._link.ssh_env, **(env or {})}
        try:
            res = await client.exec(
                command,
                timeout=timeout,
                env=env,
                input=input,
                on_line=on_line,
                max_output=max_output,
            )
        except AgentLinkBroken as exc:
            raise ConnectError(
                f"connection lost while the command ran: {exc}", self.node.name
            ) from exc
        if res.timed_out:
            raise CommandTimeout(
                f"command timed out after {timeout:g}s and was killed on the node", self.node.name
            )
        return CommandResult(res.exit_status, res.stdout, res.stderr, res.signal, res.dropped)


class WarmTransport(Transport):
    """Connections that are the links' held ones; nodes not managed get a cold one."""

    def __init__(self, links: Links) -> None:
        self.links = links

    async def connect(self, node: Node, *, timeout: float | None = None) -> Connection:
        link = self.links.link(node.name)
        if link is None:
            self.links.cold_connects += 1
            return await self.links.cold.connect(node, timeout=timeout)
        if link.state in (LinkState.REFUSED, LinkState.DOWN):
            raise _link_error(link)
        if link.conn is None or not link.ready.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(link.ready.wait(), timeout)
        if link.conn is None:
            raise _link_error(link)
        return _Held(link, link.conn, self.links.config.run_via == "agent")


def _link_error(link: Link) -> ShoalError:
    reason = link.reason or f"no warm connection ({link.state.value})"
    if link.state is LinkState.REFUSED and link.refused is not None:
        return HostKeyError(reason, link.node.name)
    return ConnectError(reason, link.node.name)


class _OneConnection(Transport):
    """The transport the fleet's install step sees at attach: this node's held connection."""

    def __init__(self, link: Link, conn: Connection) -> None:
        self._held = _Held(link, conn)

    async def connect(self, node: Node, *, timeout: float | None = None) -> Connection:
        return self._held


class Links:
    """The warm links of a set of nodes; see the module docstring."""

    def __init__(
        self,
        nodes: Sequence[Node],
        *,
        state: State,
        journal: Journal,
        config: LinkConfig | None = None,
        agent: AgentBuild | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = (config or LinkConfig()).validate()
        self.state = state
        self.journal = journal
        self.clock = clock
        self._agent = agent
        self.cold = make_transport(self.config)
        self.gate = AttachGate(
            self.config.attach_rate,
            self.config.attach_burst,
            self.config.handshakes,
            self.config.handshakes_per_sshd,
        )
        self.facts = LiveFacts(state, every=self.config.facts_every)
        self.links: dict[str, Link] = {n.name: Link(n) for n in nodes}
        self.transport = WarmTransport(self)
        self.cold_connects = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------

    @property
    def agent(self) -> AgentBuild:
        if self._agent is None:
            self._agent = build()
        return self._agent

    async def start(self) -> None:
        """Start attaching every node (returns at once) and the detectors' ticker."""
        _ = self.agent
        for link in self.links.values():
            self._launch(link)
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_loop())

    def _launch(self, link: Link) -> None:
        if link.node.name not in self._tasks and not self._stopping:
            self._tasks[link.node.name] = asyncio.ensure_future(self._keep(link))

    async def stop(self) -> None:
        """Stop every link and close every held connection; pending facts are written."""
        self._stopping = True
        tasks = [*self._tasks.values(), *self._probes]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for _ in range(STOP_ROUNDS):  # again: a wait_for may swallow a cancel (Python < 3.12)
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()
        self._ticker = None
        for link in self.links.values():
            await self._drop(link)
        with contextlib.suppress(ShoalError):
            self.facts.flush(self.journal.submit)

    async def update(self, nodes: Sequence[Node]) -> None:
        """Manage exactly ``nodes`` from now on: new ones attach, dropped ones close."""
        wanted = {n.name: n for n in nodes}
        for name in [n for n in self.links if n not in wanted]:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await self._drop(self.links.pop(name))
        for name, node in wanted.items():
            if name not in self.links:
                self.links[name] = Link(node)
            if self._ticker is not None:
                self._launch(self.links[name])

    def link(self, name: str) -> Link | None:
        return self.links.get(name)

    def status(self, names: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Each link's state, reason and counters, with its live facts."""
        out = []
        for name, link in self.links.items():
            if names is None or name in names:
                out.append({**link.status(), "facts": self.facts.snapshot(name)})
        return out

    async def wait_up(self, names: Collection[str] | None = None, timeout: float = 30.0) -> bool:
        """Wait until the named links (all by default) are up; False on timeout."""
        deadline = self.clock() + timeout
        wanted = [self.links[n] for n in (names if names is not None else self.links)]
        while self.clock() < deadline:
            if all(link.state is LinkState.UP for link in wanted):
                return True
            await asyncio.sleep(0.05)
        return False

    @property
    def connects(self) -> int:
        """SSH connections made so far (links and cold fallbacks)."""
        return sum(link.connects for link in self.links.values()) + self.cold_connects

    # -- one node -------------------------------------------------------------

    async def _keep(self, link: Link) -> None:
        attempt = 0
        while not self._stopping:
            attached = link.attaches
            try:
                await self._session(link)
            except (HostKeyError, AuthError) as exc:
                self._refuse(link, exc)
            except AgentError as exc:
                self._agentless(link, exc)
            except ShoalError as exc:
                self._lost(link, exc)
            await self._drop(link)
            attempt = 0 if link.attaches > attached else attempt + 1
            pause = backoff(attempt, self.config.backoff_base, self.config.backoff_cap)
            link.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(link.wake.wait(), pause)

    async def _session(self, link: Link) -> None:
        """Attach, ensure the agent, then watch until the stream or connection breaks."""
        conn = await self._connect(link)
        link.conn = conn
        client = await self._ensure_agent(link, conn)
        link.refused = link.no_agent = None
        link.attaches += 1
        if link.detector is None:
            link.detector = Detector(self.clock(), self.config.detector)
        if not link.ever_up:
            link.ever_up = True
            self._clear_unreachable(link)
        link.streaming = True
        link.ready.set()
        self._heard(link)
        while True:
            try:
                await self._watch(link, client)
            except AgentError as exc:  # the stream ended or stalled: the agent, or the link?
                link.last_error = str(exc)
            finally:
                await client.close()
            client = await self._revive_agent(link, conn)

    async def _connect(self, link: Link) -> Connection:
        async with self.gate.admit(self._sshd(link.node)):
            link.connects += 1
            return await self.cold.connect(link.node, timeout=self.config.connect_timeout)

    def _options(self, link: Link) -> AgentOptions:
        python = link.node.python or self.config.agent.python
        return replace(self.config.agent, python=python, parallel=1, retries=0)

    async def _ensure_agent(self, link: Link, conn: Connection) -> AgentClient:
        """A stream to this build's running agent: the cached one, else installed/started."""
        opts = self._options(link)
        home = cached_home(self.state, link.node.name, opts.home)
        if home is not None:
            with contextlib.suppress(AgentError, TransportError):
                client = await AgentClient.open(conn, home, opts.python)
                hello = await client.call("hello", timeout=self.config.call_timeout)
                if hello.get("build") == self.agent.build_id:
                    name = link.node.name  # the writer's: a write here would block the loop
                    self.journal.submit(lambda st: remember(st, name, opts.home, home, hello))
                    link.home, link.agent_id = home, hello.get("agent_id")
                    return client
                await client.close()
        results = await install_async(
            [link.node], opts, transport=_OneConnection(link, conn), state=self.state,
            agent=self.agent, write=self.journal.submit,
        )  # fmt: skip
        outcome = results[link.node.name]
        if outcome.error is not None:
            raise outcome.error
        hello = outcome.value or {}
        link.home, link.agent_id = str(hello.get("home")), hello.get("agent_id")
        if outcome.action not in ("up to date", ""):
            self._event("agent_installed", link.node.name, outcome.action)
        return await AgentClient.open(conn, link.home, opts.python)

    async def _revive_agent(self, link: Link, conn: Connection) -> AgentClient:
        """The agent's stream ended under a live connection: start the agent again."""
        assert link.home is not None
        link.streaming = False
        self._event("agent_lost", link.node.name, "the agent's stream ended")
        started = await start_agent(conn, link.home, self._options(link).python)
        client = await AgentClient.open(conn, link.home, self._options(link).python)
        link.agent_restarts += started
        link.streaming = True
        self._event("agent_revived", link.node.name, "started again" if started else "was running")
        self._heard(link)
        return client

    async def _watch(self, link: Link, client: AgentClient) -> None:
        """Watch the agent from the last stored seq: events to the journal, beats to the
        detector and live facts (straight from the stream's reader: no queue, no task
        switch per beat), a ping every ``ping_every`` (RTT, clock skew).
        Returns never; raises AgentError when the stream ends or stalls."""
        if not isinstance(client, StreamClient):
            raise AgentNotRunning("the SSH server refuses to forward to the agent's socket")
        name = link.node.name
        known, seq = eventlog.cursor(self.state, name)
        watch = client.watch(since=seq if known == link.agent_id else 0,
                             beat=self.config.beat_interval)  # fmt: skip
        watch.on_beat = lambda beat: self._beat(link, beat)
        await watch.start(timeout=self.config.call_timeout)
        link.client = client
        pinger = asyncio.ensure_future(self._pings(link, client))
        conn = link.conn
        if conn is not None:  # the beats and the detector watch the link now
            conn.quiet_keepalive(True)
        try:
            async for item in watch:
                self._heard(link)
                if isinstance(item, Beat):  # not queued with on_beat set
                    continue
                event = {"seq": item.seq, "time": item.time, "kind": item.kind,
                         "program": item.program, "detail": item.detail}  # fmt: skip
                self.journal.store_agent_events(name, str(watch.agent_id), [event])
        finally:
            if conn is not None:
                conn.quiet_keepalive(False)
            link.client = None
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            await watch.stop()

    def _beat(self, link: Link, beat: Beat) -> None:
        self._heard(link)
        if beat.fresh:
            self.facts.update(link.node.name, beat_facts(beat))
            self.facts.report_programs(link.node.name, beat.programs)

    async def _pings(self, link: Link, client: StreamClient) -> None:
        every = self.config.ping_every
        while True:
            ping = await client.ping(timeout=self.config.call_timeout)
            self._heard(link)
            self.facts.rtt(link.node.name, ping.rtt * 1000)
            self.facts.update(link.node.name, {"clock_skew_s": round(ping.skew, 3)})
            await asyncio.sleep(every)

    async def _drop(self, link: Link) -> None:
        link.streaming = False
        link.ssh_env = None
        link.ready.clear()
        conn, link.conn = link.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- verdicts ---------------------------------------------------------------

    def _event(self, kind: str, node: str, detail: str) -> None:
        with contextlib.suppress(ShoalError):  # a full disk must not stop the detector
            self.journal.record(ServiceEvent("node", kind, node=node, detail=detail))

    def _refuse(self, link: Link, exc: ShoalError) -> None:
        if link.refused != str(exc):
            link.refused = str(exc)
            link.since = time.time()
            self._event("node_refused", link.node.name, str(exc))
            failed = {link.node.name: f"{exc.kind}: {exc}"}
            self.journal.submit(lambda st: health.mark_failed(failed, state=st))

    def _agentless(self, link: Link, exc: ShoalError) -> None:
        if link.no_agent != str(exc):
            link.no_agent = str(exc)
            link.since = time.time()
            self._event("agent_missing", link.node.name, str(exc))

    def _lost(self, link: Link, exc: ShoalError) -> None:
        link.last_error = str(exc)
        if link.detector is None:  # never attached: the silence starts at this failure
            link.detector = Detector(self.clock(), self.config.detector)
        self._apply(link, link.detector.lost(self.clock()))

    def _heard(self, link: Link) -> None:
        if link.detector is not None:
            step = link.detector.heard(self.clock())
            if step is not NOTHING:
                self._apply(link, step)

    def _apply(self, link: Link, step: Step) -> None:
        name = link.node.name
        if step.event is not None and (link.ever_up or step.event != "node_suspect"):
            link.since = time.time()
            self._event(step.event, name, step.reason)
            if step.event == "node_down":
                failed = {name: step.reason}
                self.journal.submit(lambda st: health.mark_failed(failed, state=st))
                if link.conn is not None:  # useless to a dead node: its watch ends now
                    self._spawn(link.conn.close())
            elif step.event == "node_up":
                self.journal.submit(lambda st: health.mark_healthy([name], state=st))
        if step.probe:
            self._spawn(self._probe(link))
        if step.reconnect:
            link.wake.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _clear_unreachable(self, link: Link) -> None:
        """A node that attached leaves the failed set if it was there as unreachable."""
        healthy = [link.node.name]
        for failure in health.failures(self.state):
            if failure.name == link.node.name and failure.reason.startswith(
                ("down:", "unreachable:", "hostkey:", "auth:")
            ):
                self.journal.submit(lambda st: health.mark_healthy(healthy, state=st))

    async def _probe(self, link: Link) -> None:
        host, port = self._address(link.node)
        started = self.clock()
        alive = await probe_alive(host, port, self.config.probe_connects, self.config.probe_timeout)
        if link.detector is None:
            return
        now = self.clock()
        if not alive and now - started > self.config.probe_timeout + STALL_LAG:
            # our own loop was starved past the timeout: the connects may have completed
            # unseen; no verdict, probe again (a busy controller must not declare downs)
            link.detector.inconclusive(now)
            return
        self._apply(link, link.detector.probed(alive, now))

    def _resolved(self, node: Node) -> sshconfig.Resolved | None:
        user = Path.home() / ".ssh" / "config"
        files = ([node.ssh_config] if node.ssh_config else []) + (
            [str(user)] if os.access(user, os.R_OK) else []
        )
        return sshconfig.resolve(files, node.name, node.user, node.port)

    def _address(self, node: Node) -> tuple[str, int]:
        if node.host and node.port:
            return node.host, node.port
        resolved = self._resolved(node)
        if resolved is None:
            return node.address, node.port or 22
        return node.host or resolved.hostname, node.port or resolved.port

    def _sshd(self, node: Node) -> str:
        """The sshd that counts this node's handshake: its jump host's, else its own."""
        resolved = self._resolved(node)
        if resolved is not None and resolved.proxy_jump:
            return f"jump {resolved.proxy_jump}"
        host, port = self._address(node)
        return f"{host}:{port}"

    async def _tick_loop(self) -> None:
        last = self.clock()
        while True:
            await asyncio.sleep(self.config.tick)
            now = self.clock()
            lag, last = now - last - self.config.tick, now
            late = lag > STALL_LAG
            # the quick skip of an up node heard lately (tick() would leave it alone): the
            # sweep visits every link ten times a second
            heard_since = now - self.config.detector.suspect_after
            for link in list(self.links.values()):
                detector = link.detector
                if detector is None or link.refused is not None:
                    continue
                if late:  # we could not read beats meanwhile: not their silence
                    detector.excuse(lag)
                elif detector.phase is Phase.UP and detector.last_heard > heard_since:
                    continue
                step = detector.tick(now)
                if step is not NOTHING:
                    self._apply(link, step)
            if self.facts.due():
                with contextlib.suppress(ShoalError):
                    self.facts.flush(self.journal.submit)


class LinksComponent:
    """The links as a part of the :class:`~.controller.Controller` (``component``)."""

    #: seconds between re-reading the managed selection (nodes imported or removed)
    RESELECT = 30.0

    def __init__(self, controller: Controller) -> None:
        cfg = controller.config
        self.controller = controller
        self.links = Links(
            [],
            state=controller.state,
            journal=controller.journal,
            config=LinkConfig(
                beat_interval=cfg.beat_interval,
                attach_rate=cfg.attach_rate,
                detector=DetectorConfig.for_beat(cfg.beat_interval),
            ),
        )

    @property
    def transport(self) -> WarmTransport:
        return self.links.transport

    def _managed(self) -> list[Node]:
        try:
            return list(self.controller.managed())
        except EmptySelectionError:
            return []

    async def run(self, stop: asyncio.Event) -> None:
        await self.links.update(self._managed())
        await self.links.start()
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.RESELECT)
                if not stop.is_set():
                    await self.links.update(self._managed())
        finally:
            await self.links.stop()

    def status(self) -> dict[str, Any]:
        """Links per state (``{"up": 7, "down": 1}``) and SSH connections made."""
        states: dict[str, int] = {}
        for link in self.links.links.values():
            states[link.state.value] = states.get(link.state.value, 0) + 1
        return {"links": states, "connects": self.links.connects}


def component(controller: Controller) -> LinksComponent:
    return LinksComponent(controller)
