"""Configure: put an application's software on its nodes.

:func:`push_software` is the one place that moves software trees. By default
it is ``shoal push`` (:func:`shoal.content.push_async`): a content-addressed
manifest, chunks fetched peer to peer with the source sending each about once,
every chunk verified, and the version switched in atomically beside the old
ones (``sw/NAME`` is a symlink into ``sw/.NAME.shoal/versions``); an unchanged
tree moves nothing. ``method="copy"`` uses the fan-out's SFTP copy instead
(one tree per node, skipped where the digest matches, renamed over).
A copy replaces only what Shoal put at ``sw/NAME``: an earlier copy (it holds
the digest file) or a push's symlink; anything else there is refused, as a
push refuses a directory that is not its deployment.

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

import hashlib
import posixpath
import shlex
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.content.depot import Depot
from shoal.content.scan import read_link, read_listed, walk
from shoal.errors import ConfigError, OperationError, ShoalError
from shoal.fanout.options import FanoutOptions
from shoal.fanout.results import CommandOutcome, CommandOutput, Results
from shoal.fanout.scheduler import fanout
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport

from . import store
from .appspec import Software

DIGEST_FILE = ".shoal-version"


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


def tree_digest(root: Path) -> str:
    """Digest of a directory tree (paths, modes, contents, symlink targets), 16 hex digits.

    ContentError names the path when the tree cannot be a version (see the module
    docstring); ``__pycache__`` and the digest file itself are left out.
    """
    if not root.is_dir():
        raise ConfigError(f"software source {root} is not a directory")
    h = hashlib.sha256()
    for rel, path, st in walk(root, []):
        if "__pycache__" in rel or path.name == DIGEST_FILE or stat.S_ISDIR(st.st_mode):
            continue
        if stat.S_ISLNK(st.st_mode):
            h.update(f"{rel}\0l\0{read_link(path)}\0".encode())
            continue
        h.update(f"{rel}\0{st.st_mode & 0o777:o}\0{st.st_size}\0".encode())
        for block in read_listed(path, st):
            h.update(block)
    return h.hexdigest()[:16]


def _ours(remote_dir: str) -> str:
    """Shell test: ``remote_dir`` is absent, an earlier copy or a push's symlink."""
    d = shlex.quote(remote_dir)
    pushed = shlex.quote(f".{posixpath.basename(remote_dir.rstrip('/'))}.shoal/versions/")
    return (
        f'{{ if [ -L {d} ]; then case "$(readlink {d})" in {pushed}*) ;; *) false ;; esac; '
        f"else ! [ -e {d} ] || [ -f {d}/{DIGEST_FILE} ]; fi; }}"
    )


def probe_command(remote_dir: str, digest: str) -> str:
    """Shell that answers ``same`` (``remote_dir`` holds ``digest``), ``replace`` or
    ``foreign`` (something Shoal did not put there)."""
    d = shlex.quote(remote_dir)
    return (
        f"if {_ours(remote_dir)}; then "
        f'[ "$(cat {d}/{DIGEST_FILE} 2>/dev/null)" = {shlex.quote(digest)} ] '
        "&& echo same || echo replace; else echo foreign; fi"
    )


def _foreign(remote_dir: str, node: str) -> OperationError:
    return OperationError(
        f"refusing to replace {remote_dir}: it is neither a software copy "
        f"(no {DIGEST_FILE}) nor a push Shoal made there; move it away",
        node,
    )


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
    staged beside the running one: ``staged[node]`` names it, for a rollout
    (:mod:`shoal.content.rollout`) to switch; the other nodes switch at once.

    ``on_progress`` is told how many nodes are done (the tree in place, or failed).
    """
    finished = 0

    def one(_outcome: object) -> None:
        nonlocal finished
        finished += 1
        on_progress and on_progress(finished)

    if method == "copy" and not tree.depot:
        copied = await copy_software(nodes, tree, remote_dir, transport=transport, on_result=one)
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
) -> Results[CommandOutcome]:
    """SFTP copy of ``tree`` to ``remote_dir[node]`` where that version is missing.

    ``stdout`` of each node's result is ``same`` (skipped) or ``copied``.
    """

    async def operation(conn: Connection, node: Node, index: int) -> CommandOutcome:
        target = remote_dir[node.name]
        probe = await conn.run(probe_command(target, tree.digest), timeout=30)
        answer = probe.stdout.decode(errors="replace").strip()
        if probe.exit_status == 0 and answer == "same":
            return CommandOutcome(node.name, CommandOutput(0, stdout="same"))
        if probe.exit_status == 0 and answer == "foreign":
            raise _foreign(target, node.name)
        head, tail = posixpath.split(target.rstrip("/"))
        stage = posixpath.join(head, f".{tail}.shoal-copy")  # Shoal's name, never the user's
        q, staging = shlex.quote(target), shlex.quote(stage)
        prep = await conn.run(f'rm -rf {staging} && mkdir -p "$(dirname {q})"', timeout=60)
        if prep.exit_status != 0:
            failed = CommandOutput(prep.exit_status, stderr=prep.stderr.decode())
            return CommandOutcome(node.name, failed)
        await conn.put(str(tree.source), stage)
        done = await conn.run(
            f"if {_ours(target)}; then printf '%s\\n' {shlex.quote(tree.digest)}"
            f" > {staging}/{DIGEST_FILE} && rm -rf {q} && mv {staging} {q}; "
            f"else rm -rf {staging}; echo foreign; fi",
            timeout=60,
        )
        if done.exit_status == 0 and done.stdout.strip() == b"foreign":
            raise _foreign(target, node.name)
        output = CommandOutput(done.exit_status, stdout="copied", stderr=done.stderr.decode())
        return CommandOutcome(node.name, output)

    opts = options or FanoutOptions()
    return await fanout(
        nodes, operation, opts, outcome=CommandOutcome, transport=transport, on_result=on_result
    )
