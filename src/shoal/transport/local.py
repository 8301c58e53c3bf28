"""A transport to this machine through subprocesses (no SSH).

Useful for a controller that is also a node, and for tests of the layers
above that want real processes without a lab. Commands run under ``sh -c`` in
their own session, so a timeout kills the whole process group, as on SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path

from shoal.errors import CommandTimeout, OperationError
from shoal.nodes.model import Node

from .base import (
    DRAIN_AFTER_EXIT,
    MAX_OUTPUT,
    ByteReader,
    ByteWriter,
    CommandResult,
    Connection,
    LineCallback,
    RemoteForward,
    Transport,
)
from .capture import OutputCapture


async def _collect(stream: asyncio.StreamReader, name: str, into: OutputCapture) -> None:
    while chunk := await stream.read(65536):
        into.add(name, chunk)


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """Wait for the process itself to exit, not for its pipes to close.

    asyncio's ``Process.wait()`` also waits for the pipes, which a background
    grandchild can hold open for ever. A pidfd tells when the process exits;
    asyncio's child watcher reaps it and sets ``returncode`` right after.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:
        fd = -1  # already reaped: returncode is about to be set
    if fd >= 0:
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    for _ in range(500):  # the watcher reaps within milliseconds; bounded wait
        if proc.returncode is not None:
            return proc.returncode
        await asyncio.sleep(0.002)
    raise OperationError(f"process {proc.pid} exited but was never reaped", "local")


class LocalConnection(Connection):
    def __init__(self, node: Node, root: Path | None = None) -> None:
        self.node = node
        self.root = root or Path.home()

    def _path(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else self.root / p

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
        full_env = {**os.environ, **(env or {})}
        argv = ["sudo", "-n", "-E", "--", "sh", "-c", command] if sudo else ["sh", "-c", command]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=self.root,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(input or b"")
        proc.stdin.close()
        output = OutputCapture(max_output, on_line)
        readers = [
            asyncio.ensure_future(_collect(proc.stdout, "stdout", output)),
            asyncio.ensure_future(_collect(proc.stderr, "stderr", output)),
        ]
        try:
            code = await asyncio.wait_for(_exit_code(proc), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await _exit_code(proc)
            for r in readers:
                r.cancel()
            raise CommandTimeout(f"command timed out after {timeout:g}s", self.node.name) from None
        # as over SSH: a background child holding the pipes does not hold the result
        await asyncio.wait(readers, timeout=DRAIN_AFTER_EXIT)
        for r in readers:
            r.cancel()
        with contextlib.suppress(ProcessLookupError):
            proc._transport.close()  # type: ignore[attr-defined]  # release the pipes
        output.flush_lines()
        out, err, dropped = output.stdout, output.stderr, output.dropped
        if code is not None and code < 0:
            return CommandResult(None, out, err, signal.Signals(-code).name[3:], dropped)
        return CommandResult(code, out, err, dropped=dropped)

    async def put(self, local: str, remote: str) -> int:
        src, dst = Path(local), self._path(remote)
        if remote.endswith("/") or dst.is_dir():
            dst = dst / src.name
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                return 0
            tmp = dst.with_name(f".{dst.name}.shoal.tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)
            return src.stat().st_size
        except OSError as exc:
            raise OperationError(f"copy to {dst} failed: {exc}", self.node.name) from exc

    async def get(self, remote: str, local: str) -> int:
        matches = sorted(glob.glob(str(self._path(remote))))
        if not matches:
            raise OperationError(f"no file matches {remote}", self.node.name)
        total = 0
        for match in matches:
            total += await LocalConnection(self.node, Path("/")).put(match, local)
        return total

    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        try:
            return await asyncio.open_unix_connection(str(self._path(path)))
        except OSError as exc:
            raise OperationError(f"cannot open {path}: {exc}", self.node.name) from exc

    async def forward_remote(self, host: str, port: int) -> RemoteForward:
        """The node is this machine: ``host:port`` is already reachable from it."""
        return RemoteForward(host, port, lambda: None)

    async def close(self) -> None:
        return None


class LocalTransport(Transport):
    """Every node is this machine; ``root`` is where relative paths land."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    async def connect(self, node: Node, *, timeout: float | None = None) -> LocalConnection:
        return LocalConnection(node, self.root)
