"""The ``exec`` stream: run one command as sshd would, its output pushed as it comes.

``exec {command, timeout?, env?, input?, cwd?}`` runs the user's login shell
(the passwd entry's, else ``/bin/sh``) as ``SHELL -c command``, argv[0] the
shell's base name as sshd gives it, in the user's home (``$HOME`` of the
agent, else the passwd entry's; ``cwd`` relative to it), with the agent's
environment plus ``env``, stdin from /dev/null unless ``input`` (base64) is
given, in a new session (its own process group). The agent forks the shell
itself: no SSH session channel, no fork + PAM + login in sshd per command.

Output is pushed as ``{"push": "out", "stream": "stdout"|"stderr", "data":
<base64>}`` in chunks of at most :data:`CHUNK` raw bytes, in order per stream;
when more than :data:`HIGH_WATER` bytes wait for the reader, the command's
pipes are not read until they drain (the command blocks, as under ssh). The
reply ``{"exit": int|null, "signal": name|null, "timed_out": bool}`` comes
when the shell exits, after at most :data:`DRAIN_AFTER_EXIT` seconds more for
its output to reach end-of-file: a ``prog &`` left holding the pipes does not
hold the reply, and it keeps running (as with ssh).

A ``timeout`` sends SIGTERM to the process group and SIGKILL
:data:`KILL_AFTER` seconds later (``timeout -k 2 T``); ``cancel`` does the
same (the reply still comes); a closed connection does the same and no reply
is sent. At most :data:`MAX_EXECS` commands run at once per agent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import pwd
import signal
from typing import Any, Callable

from . import protocol
from .outbox import Outbox

MAX_EXECS = 256
#: Raw bytes per output push: its base64 line (~44 KB) stays under asyncio's default
#: 64 KiB line limit, so any stream reader takes it.
CHUNK = 32 << 10
HIGH_WATER = 256 << 10
DRAIN_AFTER_EXIT = 0.25
KILL_AFTER = 2.0

_STREAMS = {1: "stdout", 2: "stderr"}


def login_shell() -> str:
    """The user's login shell from the passwd entry (``/bin/sh`` when it names none)."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell or "/bin/sh"


def user_home() -> str:
    """Where sshd would start the shell: ``$HOME`` as the agent got it, else the passwd home."""
    home = os.environ.get("HOME", "")
    if home.startswith("/"):
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or "/"
    except KeyError:
        return "/"


class ExecRequest:
    """The checked arguments of one ``exec`` request."""

    def __init__(self, args: dict[str, Any]) -> None:
        command = args.get("command")
        if not isinstance(command, str) or not command:
            raise ValueError("exec needs a command (a non-empty string)")
        if "\x00" in command:
            raise ValueError("command contains a NUL byte")
        self.command = command
        timeout = args.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError("timeout must be a positive number of seconds")
        self.timeout: float | None = None if timeout is None else float(timeout)
        env = args.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str)
            and k
            and "=" not in k
            and "\x00" not in k + str(v)
            and isinstance(v, str)
            for k, v in env.items()
        ):
            raise ValueError("env must map variable names to strings")
        self.env: dict[str, str] = env
        data = args.get("input")
        self.input: bytes | None = None
        if data is not None:
            if not isinstance(data, str):
                raise ValueError("input must be base64 text")
            try:
                self.input = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("input is not valid base64") from None
        cwd = args.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\x00" in cwd):
            raise ValueError("cwd must be a path")
        self.cwd = os.path.join(user_home(), cwd) if cwd else user_home()


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self, stream: ExecStream) -> None:
        self.stream = stream

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.stream.output(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.stream.pipe_closed(fd)

    def process_exited(self) -> None:
        self.stream.exited()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ExecStream:
    """One running ``exec`` request of one connection."""

    def __init__(self, request_id: object, outbox: Outbox, request: ExecRequest) -> None:
        self.request_id = request_id
        self.outbox = outbox
        self.request = request
        self.task: asyncio.Task[None] | None = None
        self.on_end: Callable[[], None] | None = None
        self.timed_out = False
        self._transport: Any = None
        self._pgid: int | None = None
        self._terminating = False
        self._paused = False
        self._resume: asyncio.Future[None] | None = None
        self._open = {1, 2}
        loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[None] = loop.create_future()
        self._eof = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    # -- protocol callbacks ------------------------------------------------

    def output(self, fd: int, data: bytes) -> None:
        stream = _STREAMS.get(fd)
        if stream is None:
            return
        for at in range(0, len(data), CHUNK):
            piece = base64.b64encode(data[at : at + CHUNK]).decode("ascii")
            self.outbox.put(protocol.push(self.request_id, "out", stream=stream, data=piece))
        if not self._paused and self.outbox.buffered() > HIGH_WATER:
            self._set_reading(False)
            self._resume = asyncio.ensure_future(self._resume_when_drained())

    def pipe_closed(self, fd: int) -> None:
        self._open.discard(fd)
        if not self._open:
            self._eof.set()

    def exited(self) -> None:
        if not self._exit.done():
            self._exit.set_result(None)

    # -- flow control --------------------------------------------------------

    def _set_reading(self, on: bool) -> None:
        self._paused = not on
        if self._transport is None:
            return
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.resume_reading() if on else pipe.pause_reading()

    async def _resume_when_drained(self) -> None:
        try:
            await self.outbox.drain()
        except (ConnectionError, OSError):
            return  # the connection is gone: close() ends the command
        self._set_reading(True)

    # -- ending --------------------------------------------------------------

    def _terminate(self) -> None:
        """SIGTERM to the process group now, SIGKILL after :data:`KILL_AFTER` seconds."""
        if self._pgid is None or self._terminating:
            return
        self._terminating = True
        _signal_group(self._pgid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(KILL_AFTER, _signal_group, self._pgid, signal.SIGKILL)

    def _on_timeout(self) -> None:
        if not self._exit.done():
            self.timed_out = True
            self._terminate()

    def cancel(self) -> None:
        """``cancel``: kill the command; its reply still comes."""
        self._terminate()

    def close(self) -> None:
        """The connection ended: kill the command, send nothing more."""
        self._terminate()
        if self.task is not None:
            self.task.cancel()

    # -- the run ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            result = await self._execute()
        except ExecFailed as exc:
            await self._send(protocol.failure(self.request_id, str(exc)))
        else:
            await self._send(protocol.reply(self.request_id, result))
        finally:
            if self.on_end is not None:
                self.on_end()

    async def _execute(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        req = self.request
        shell = login_shell()
        env = dict(os.environ)
        env.update(req.env)
        stdin = asyncio.subprocess.PIPE if req.input is not None else asyncio.subprocess.DEVNULL
        try:
            self._transport, _ = await loop.subprocess_exec(
                lambda: _Pipes(self),
                os.path.basename(shell) or shell,
                "-c",
                req.command,
                executable=shell,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=req.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            where = exc.filename or req.cwd
            raise ExecFailed(f"cannot start {shell}: {exc.strerror or exc}: {where}") from None
        transport = self._transport
        self._pgid = transport.get_pid()
        if req.input is not None:
            pipe = transport.get_pipe_transport(0)
            if pipe is not None:
                pipe.write(req.input)
                pipe.write_eof()
        timer = None if req.timeout is None else loop.call_later(req.timeout, self._on_timeout)
        try:
            await asyncio.shield(self._exit)  # a cancel must not cancel the exit itself
            if not self._eof.is_set():
                try:
                    await asyncio.wait_for(self._eof.wait(), DRAIN_AFTER_EXIT)
                except asyncio.TimeoutError:
                    pass  # a background process holds the output: leave it running
        except asyncio.CancelledError:
            self._terminate()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if self._exit.done():
                transport.close()
            else:  # cancelled: closing now would SIGKILL the shell alone, before its group
                self._exit.add_done_callback(lambda _: transport.close())
        code = transport.get_returncode()
        return {
            "exit": code if code is not None and code >= 0 else None,
            "signal": _signal_name(-code) if code is not None and code < 0 else None,
            "timed_out": self.timed_out,
        }

    async def _send(self, message: protocol.Message) -> None:
        try:
            await self.outbox.send(message)
        except (ConnectionError, OSError):
            pass


class ExecFailed(Exception):
    """The command could not be started (answered as a refusal)."""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
