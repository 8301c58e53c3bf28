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

The shell is started by :class:`subprocess.Popen` (vfork), its pipes are read with
the loop's ``add_reader`` and its exit is seen through a pidfd (a waiting thread
where the kernel has none): asyncio's subprocess transport spent a thread, a
self-pipe wake-up, three pipe transports and a task on each command, ~0.45 ms of
the agent's CPU per ``true`` beside ~0.2 ms now (a warm run's node-side cost).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import pwd
import signal
import subprocess
import threading
from typing import IO, Any, Callable

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
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipes: dict[int, IO[bytes]] = {}  # fd 1, 2 -> the open read end
        self._input = b""
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

    # -- the shell's pipes and exit (loop callbacks) ---------------------------

    def _readable(self, fd: int) -> None:
        pipe = self._pipes.get(fd)
        if pipe is None:
            return
        try:
            data = os.read(pipe.fileno(), 1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.output(fd, data)
        else:
            self._close_pipe(fd)
            self.pipe_closed(fd)

    def _close_pipe(self, fd: int) -> None:
        pipe = self._pipes.pop(fd, None)
        if pipe is not None:
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            pipe.close()

    def _close_pipes(self) -> None:
        for fd in list(self._pipes):
            self._close_pipe(fd)
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            asyncio.get_running_loop().remove_writer(proc.stdin.fileno())
            proc.stdin.close()

    def _feed(self) -> None:
        """Write what is left of ``input`` to the shell's stdin; EOF after it."""
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.closed:
            return
        try:
            written = os.write(stdin.fileno(), self._input[: 1 << 16]) if self._input else 0
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the command closed its stdin: the rest is not wanted
            written = len(self._input)
        self._input = self._input[written:]
        if not self._input:
            asyncio.get_running_loop().remove_writer(stdin.fileno())
            stdin.close()

    def _watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """:meth:`exited` when the shell has exited (reaped here: its status is kept)."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(proc.pid)  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):  # Python < 3.9 or a kernel < 5.3
            waiter = threading.Thread(target=self._wait_thread, args=(loop, proc), daemon=True)
            waiter.start()
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reaped(proc, _wait_status(proc.pid, 0))

        loop.add_reader(pidfd, readable)

    def _wait_thread(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        status = _wait_status(proc.pid, 0)
        try:
            loop.call_soon_threadsafe(self._reaped, proc, status)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for the reply

    def _reaped(self, proc: subprocess.Popen[bytes], status: int | None) -> None:
        # as asyncio records a child it could not wait for
        proc.returncode = 255 if status is None else os.waitstatus_to_exitcode(status)
        self.exited()

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
        loop = asyncio.get_running_loop()
        for fd, pipe in self._pipes.items():
            if on:
                loop.add_reader(pipe.fileno(), self._readable, fd)
            else:
                loop.remove_reader(pipe.fileno())

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
        stdin = subprocess.PIPE if req.input is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                [os.path.basename(shell) or shell, "-c", req.command],
                executable=shell,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=req.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            where = exc.filename or req.cwd
            raise ExecFailed(f"cannot start {shell}: {exc.strerror or exc}: {where}") from None
        self._proc = proc
        self._pgid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        self._pipes = {1: proc.stdout, 2: proc.stderr}
        for fd, pipe in self._pipes.items():
            os.set_blocking(pipe.fileno(), False)
            loop.add_reader(pipe.fileno(), self._readable, fd)
        if proc.stdin is not None:
            self._input = req.input or b""
            os.set_blocking(proc.stdin.fileno(), False)
            loop.add_writer(proc.stdin.fileno(), self._feed)
        self._watch_exit(proc)
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
                self._close_pipes()
            else:  # cancelled: the pipes are closed once the shell has exited
                self._exit.add_done_callback(lambda _: self._close_pipes())
        code = proc.returncode
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


def _wait_status(pid: int, flags: int) -> int | None:
    """``waitpid``'s status of our child ``pid``; None if it cannot be waited for."""
    while True:
        try:
            return os.waitpid(pid, flags)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
