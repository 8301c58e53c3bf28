"""``cp``: copy to or from many nodes with ``@`` expansion (CoDeploy's multicopy).

Argument forms (the seed's, kept):

* ``@:PATH`` is PATH on each node (relative to the remote home); remote glob
  patterns are expanded on the node.
* Any other argument is a local path in which every ``@`` stands for the
  node's name (``@@`` for a literal ``@``), e.g. ``out/@/`` or plain ``@``.

Modes, chosen from the arguments:

* push  — local sources, remote destination: ``shoal cp build.tgz @:apps/``
* pull  — remote sources, local destination: ``shoal cp '@:logs/*' out/@/``
* fan   — local sources, local destination naming ``@``: ``shoal cp skel @``
  makes one local copy per node (no connection needed).

``@`` only ever expands to an inventory node name, never through a shell, and
a name that is not a safe single path component is refused for that node.
"""

from __future__ import annotations

import asyncio
import posixpath
import shutil
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import CommandTimeout, OperationError, ShoalError, UsageError
from shoal.nodes.model import Node
from shoal.transport.base import Connection, Transport

from .options import FanoutOptions
from .results import CommandOutcome, CommandOutput, Results
from .scheduler import ResultCallback, fanout
from .workers import spread

REMOTE_PREFIX = "@:"


@dataclass(frozen=True)
class CopyPlan:
    mode: str  # "push" | "pull" | "fan"
    sources: tuple[str, ...]
    dest: str


def is_remote(arg: str) -> bool:
    return arg.startswith(REMOTE_PREFIX)


def plan_copy(args: Sequence[str]) -> CopyPlan:
    """Decide push/pull/fan from ``SRC... DST``; UsageError on a mixed or bad form."""
    if len(args) < 2:
        raise UsageError("cp needs at least one source and a destination")
    *sources, dest = args
    remote_sources = [is_remote(s) for s in sources]
    if any(remote_sources) and not all(remote_sources):
        raise UsageError("cp sources must be all local or all remote (@:PATH), not both")
    if all(remote_sources):
        if is_remote(dest):
            raise UsageError("cp cannot copy from nodes to nodes; one side must be local")
        plan = CopyPlan("pull", tuple(s[len(REMOTE_PREFIX) :] for s in sources), dest)
    elif is_remote(dest):
        plan = CopyPlan("push", tuple(sources), dest[len(REMOTE_PREFIX) :])
    elif "@" in dest.replace("@@", ""):
        plan = CopyPlan("fan", tuple(sources), dest)
    else:
        raise UsageError(
            f"cp destination {dest!r} names no node: use @:PATH for the nodes' side "
            "or a local path containing @ (one per node)"
        )
    for path in (*plan.sources, plan.dest):
        if "\0" in path:
            raise UsageError("cp paths must not contain NUL bytes")
    named: dict[str, str] = {}
    for src in plan.sources:
        if plan.mode == "pull" and any(c in src for c in "*?["):
            continue  # what a glob matches is known on the node only (checked there per pattern)
        name = posixpath.basename(src.rstrip("/"))
        if name in named:
            raise UsageError(f"cp sources {named[name]} and {src} would both be copied to {name!r}")
        named[name] = src
    return plan


def safe_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def expand_local(template: str, node: str) -> str:
    """Replace each ``@`` with the node name (``@@`` is a literal ``@``)."""
    if not safe_component(node):
        raise OperationError(f"node name {node!r} cannot be used in a local path", node)
    return "@".join(part.replace("@", node) for part in template.split("@@"))


def _local_fan(plan: CopyPlan, node: Node) -> int:
    dest = expand_local(plan.dest, node.name)
    total = 0
    for src_text in plan.sources:
        src = Path(expand_local(src_text, node.name))
        if not src.exists():
            raise OperationError(f"local path {src} does not exist", node.name)
        target = Path(dest)
        if len(plan.sources) > 1 or dest.endswith("/") or target.is_dir():
            target = target / src.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, target)
                total += src.stat().st_size
        except OSError as exc:
            raise OperationError(f"local copy to {target} failed: {exc}", node.name) from exc
    return total


async def copy_async(
    nodes: Sequence[Node],
    args: Sequence[str],
    options: FanoutOptions | None = None,
    *,
    transport: Transport | None = None,
    on_result: ResultCallback[CommandOutcome] | None = None,
    indices: Sequence[int] | None = None,
) -> Results[CommandOutcome]:
    plan = plan_copy(args)
    options = options or FanoutOptions()

    if plan.mode == "fan":
        results = {}
        for index, node in enumerate(nodes):
            try:
                size = _local_fan(plan, node)
                res = CommandOutcome(node.name, _moved(size), index=index)
            except ShoalError as exc:
                res = CommandOutcome(node.name, error=exc, index=index)
            results[node.name] = res
            if on_result is not None:
                on_result(res)
        return Results(results)

    if plan.mode == "push":
        for src in plan.sources:
            if "@" not in src.replace("@@", "") and not Path(src).exists():
                raise UsageError(f"cp source {src} does not exist")
    if plan.mode == "push" and len(plan.sources) > 1 and not plan.dest.endswith("/"):
        plan = CopyPlan(plan.mode, plan.sources, plan.dest + "/")

    async def operation(conn: Connection, node: Node, index: int) -> CommandOutcome:
        moved = 0
        if plan.mode == "push":
            for src in plan.sources:
                local = expand_local(src, node.name)
                moved += await _bounded(conn.put(local, plan.dest), options.timeout, node)
        else:
            local_dest = expand_local(plan.dest, node.name)
            if len(plan.sources) > 1 and not local_dest.endswith("/"):
                local_dest += "/"
            for pattern in plan.sources:
                moved += await _bounded(conn.get(pattern, local_dest), options.timeout, node)
        return CommandOutcome(node.name, _moved(moved))

    return await fanout(
        nodes,
        operation,
        options,
        outcome=CommandOutcome,
        transport=transport,
        on_result=on_result,
        indices=indices,
    )


def _moved(nbytes: int) -> CommandOutput:
    """A copy's output: exit status 0, the bytes moved as its stdout."""
    return CommandOutput(exit_status=0, stdout=f"{nbytes} bytes")


async def _bounded(coro: Awaitable[int], timeout: float | None, node: Node) -> int:
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise CommandTimeout(f"copy timed out after {timeout:g}s", node.name) from None


def copy(
    nodes: Sequence[Node],
    args: Sequence[str],
    options: FanoutOptions | None = None,
    *,
    transport: Transport | None = None,
    on_result: ResultCallback[CommandOutcome] | None = None,
) -> Results[CommandOutcome]:
    """Copy per ``args`` (``SRC... DST``) on every node; per-node results.

    Large fan-outs are spread over one process per core (:mod:`.workers`).
    """
    options = options or FanoutOptions()
    options.validate()
    if plan_copy(args).mode == "fan":
        return asyncio.run(copy_async(nodes, args, options, on_result=on_result))

    def job(
        share: Sequence[Node],
        indices: Sequence[int],
        opts: FanoutOptions,
        result_cb: ResultCallback[CommandOutcome],
        line_cb: object,
    ) -> Results[CommandOutcome]:
        if transport is not None:
            transport.keep_only({n.name for n in share})
        return asyncio.run(
            copy_async(share, args, opts, transport=transport, on_result=result_cb, indices=indices)
        )

    return spread(nodes, job, options, on_result=on_result, kind="copy")
