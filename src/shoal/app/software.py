"""Configure: put an application's software on its nodes.

:func:`push_software` is the one place that moves software trees. By default
it is ``shoal push`` (:func:`shoal.content.push_async`): a content-addressed
manifest, chunks fetched peer to peer with the source sending each about once,
every chunk verified, and the version switched in atomically beside the old
ones (``sw/NAME`` is a symlink into ``sw/.NAME.shoal/versions``); an unchanged
tree moves nothing. ``method="copy"`` uses the fan-out's SFTP copy instead
(:mod:`shoal.content.copyswitch`: one tree per node, skipped where the digest
matches, renamed over; kept beside the running copy where services run it, for
the rollout to switch). A copy replaces only what Shoal put at ``sw/NAME``: an
earlier copy (it holds the digest file) or a push's symlink; anything else
there is refused, as a push refuses a directory that is not its deployment.

Software named ``depot:NAME@VERSION`` (or ``@latest``) comes from the depot
(:mod:`shoal.content.depot`): its version is the depot entry's manifest id,
resolved once per pass, and it is always pushed from the depot's store.
:func:`depot_users` says which apps name which depot versions, so ``depot rm``
can refuse to drop what an app still names.

A tree's digest covers relative paths, modes, contents and symlink targets; it
is the software's *version* in ``app status``. The tree is walked as a push
scans it (:mod:`shoal.content.scan`): symlinks never followed, FIFOs, sockets
and devices skipped unopened, a name that is not UTF-8 refused, a tree changing
under the walk refused as changed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.content.copyswitch import DIGEST_FILE, copy_tree_async, tree_digest
from shoal.content.depot import Depot
from shoal.errors import ShoalError
from shoal.fanout.options import FanoutOptions
from shoal.fanout.results import CommandOutcome, Results
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Transport

from . import store
from .appspec import Software

__all__ = ["DIGEST_FILE", "Tree", "copy_software", "push_software", "software_tree", "tree_digest"]


@dataclass(frozen=True)
class Tree:
    """A local software tree (or a depot entry, ``depot:NAME@LABEL``) and its digest."""

    name: str
    source: Path
    digest: str
    depot: str = ""


def software_tree(sw: Software, state: State) -> Tree:
    """The tree of ``sw``: a local directory's digest, or the depot entry it names."""
    if not sw.depot:
        return Tree(sw.name, sw.source, tree_digest(sw.source))
    entry = Depot(state).resolve(sw.depot)
    return Tree(sw.name, sw.source, entry.version, depot=f"depot:{entry.ref}")


def depot_users(state: State) -> dict[str, list[str]]:
    """depot version id → the apps (``app NAME``) whose spec names it."""
    depot = Depot(state)
    users: dict[str, list[str]] = {}
    for app in store.list_apps(state):
        record = store.get_app(state, app)
        software = (record.document.get("software") or {}) if record else {}
        for sname, entry in software.items():
            source = str((entry or {}).get("source", ""))
            if not source.startswith("depot:"):
                continue
            try:
                version = depot.resolve(source).version
            except ShoalError:
                continue  # names nothing the depot holds now
            users.setdefault(version, []).append(f"app {app} (software {sname})")
    return users


async def push_software(
    nodes: Sequence[Node],
    tree: Tree,
    remote_dir: dict[str, str],
    *,
    transport: Transport | None = None,
    state: State | None = None,
    method: str = "push",
    on_progress: Callable[[int], None] | None = None,
    hold: Collection[str] = (),
    staged: dict[str, str] | None = None,
    plain_data: bool = False,
) -> dict[str, str]:
    """Put ``tree`` at ``remote_dir[node]`` on every node; errors by node name.

    On the nodes in ``hold`` (services run the tree there) a new version is only
    staged beside the running one (pushed or copied): ``staged[node]`` names it,
    for a rollout (:mod:`shoal.content.rollout`) to switch; the other nodes
    switch at once.

    ``on_progress`` is told how many nodes are done (the tree in place, or failed).
    """
    finished = 0

    def one(_outcome: object) -> None:
        nonlocal finished
        finished += 1
        on_progress and on_progress(finished)

    if method == "copy" and not tree.depot:
        copied = await copy_software(
            nodes, tree, remote_dir, transport=transport, on_result=one, hold=hold, staged=staged
        )
        return {r.node: r.reason or r.stderr.strip() for r in copied if not r.ok}
    from shoal.content import PushOptions, push_async
    from shoal.content.push import PushProgress, activate_async

    groups: dict[str, list[Node]] = {}
    for node in nodes:
        groups.setdefault(remote_dir[node.name], []).append(node)
    errors: dict[str, str] = {}
    for target, members in groups.items():
        opts = PushOptions(install=False, keep=2, switch=not hold, plain_data=plain_data)
        source = tree.depot or tree.source
        before = finished

        def seen(p: PushProgress, before: int = before) -> None:
            on_progress and on_progress(before + p.nodes_done + p.nodes_failed)

        result = await push_async(
            members,
            source,
            target,
            opts,
            transport=transport,
            state=state,
            on_progress=None if on_progress is None else seen,
        )
        finished = before + len(members)
        on_progress and on_progress(finished)
        now: list[Node] = []
        for outcome in result:
            if not outcome.ok:
                errors[outcome.node] = outcome.reason
            elif outcome.staged and outcome.staged != outcome.previous:
                if outcome.node in hold and outcome.previous and staged is not None:
                    staged[outcome.node] = outcome.staged
                else:
                    now.append(next(n for n in members if n.name == outcome.node))
        if now:  # held back from nothing running: switch now
            switched = await activate_async(
                now, target, result.version, transport=transport, state=state
            )
            errors.update({r.node: r.reason for r in switched if not r.ok})
        for node in members:
            if node.name not in result:
                errors[node.name] = "push gave no result"
    return errors


async def copy_software(
    nodes: Sequence[Node],
    tree: Tree,
    remote_dir: dict[str, str],
    options: FanoutOptions | None = None,
    *,
    transport: Transport | None = None,
    on_result: Callable[[CommandOutcome], None] | None = None,
    hold: Collection[str] = (),
    staged: dict[str, str] | None = None,
) -> Results[CommandOutcome]:
    """SFTP copy of ``tree`` to ``remote_dir[node]`` where that version is missing; on
    the nodes in ``hold`` kept beside the copy in place, ``staged[node]`` its digest
    (:mod:`shoal.content.copyswitch`). ``stdout`` of each node's result is ``same``
    (skipped), ``staged`` or ``copied``."""
    previous: dict[str, str] = {}
    results = await copy_tree_async(
        nodes,
        tree.source,
        tree.digest,
        remote_dir,
        options,
        stage=hold,
        previous=previous,
        transport=transport,
        on_result=on_result,
    )
    if staged is not None:
        staged.update({r.node: tree.digest for r in results if r.ok and r.node in previous})
    return results
