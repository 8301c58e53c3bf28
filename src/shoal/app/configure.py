"""Configure: make member nodes ready to run their blocks.

Three phases over a batch of nodes, each timed in the report:

1. **agents** installed (skipped where this build runs already), which also
   tells each node's agent home;
2. **software** pushed, per software tree, to the nodes whose components use
   it (:func:`.software.push_software`; skipped where that version is);
3. **install**: on each node, the application's directory created and the
   install steps of its software run by the agent (``step.run``, cached
   there per software version, so a re-run costs one round trip).

On the nodes in :attr:`Configurer.hold` (the application's services run
there) a changed tree is only staged, its install steps run in the staged
version's directory, and :attr:`Configurer.staged` says which version each
node holds for the rollout that switches it under the services
(:func:`.lifecycle.up_async`).

Each phase counts its nodes as they finish (``UpOptions.on_progress``: phase
``agents``, ``software NAME``, ``install``).

A node that fails a phase skips the later ones; :meth:`Configurer.configure`
returns the failures by node name and the runner applies the component's
policy to them (:mod:`.policy`, kind ``CONFIGURE``).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence

from shoal.agent.build import AgentBuild, build
from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient, cached_home
from shoal.errors import MemberFailed
from shoal.fanout.results import NodeOutcome
from shoal.nodes import health
from shoal.nodes.model import Node
from shoal.state import State

from .pkgscripts import PackageScripts
from .runtime import UpPass, last_line
from .software import Tree, push_software, software_tree


class Configurer:
    """Configures nodes for one pass; the agent build and tree digests are made once."""

    def __init__(self, up: UpPass) -> None:
        self.up = up
        self._agent: AgentBuild | None = None
        self._trees: dict[str, Tree] = {}
        self.hold: set[str] = set()  # nodes whose services run the trees: stage, not switch
        self.staged: dict[str, dict[str, str]] = {}  # software -> node -> staged version
        self.scripts = PackageScripts(up.spec, up.state)

    def tree(self, name: str) -> Tree:
        if name not in self._trees:
            sw = self.up.spec.software[name]
            self._trees[name] = software_tree(sw, self.up.state)
        return self._trees[name]

    def _uses(self, node: str, software: str) -> bool:
        return any(software in c.software for c in self.up.components_of(node))

    async def configure(self, nodes: Sequence[Node]) -> dict[str, str]:
        """Agents, software, install steps on ``nodes``; failures by node name."""
        failures: dict[str, str] = {}
        if not nodes:
            return failures
        if self._agent is None:
            self._agent = build()
        t0 = time.monotonic()
        await self._agents(nodes, failures)
        self.up.phase("agents", t0)
        t0 = time.monotonic()
        ready = [n for n in nodes if n.name not in failures]
        await self._software(ready, failures)
        self.up.phase("software", t0)
        t0 = time.monotonic()
        ready = [n for n in ready if n.name not in failures]
        up = self.up
        count = up.count("install", len(ready))
        installs = await agents.each_agent(
            ready,
            self._configure_node,
            up.opts.agent,
            transport=up.transport,
            state=up.state,
            on_result=count.tick,
        )
        health.record(installs, health.Policy.REACHABILITY, state=up.state)
        for r in installs:
            if not r.ok:
                failures[r.node] = r.reason
        self.up.phase("install", t0)
        return failures

    async def _agents(self, nodes: Sequence[Node], failures: dict[str, str]) -> None:
        up = self.up
        count = up.count("agents", len(nodes))
        installed = await agents.install_async(
            nodes,
            up.opts.agent,
            transport=up.transport,
            state=up.state,
            agent=self._agent,
            on_result=count.tick,
        )
        health.record(installed, health.Policy.REACHABILITY, state=up.state)
        for r in installed:
            if not r.ok:
                failures[r.node] = f"agent: {r.reason}"
            else:
                home = cached_home(up.state, r.node, up.opts.agent.home)
                if home:
                    up.homes[r.node] = home

    async def _software(self, ready: Sequence[Node], failures: dict[str, str]) -> None:
        up = self.up
        for sname in up.spec.software:
            users = [n for n in ready if self._uses(n.name, sname) and n.name not in failures]
            if not users:
                continue
            dirs = {n.name: f"{up.app_dir(n.name)}/sw/{sname}" for n in users}
            count = up.count(f"software {sname}", len(users))
            errors = await push_software(
                users,
                self.tree(sname),
                dirs,
                transport=up.transport,
                state=up.state,
                method=up.opts.software_method,
                plain_data=up.opts.plain_data,
                on_progress=count.set if up.opts.on_progress else None,  # no idle snapshots
                hold=self.hold,
                staged=self.staged.setdefault(sname, {}),
            )
            for node_name, why in errors.items():
                failures[node_name] = f"software {sname}: {why}"

    async def _configure_node(
        self, client: AgentClient, node: Node, st: State, opts: agents.AgentOptions
    ) -> agents.AgentOutcome:
        await self._make_app_dir(client, node)
        for sname in self.up.spec.software:
            if self._uses(node.name, sname):
                await self._install_steps(client, node, sname)
        return NodeOutcome(node.name, action="configured")

    async def _make_app_dir(self, client: AgentClient, node: Node) -> None:
        adir = self.up.app_dir(node.name)
        made = await client.call(
            "step.run",
            id=f"{self.up.spec.name}.mkdir",
            command=f"mkdir -p {shlex.quote(adir)}",
            timeout=30,
        )
        if made.get("exit") != 0:
            raise MemberFailed(
                f"{node.name}: cannot create {adir}: {last_line(made.get('tail', ''))}"
            )

    async def _install_steps(self, client: AgentClient, node: Node, sname: str) -> None:
        up = self.up
        adir = up.app_dir(node.name)
        tree = self.tree(sname)
        cwd = f"{adir}/sw/{sname}"
        version = self.staged.get(sname, {}).get(node.name)
        if version:  # not switched yet: install where it is (Area.link_for)
            cwd = f"{adir}/sw/.{sname}.shoal/versions/{version}"
        for i, command in enumerate(self.scripts.install_commands(sname)):
            res = await client.call(
                "step.run",
                id=f"{up.spec.name}.sw.{sname}.{i}",
                command=command,
                cwd=cwd,
                env={"SHOAL_SW_VERSION": tree.digest, "SHOAL_APP_DIR": adir},
                limit=up.opts.step_timeout,
                timeout=up.opts.step_timeout + 30,
            )
            if res.get("exit") != 0:
                raise MemberFailed(
                    f"{node.name}: install step of {sname} failed "
                    f"({res.get('note') or 'exit ' + str(res.get('exit'))}): "
                    f"{last_line(res.get('tail', ''))}"
                )
