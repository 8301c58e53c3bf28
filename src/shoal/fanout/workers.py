"""Spreading one fan-out over several processes, one per core.

Theory of operation. A single Python process does every connection's SSH work
(key exchange, encryption, SFTP) on one core. On a machine with more cores,
and on one shared with other work (where the kernel gives each *process* its
share), that caps throughput: a 10 MiB copy to 32 nodes is CPU-bound here.
So a fan-out over enough nodes forks W children (W = usable cores) after every
import is done and before any event loop runs; child k takes nodes k, k+W, ...
(their global indices kept, so ``SHOAL_INDEX`` is unchanged), runs the same
operation closure in its own event loop (fork: nothing is pickled), and streams
JSON lines back over a pipe — each output line as it arrives and each node's
result as soon as it is known. The parent relays them to the callbacks in
arrival order and rebuilds the results in inventory order (recording
nothing, like the scheduler). A child that dies leaves its unfinished nodes with a per-node error;
the others are unaffected. Children run in their own process group, so a
terminal's Ctrl-C reaches the parent alone; when the parent is interrupted or
one of its callbacks fails, it sends each child one SIGINT (the child's event
loop then cancels its work, which ends the commands on the nodes), waits for
them, and raises.

Not spread: fan-outs with a launch delay (stagger is global), small ones (a
fork costs more than it saves), and calls from a process that runs threads
(forking those is unsafe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from shoal import errors
from shoal.errors import ShoalError, TransportError
from shoal.nodes.model import Node

from .options import FanoutOptions
from .results import CommandOutcome, CommandOutput, Results

#: Called once per node with its outcome.
ResultRelay = Callable[[CommandOutcome], None]
#: Called with (node, stream, line) for each output line.
LineRelay = Callable[[str, str, bytes], None]
#: Runs a fan-out over (nodes, their global indices) with the given callbacks.
Job = Callable[
    [Sequence[Node], Sequence[int], FanoutOptions, ResultRelay, LineRelay | None],
    Results[CommandOutcome],
]

#: Below this many nodes per process, forking costs more than it saves: a command
#: (handshake-bound; measured: no gain at 32 nodes) and a copy (CPU-bound on
#: encryption; measured: 15 % faster at 32 nodes with 2 processes on 2 cores).
MIN_NODES_PER_WORKER = {"command": 32, "copy": 12}


def worker_count(n_nodes: int, options: FanoutOptions, kind: str = "command") -> int:
    if options.delay or threading.active_count() > 1:
        return 1  # stagger is global; forking a threaded process is unsafe
    if options.workers is not None:
        return max(1, min(options.workers, n_nodes))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(cores, n_nodes // MIN_NODES_PER_WORKER[kind]))


def spread(
    nodes: Sequence[Node],
    job: Job,
    options: FanoutOptions,
    *,
    on_result: ResultRelay | None = None,
    on_line: LineRelay | None = None,
    kind: str = "command",
) -> Results[CommandOutcome]:
    """Run ``job`` over ``nodes`` in one process or several; see the module docstring."""
    workers = worker_count(len(nodes), options, kind)
    indices = list(range(len(nodes)))
    if workers == 1:
        return job(nodes, indices, options, on_result or (lambda r: None), on_line)
    child_options = dataclasses.replace(
        options,
        parallel=max(1, (options.parallel or 10**6) // workers),
        workers=1,
    )
    started = time.monotonic()
    pipes: dict[int, tuple[int, list[str]]] = {}  # read fd -> (pid, its node names)
    for k in range(workers):
        share = list(range(k, len(nodes), workers))
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.setpgid(0, 0)
            os.close(read_fd)
            _child(write_fd, job, [nodes[i] for i in share], share, child_options, on_line)
        os.close(write_fd)
        pipes[read_fd] = (pid, [nodes[i].name for i in share])
    results = _collect(pipes, on_result, on_line)
    ordered = {n.name: results[n.name] for n in nodes}
    return Results(ordered, duration=time.monotonic() - started)


def _child(
    fd: int,
    job: Job,
    nodes: Sequence[Node],
    indices: Sequence[int],
    options: FanoutOptions,
    on_line: LineRelay | None,
) -> None:  # pragma: no cover - runs in the child
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    code = 0
    try:

        def send_result(r: CommandOutcome) -> None:
            out.write(json.dumps({"result": encode(r)}) + "\n")

        def send_line(node: str, stream: str, line: bytes) -> None:
            out.write(json.dumps({"line": [node, stream, line.decode("latin-1")]}) + "\n")

        job(nodes, indices, options, send_result, send_line if on_line else None)
        out.flush()
    except BaseException as exc:
        code = 1
        with contextlib.suppress(BaseException):  # say why, for the nodes left unfinished
            out.write(json.dumps({"crash": f"{type(exc).__name__}: {exc}"[:300]}) + "\n")
            out.flush()
    finally:
        os._exit(code)


def _collect(
    pipes: dict[int, tuple[int, list[str]]],
    on_result: ResultRelay | None,
    on_line: LineRelay | None,
) -> dict[str, CommandOutcome]:
    results: dict[str, CommandOutcome] = {}
    sel = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    for fd in pipes:
        sel.register(fd, selectors.EVENT_READ)
        buffers[fd] = b""
    open_fds = set(pipes)
    crashed: dict[int, str] = {}  # read fd -> why its child gave up
    stopping: BaseException | None = None
    while open_fds:
        try:
            for key, _ in sel.select():
                fd = int(key.fd)
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    sel.unregister(fd)
                    os.close(fd)
                    open_fds.discard(fd)
                    continue
                *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
                for raw in lines:
                    msg = json.loads(raw)
                    if "crash" in msg:
                        crashed[fd] = str(msg["crash"])
                    elif stopping is None:
                        _relay(msg, results, on_result, on_line)
        except BaseException as exc:  # an interrupt, or a callback that failed
            if stopping is not None:
                raise  # a second interrupt: stop waiting for the children
            stopping = exc
            for pid, _ in pipes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
    sel.close()
    for fd, (pid, names) in pipes.items():
        _, status = os.waitpid(pid, 0)
        because = f": {crashed[fd]}" if fd in crashed else ""
        for name in names:
            if name not in results and stopping is None:
                why = f"worker process ended (status {status}{because}) before this node finished"
                r = CommandOutcome(name, error=TransportError(why, name))
                results[name] = r
                if on_result is not None:
                    on_result(r)
    if stopping is not None:
        raise stopping
    return results


def _relay(
    msg: dict[str, Any],
    results: dict[str, CommandOutcome],
    on_result: ResultRelay | None,
    on_line: LineRelay | None,
) -> None:
    if "line" in msg and on_line is not None:
        node, stream, text = msg["line"]
        on_line(node, stream, text.encode("latin-1"))
    elif "result" in msg:
        r = decode(msg["result"])
        results[r.node] = r
        if on_result is not None:
            on_result(r)


def encode(r: CommandOutcome) -> dict[str, Any]:
    """A node's outcome as JSON for the pipe (the error by class name, message and node)."""
    data = {
        f.name: getattr(r, f.name)
        for f in dataclasses.fields(r)
        if f.name not in ("error", "value")
    }
    if r.value is not None:
        data["value"] = dataclasses.asdict(r.value)
    if r.error is not None:
        data["error"] = {"cls": type(r.error).__name__, "message": str(r.error)}
    return data


def decode(data: dict[str, Any]) -> CommandOutcome:
    """The outcome :func:`encode` wrote; an unknown error class comes back a TransportError."""
    err = data.pop("error", None)
    value = data.pop("value", None)
    r = CommandOutcome(**data, value=CommandOutput(**value) if value is not None else None)
    if err is not None:
        cls = getattr(errors, err["cls"], None)
        if not (isinstance(cls, type) and issubclass(cls, ShoalError)):
            cls = TransportError
        try:
            r.error = cls(err["message"], node=r.node)
        except TypeError:  # a class that takes other arguments: keep the message
            r.error = TransportError(err["message"], r.node)
    return r
