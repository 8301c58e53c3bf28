"""Configure: put an application's software on its nodes.

:func:`push_software` is the one place that moves software trees. By default
it is ``shoal push`` (:func:`shoal.content.push_async`): a content-addressed
manifest, chunks fetched peer to peer with the source sending each about once,
every chunk verified, and the version switched in atomically beside the old
ones (``sw/NAME`` is a symlink into ``sw/.NAME.shoal/versions``); an unchanged
tree moves nothing. ``method="copy"`` uses the fan-out's SFTP copy instead
(one tree per node, skipped where the digest matches, renamed over).

A tree's digest covers relative paths, modes and contents; it is the
software's *version* in ``app status``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import ConfigError
from shoal.fanout.options import FanoutOptions
from shoal.fanout.results import FanoutResult, NodeResult
from shoal.fanout.scheduler import fanout
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport

DIGEST_FILE = ".shoal-version"


@dataclass(frozen=True)
class Tree:
    """A local software tree and its digest."""

    name: str
    source: Path
    digest: str


def tree_digest(root: Path) -> str:
    """Digest of a directory tree (paths, modes, contents), 16 hex digits."""
    if not root.is_dir():
        raise ConfigError(f"software source {root} is not a directory")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if "__pycache__" in rel or name == DIGEST_FILE:
                continue
            st = path.stat()
            h.update(f"{rel}\0{st.st_mode & 0o777:o}\0{st.st_size}\0".encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 16), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def install_command(remote_dir: str, digest: str) -> str:
    """Shell that answers ``same`` when ``remote_dir`` already holds ``digest``."""
    d = shlex.quote(remote_dir)
    return f'[ "$(cat {d}/{DIGEST_FILE} 2>/dev/null)" = {shlex.quote(digest)} ] && echo same'


async def push_software(
    nodes: Sequence[Node],
    tree: Tree,
    remote_dir: dict[str, str],
    *,
    transport: Transport | None = None,
    state: State | None = None,
    method: str = "push",
) -> dict[str, str]:
    """Put ``tree`` at ``remote_dir[node]`` on every node; errors by node name."""
    if method == "copy":
        copied = await copy_software(nodes, tree, remote_dir, transport=transport)
        return {r.node: r.reason or r.stderr.strip() for r in copied if not r.ok}
    from shoal.content import PushOptions, push_async

    groups: dict[str, list[Node]] = {}
    for node in nodes:
        groups.setdefault(remote_dir[node.name], []).append(node)
    errors: dict[str, str] = {}
    for target, members in groups.items():
        opts = PushOptions(install=False, record_health=False, keep=2)
        result = await push_async(
            members, tree.source, target, opts, transport=transport, state=state
        )
        for outcome in result:
            if not outcome.ok:
                errors[outcome.node] = outcome.reason
        for node in members:
            if node.name not in result.nodes:
                errors[node.name] = "push gave no result"
    return errors


async def copy_software(
    nodes: Sequence[Node],
    tree: Tree,
    remote_dir: dict[str, str],
    options: FanoutOptions | None = None,
    *,
    transport: Transport | None = None,
) -> FanoutResult:
    """SFTP copy of ``tree`` to ``remote_dir[node]`` where that version is missing.

    ``stdout`` of each node's result is ``same`` (skipped) or ``copied``.
    """

    async def operation(conn: Connection, node: Node, index: int) -> NodeResult:
        target = remote_dir[node.name]
        check = await conn.run(install_command(target, tree.digest), timeout=30)
        if check.exit_status == 0:
            return NodeResult(node.name, exit_status=0, stdout="same")
        q, staging = shlex.quote(target), shlex.quote(target + ".new")
        prep = await conn.run(f'rm -rf {staging} && mkdir -p "$(dirname {q})"', timeout=60)
        if prep.exit_status != 0:
            return NodeResult(node.name, exit_status=prep.exit_status, stderr=prep.stderr.decode())
        await conn.put(str(tree.source), target + ".new")
        done = await conn.run(
            f"printf '%s\\n' {shlex.quote(tree.digest)} > {staging}/{DIGEST_FILE}"
            f" && rm -rf {q} && mv {staging} {q}",
            timeout=60,
        )
        return NodeResult(
            node.name, exit_status=done.exit_status, stdout="copied", stderr=done.stderr.decode()
        )

    opts = options or FanoutOptions(record_health=False)
    return await fanout(nodes, operation, opts, transport=transport)
