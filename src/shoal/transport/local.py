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

from shoal.errors import CommandTimeout, TransportError
from shoal.nodes.model import Node

from .base import ByteReader, ByteWriter, CommandResult, Connection, LineCallback, Transport


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
        try:
            out, err = await asyncio.wait_for(proc.communicate(input or b""), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise CommandTimeout(f"command timed out after {timeout:g}s", self.node.name) from None
        if on_line is not None:
            for stream, data in (("stdout", out), ("stderr", err)):
                for line in data.splitlines():
                    on_line(stream, line)
        code = proc.returncode
        if code is not None and code < 0:
            return CommandResult(None, out, err, signal=signal.Signals(-code).name[3:])
        return CommandResult(code, out, err)

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
            raise TransportError(f"copy to {dst} failed: {exc}", self.node.name) from exc

    async def get(self, remote: str, local: str) -> int:
        matches = sorted(glob.glob(str(self._path(remote))))
        if not matches:
            raise TransportError(f"no file matches {remote}", self.node.name)
        total = 0
        for match in matches:
            total += await LocalConnection(self.node, Path("/")).put(match, local)
        return total

    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        try:
            return await asyncio.open_unix_connection(str(self._path(path)))
        except OSError as exc:
            raise TransportError(f"cannot open {path}: {exc}", self.node.name) from exc

    async def close(self) -> None:
        return None


class LocalTransport(Transport):
    """Every node is this machine; ``root`` is where relative paths land."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    async def connect(self, node: Node, *, timeout: float | None = None) -> LocalConnection:
        return LocalConnection(node, self.root)
