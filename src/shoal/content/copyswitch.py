"""Software copies (``software_method: copy``): an SFTP copy per node, staged or switched.

A copy at ``DIR`` is a real directory holding :data:`DIGEST_FILE` (the tree's
digest, :func:`tree_digest`). :func:`copy_tree_async` copies a tree where that
version is missing: renamed over ``DIR`` at once, or, on the nodes told to
stage (their services run the copy in place), put beside it at
``.NAME.shoal/versions/DIGEST`` (where a push stages its versions, so install
steps run there alike). :func:`switch_command` is the switch a rollout makes
while the services are stopped: two renames, the running copy kept aside at
``.NAME.shoal/versions/ITS_DIGEST`` for the rollback, which is the same switch
back (a push's symlink in place, the app's method changed, is relinked). The
switch moves no bytes and is idempotent (a controller killed between
the two renames finds ``DIR`` absent and moves the staged copy in). Staging
drops the copies kept before (the rollback target is the copy in place), so a
node holds at most the running copy and one beside it.

A copy replaces only what Shoal put at ``DIR``: an earlier copy or a push's
symlink; anything else there is refused, as a push refuses a directory that is
not its deployment.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import stat
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from shoal.errors import ConfigError, OperationError
from shoal.fanout.options import FanoutOptions
from shoal.fanout.results import CommandOutcome, CommandOutput, Results
from shoal.fanout.scheduler import fanout
from shoal.nodes.model import Node
from shoal.transport.base import Connection, Transport

from .scan import read_link, read_listed, walk

DIGEST_FILE = ".shoal-version"


def tree_digest(root: Path) -> str:
    """Digest of a directory tree (paths, modes, contents, symlink targets), 16 hex digits.

    ContentError names the path when the tree cannot be a version (it is walked as
    a push scans it, :mod:`.scan`); ``__pycache__`` and the digest file itself are
    left out.
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


def kept_dir(remote_dir: str) -> str:
    """Where copies beside ``remote_dir`` are kept (staged ones and the one switched out)."""
    head, tail = posixpath.split(remote_dir.rstrip("/"))
    return posixpath.join(head, f".{tail}.shoal", "versions")


def _ours(remote_dir: str) -> str:
    """Shell test: ``remote_dir`` is absent, an earlier copy or a push's symlink."""
    d = shlex.quote(remote_dir)
    pushed = shlex.quote(f".{posixpath.basename(remote_dir.rstrip('/'))}.shoal/versions/")
    return (
        f'{{ if [ -L {d} ]; then case "$(readlink {d})" in {pushed}*) ;; *) false ;; esac; '
        f"else ! [ -e {d} ] || [ -f {d}/{DIGEST_FILE} ]; fi; }}"
    )


#: How a push's version in place is named among copies: ``sw/NAME`` was a push's
#: symlink (the app's software method changed to copy); the switch back relinks it.
PUSHED = "push:"


def _current(remote_dir: str) -> str:
    """Shell that sets ``cur``: the copy in place's digest, ``push:VERSION`` for a
    push's symlink, empty for nothing."""
    d = shlex.quote(remote_dir)
    return (
        f'if [ -L {d} ]; then cur="{PUSHED}$(basename "$(readlink {d})")"; '
        f'else cur="$(cat {d}/{DIGEST_FILE} 2>/dev/null)"; fi'
    )


def probe_command(remote_dir: str, digest: str) -> str:
    """Shell that answers ``same`` (``remote_dir`` holds ``digest``), ``staged`` (a copy
    of ``digest`` is kept beside it), ``replace [CURRENT]`` (CURRENT: what is in place,
    as :func:`_current` names it) or ``foreign`` (not Shoal's)."""
    want = shlex.quote(digest)
    kept = shlex.quote(f"{kept_dir(remote_dir)}/{digest}/{DIGEST_FILE}")
    return (
        f"if {_ours(remote_dir)}; then {_current(remote_dir)}; "
        f'if [ "$cur" = {want} ]; then echo same; '
        f'elif [ "$(cat {kept} 2>/dev/null)" = {want} ]; then echo "staged $cur"; '
        f'else echo "replace $cur"; fi; else echo foreign; fi'
    )


def switch_command(remote_dir: str, version: str) -> str:
    """Shell that makes ``remote_dir`` the kept copy ``version`` (or, ``push:V``, the
    push's version V again), the copy in place kept aside under its own digest (a
    push's symlink just removed: its version stays in the push's area); exits 0 at
    once where ``version`` is in place."""
    d, want = shlex.quote(remote_dir), shlex.quote(version)
    keep = kept_dir(remote_dir)
    k = shlex.quote(keep)
    if version.startswith(PUSHED):
        pushed = version[len(PUSHED) :]
        name = posixpath.basename(remote_dir.rstrip("/"))
        have = f"[ -d {shlex.quote(f'{keep}/{pushed}')} ]"
        place = f"ln -s {shlex.quote(f'.{name}.shoal/versions/{pushed}')} {d}"
    else:
        new = shlex.quote(f"{keep}/{version}")
        have, place = f"[ -f {new}/{DIGEST_FILE} ]", f"mv {new} {d}"
    return (
        f'{_current(remote_dir)}; [ "$cur" = {want} ] && exit 0; '
        f"{have} || {{ echo no copy of {want} kept in {k} >&2; exit 1; }}; "
        f"{_ours(remote_dir)} || {{ echo {d} is not a software copy >&2; exit 1; }}; "
        f"if [ -L {d} ]; then rm -f {d} || exit 1; "
        f'elif [ -n "$cur" ]; then rm -rf {k}/"$cur" && mv {d} {k}/"$cur" || exit 1; fi; '
        f"{place}"
    )


def _foreign(remote_dir: str, node: str) -> OperationError:
    return OperationError(
        f"refusing to replace {remote_dir}: it is neither a software copy "
        f"(no {DIGEST_FILE}) nor a push Shoal made there; move it away",
        node,
    )


async def copy_tree_async(
    nodes: Sequence[Node],
    source: Path,
    digest: str,
    remote_dir: dict[str, str],
    options: FanoutOptions | None = None,
    *,
    stage: Collection[str] = (),
    previous: dict[str, str] | None = None,
    transport: Transport | None = None,
    on_result: Callable[[CommandOutcome], None] | None = None,
) -> Results[CommandOutcome]:
    """SFTP copy of ``source`` (of ``digest``) to ``remote_dir[node]`` where that version
    is missing.

    On the nodes in ``stage`` where a copy is in place the new one is kept beside it
    for :func:`switch_command`, and ``previous[node]`` names the copy in place.
    ``stdout`` of each node's result is ``same`` (in place), ``staged`` or ``copied``.
    """

    async def operation(conn: Connection, node: Node, index: int) -> CommandOutcome:
        target = remote_dir[node.name]
        probe = await conn.run(probe_command(target, digest), timeout=30)
        answer, _, current = probe.stdout.decode(errors="replace").strip().partition(" ")
        if probe.exit_status == 0 and answer == "same":
            return CommandOutcome(node.name, CommandOutput(0, stdout="same"))
        if probe.exit_status == 0 and answer == "foreign":
            raise _foreign(target, node.name)
        held = node.name in stage and bool(current)
        if held and previous is not None:
            previous[node.name] = current
        if held and answer == "staged":
            return CommandOutcome(node.name, CommandOutput(0, stdout="staged"))
        head, tail = posixpath.split(target.rstrip("/"))
        tmp = posixpath.join(head, f".{tail}.shoal-copy")  # Shoal's name, never the user's
        q, staging = shlex.quote(target), shlex.quote(tmp)
        prep = await conn.run(f'rm -rf {staging} && mkdir -p "$(dirname {q})"', timeout=60)
        if prep.exit_status != 0:
            failed = CommandOutput(prep.exit_status, stderr=prep.stderr.decode())
            return CommandOutcome(node.name, failed)
        await conn.put(str(source), tmp)
        mark = f"printf '%s\\n' {shlex.quote(digest)} > {staging}/{DIGEST_FILE}"
        if held:  # the copies kept before go: the rollback target is the one in place
            kdir = shlex.quote(kept_dir(target))
            kept = shlex.quote(f"{kept_dir(target)}/{digest}")
            place = (
                f'mkdir -p {kdir} && for v in {kdir}/*; do [ ! -f "$v/{DIGEST_FILE}" ] '
                f'|| rm -rf "$v" || exit 1; done && mv {staging} {kept}'
            )
        else:
            place = f"rm -rf {q} && mv {staging} {q}"
        done = await conn.run(
            f"if {_ours(target)}; then {mark} && {place}; else rm -rf {staging}; echo foreign; fi",
            timeout=60,
        )
        if done.exit_status == 0 and done.stdout.strip() == b"foreign":
            raise _foreign(target, node.name)
        said = "staged" if held else "copied"
        output = CommandOutput(done.exit_status, stdout=said, stderr=done.stderr.decode())
        return CommandOutcome(node.name, output)

    opts = options or FanoutOptions()
    return await fanout(
        nodes, operation, opts, outcome=CommandOutcome, transport=transport, on_result=on_result
    )
