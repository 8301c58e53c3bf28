"""The supervisor: keeps named programs running on one node.

Theory of operation. Each program has a *desired* state (``running`` or
``stopped``), persisted atomically in ``programs.json`` so that an agent that
is itself restarted picks its programs back up, and a run loop (one asyncio
task) that owns the process:

* spawn in a new session (its own process group), stdin from /dev/null,
  stdout and stderr into one pipe pumped into a size-rotated log
  (:mod:`rotate`); spawn errors count as failures;
* wait for the exit (asyncio's child watcher: no polling), then kill whatever
  is left of its process group, record ``exited``;
* decide by the restart policy (``always`` | ``on-failure`` | ``never``);
  a run shorter than ``stable_after`` is a rapid failure: failure ``n`` waits
  the :mod:`backoff` delay; ``fatal_after`` rapid failures in a row give up
  into ``FATAL`` (visible in status, recorded as an event);
* stop = the spec's ``stop_command`` first when it has one (a package's
  ``stop.sh``: ``/bin/sh -c`` with ``SHOAL_PID``, up to ``stop_grace``
  seconds, its outcome recorded as a ``stop_command`` event), then the stop
  signal to the whole process group, up to ``stop_grace`` seconds for the
  group to go, then SIGKILL to the group.

An optional health command (``/bin/sh -c``) runs every ``health_interval``
with a ``health_timeout``; ``health_retries`` failures in a row restart the
program (when ``health_restart``). Pids of running programs are kept in
``pids.json``; a new agent kills the groups its dead predecessor left behind
(checked by process start time) before it starts the programs again.

Upgrade without restart (:meth:`Supervisor.handover` / :meth:`Supervisor.adopt`).
Each program's output pipe is one the supervisor makes itself, so its read end
is a plain fd. An agent being upgraded execs the new build in its own process:
the pid stays, so running programs stay its children (their exits are still
waited for), and the read ends, made inheritable, survive the exec. The new
agent adopts each program whose pid still has the start time recorded at the
handover (``/proc/PID/stat``: a recycled pid is never adopted), pumping the
same pipe into the same log; anything it cannot adopt is reaped as before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .backoff import Backoff
from .persist import read_json, write_json
from .progspec import ProgramSpec, signal_number
from .rotate import RotatingLog

STOPPED = "STOPPED"
STARTING = "STARTING"
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
STOPPING = "STOPPING"
EXITED = "EXITED"
FATAL = "FATAL"

RecordHook = Callable[[str, Optional[str], str], Any]
IOHook = Callable[[str, Optional[OSError]], None]


def describe_exit(code: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is left in the group.

    A group of zombies still accepts signals, so ``killpg(pgid, 0)`` alone would
    keep a stop waiting for the whole grace period; /proc tells them apart.
    """
    if not _kill_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                data = handle.read()
            fields = data[data.rindex(b")") + 2 :].split()
        except (OSError, ValueError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    try:
        rest = data[data.rindex(b")") + 2 :].split()
        return int(rest[19])
    except (ValueError, IndexError):
        return None


class AdoptedProcess:
    """A running program handed over by the previous build of this agent process.

    Quacks like the ``asyncio.subprocess.Process`` the run loop uses: ``pid``,
    ``returncode``, ``stdout`` (the inherited pipe) and ``wait()`` (a thread in
    ``waitpid``: the program is still this process's child).
    """

    def __init__(self, pid: int, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdout: asyncio.StreamReader | None = stdout
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()

        def reap() -> None:
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = -signal.SIGKILL  # reaped elsewhere: its status is lost
            loop.call_soon_threadsafe(self._set, code)

        threading.Thread(target=reap, name=f"adopted-{pid}", daemon=True).start()

    def _set(self, code: int) -> None:
        self.returncode = code
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


class Program:
    """One supervised program and its run loop."""

    def __init__(self, spec: ProgramSpec, supervisor: Supervisor) -> None:
        self.spec = spec
        self.sup = supervisor
        self.desired = "stopped"
        self.state = STOPPED
        self.proc: asyncio.subprocess.Process | AdoptedProcess | None = None
        self.pid: int | None = None
        #: the read end of the running program's output pipe (handed over on upgrade)
        self.out_fd: int | None = None
        #: (pid, pipe fd) of a process to adopt instead of the next spawn
        self.adopting: tuple[int, int] | None = None
        self._out_pipe: asyncio.BaseTransport | None = None
        self.started_at: float | None = None
        self.last_exit: str | None = None
        self.last_exit_at: float | None = None
        self.restarts = 0
        self.failures = 0
        self.next_start: float | None = None
        self.health: str | None = None
        self.health_failures = 0
        self.health_detail = ""
        self.log = RotatingLog(
            supervisor.logs_dir / f"{spec.name}.log",
            spec.log_max_bytes,
            spec.log_backups,
            on_error=supervisor.io_hook,
            budget=max(spec.log_budget_bytes, spec.log_max_bytes),
            on_drop=self._log_dropped,
        )
        self.backoff = Backoff(
            spec.backoff_base, spec.backoff_factor, spec.backoff_cap, spec.backoff_jitter
        )
        self._active = False
        self._restart_reason: str | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._terminating: asyncio.Future[None] | None = None
        self._spawned: asyncio.Event | None = None

    def _log_dropped(self, file: str, size: int) -> None:
        budget = self.spec.log_budget_bytes
        detail = f"dropped {file} ({size} bytes never collected): log budget {budget} bytes"
        self.sup.record("log_budget", self.spec.name, detail)

    # -- control ---------------------------------------------------------

    @property
    def running_loop(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run the program (again) under its policy; no-op when it is already looping."""
        self._active = True
        if not self.running_loop:
            self.failures = 0
            self._spawned = asyncio.Event()
            self._task = asyncio.ensure_future(self._loop())
        if self.spec.health and (self._health_task is None or self._health_task.done()):
            self._health_task = asyncio.ensure_future(self._health_loop())

    async def halt(self) -> None:
        """Stop the process and the loop without changing the desired state."""
        self._active = False
        if self._wake is not None:
            self._wake.set()
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        await self._kill_current()
        if self._task is not None:
            await asyncio.wait({self._task})
        if self.state not in (FATAL, EXITED):
            self.state = STOPPED

    async def restart(self, reason: str) -> None:
        """Restart now: kill the running process (the loop starts it again, no backoff)."""
        if self.running_loop and self._active:
            self._restart_reason = reason
            self.failures = 0
            if self.state == BACKOFF and self._wake is not None:
                self._wake.set()
            else:
                await self._kill_current()
            return
        self.restarts += 1
        self.sup.record("restarted", self.spec.name, reason)
        self.start()

    async def spawned(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until the first spawn attempt of the current loop is over."""
        if self._spawned is not None:
            try:
                await asyncio.wait_for(self._spawned.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _kill_current(self) -> None:
        if self._terminating is not None and not self._terminating.done():
            await asyncio.shield(self._terminating)
            return
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._terminating = asyncio.ensure_future(self._terminate(proc))
        await asyncio.shield(self._terminating)

    async def _terminate(self, proc: asyncio.subprocess.Process | AdoptedProcess) -> None:
        """Stop command, stop signal to the group, grace period, then SIGKILL to the group."""
        self.state = STOPPING
        pgid = proc.pid
        if self.spec.stop_command and proc.returncode is None:
            ok, detail = await self._check(
                self.spec.stop_command, self.spec.stop_grace, "stop command"
            )
            self.sup.record("stop_command", self.spec.name, ("ok: " if ok else "failed: ") + detail)
        deadline = time.monotonic() + self.spec.stop_grace
        _kill_group(pgid, signal_number(self.spec.stop_signal))
        _kill_group(pgid, signal.SIGCONT)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.spec.stop_grace)
        except asyncio.TimeoutError:
            pass
        # the main process is gone (or overran): give the rest of its group the
        # remaining grace, checking at a short interval only while stopping
        while time.monotonic() < deadline and group_alive(pgid):
            await asyncio.sleep(0.05)
        _kill_group(pgid, signal.SIGKILL)
        await proc.wait()

    # -- the run loop ----------------------------------------------------

    async def _loop(self) -> None:
        self._wake = asyncio.Event()
        try:
            while self._active:
                self._restart_reason = None
                began = time.monotonic()
                try:
                    code = await self._run_once()
                except Exception as exc:  # never lose the loop to a bug or odd error
                    self.proc = None
                    self.pid = None
                    self.last_exit = f"supervisor error: {type(exc).__name__}: {exc}"
                    self.sup.record("spawn_failed", self.spec.name, self.last_exit)
                    code = None
                runtime = time.monotonic() - began
                if not self._active:
                    break
                if self._restart_reason is not None:
                    self.restarts += 1
                    self.sup.record("restarted", self.spec.name, self._restart_reason)
                    continue
                policy = self.spec.restart
                if policy == "never" or (policy == "on-failure" and code == 0):
                    self.state = EXITED
                    break
                if runtime >= self.spec.stable_after:
                    self.failures = 0
                self.failures += 1
                if self.failures >= self.spec.fatal_after:
                    self.state = FATAL
                    self.sup.record(
                        "fatal",
                        self.spec.name,
                        f"gave up after {self.failures} rapid failures; last: {self.last_exit}",
                    )
                    break
                delay = self.backoff.delay(self.failures)
                self.state = BACKOFF
                self.next_start = time.time() + delay
                self.sup.record(
                    "backoff",
                    self.spec.name,
                    f"restart in {delay:.2f}s after {self.failures} rapid failure(s)",
                )
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                self.next_start = None
                if not self._active:
                    break
                self.restarts += 1
                reason = self._restart_reason or f"after backoff (failure {self.failures})"
                self.sup.record("restarted", self.spec.name, reason)
        finally:
            self.proc = None
            self.pid = None
            if self.state not in (FATAL, EXITED):
                self.state = STOPPED
            self.sup.save_pids()

    async def _run_once(self) -> int | None:
        """Spawn, pump output, wait for the exit; the exit code (None: did not start)."""
        self.state = STARTING
        self.health = None
        self.health_failures = 0
        proc: asyncio.subprocess.Process | AdoptedProcess
        try:
            if self.adopting is not None:
                pid, fd = self.adopting
                self.adopting = None
                proc = AdoptedProcess(pid, await self._pipe_reader(fd))
                self.out_fd = fd
            else:
                proc = await self._spawn()
        except OSError as exc:
            self.last_exit = f"cannot start: {exc.strerror or exc}"
            self.last_exit_at = time.time()
            self.sup.record("spawn_failed", self.spec.name, self.last_exit)
            if self._spawned is not None:
                self._spawned.set()
            return None
        adopted = isinstance(proc, AdoptedProcess)
        self.proc = proc
        self.pid = proc.pid
        if not adopted or self.started_at is None:
            self.started_at = time.time()
        self.state = RUNNING
        self.sup.save_pids()
        if adopted:
            self.sup.record("adopted", self.spec.name, f"pid {proc.pid}")
        else:
            self.sup.record("started", self.spec.name, f"pid {proc.pid}")
        if self._spawned is not None:
            self._spawned.set()
        if not self._active or self._restart_reason is not None:
            # stopped or restarted while it was being spawned
            self._terminating = asyncio.ensure_future(self._terminate(proc))
        pump = asyncio.ensure_future(self._pump(proc.stdout))
        code = await proc.wait()
        if self._terminating is not None:
            await asyncio.shield(self._terminating)
        _kill_group(proc.pid, signal.SIGKILL)  # leftovers of the group
        _, pending = await asyncio.wait({pump}, timeout=0.5)
        for task in pending:
            task.cancel()
        if self._out_pipe is not None:
            self._out_pipe.close()
            self._out_pipe = None
        self.proc = None
        self.pid = None
        self.out_fd = None
        self.last_exit = describe_exit(code)
        self.last_exit_at = time.time()
        # the event first: pushed to watchers now, not after pids.json's two fsyncs
        self.sup.record("exited", self.spec.name, self.last_exit)
        self.sup.save_pids()
        return code

    async def _pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            data = await stream.read(65536)
            if not data:
                return
            self.log.write(data)

    # -- health ----------------------------------------------------------

    async def _health_loop(self) -> None:
        command = self.spec.health
        assert command is not None
        while self._active and self.running_loop:
            await asyncio.sleep(self.spec.health_interval)
            if self.state != RUNNING:
                continue
            pid = self.pid
            ok, detail = await self._check(command, self.spec.health_timeout)
            if self.state != RUNNING or self.pid != pid:
                continue
            self.health_detail = detail
            if ok:
                if self.health == "failing":
                    self.sup.record("health_recovered", self.spec.name, detail)
                self.health = "ok"
                self.health_failures = 0
                continue
            self.health_failures += 1
            if self.health != "failing":
                self.sup.record("health_failed", self.spec.name, detail)
            self.health = "failing"
            if (
                self.spec.health_restart
                and self.spec.restart != "never"
                and self.health_failures >= self.spec.health_retries
            ):
                await self.restart(f"health check failed {self.health_failures} time(s): {detail}")

    def _environment(self) -> dict[str, str]:
        """The agent's environment, the spec's ``env`` over it, and ``SHOAL_PROGRAM``."""
        env = dict(os.environ)
        env.update(self.spec.env)
        env["SHOAL_PROGRAM"] = self.spec.name
        return env

    async def _start_process(
        self, argv: list[str], env: dict[str, str]
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` in a session of its own in the spec's ``cwd``, stdin from
        /dev/null, stdout and stderr into one pipe."""
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.spec.cwd,
            env=env,
            start_new_session=True,
        )

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start the program with stdout and stderr on a pipe of our own (so that its
        read end is a plain fd an upgraded agent can inherit)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=self.spec.cwd,
                env=self._environment(),
                start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.out_fd = read_fd
        proc.stdout = await self._pipe_reader(read_fd)
        return proc

    async def _pipe_reader(self, fd: int) -> asyncio.StreamReader:
        """An asyncio reader over the read end ``fd`` of the program's output pipe."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        pipe = os.fdopen(fd, "rb", buffering=0)
        self._out_pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        return reader

    async def _check(
        self, command: str, timeout: float, what: str = "health command"
    ) -> tuple[bool, str]:
        """Run ``command`` (``SHOAL_PID`` set) for up to ``timeout`` s: (exit 0, detail)."""
        env = self._environment()
        if self.pid is not None:
            env["SHOAL_PID"] = str(self.pid)
        try:
            proc = await self._start_process(["/bin/sh", "-c", command], env)
        except OSError as exc:
            return False, f"cannot run {what}: {exc.strerror or exc}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            return False, f"timed out after {timeout:g}s"
        _kill_group(proc.pid, signal.SIGKILL)
        text = out.decode("utf-8", "replace").strip().replace("\n", " ")[-200:]
        code = proc.returncode
        return code == 0, (describe_exit(code) + (f": {text}" if text else ""))

    # -- reporting -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "name": self.spec.name,
            "state": self.state,
            "desired": self.desired,
            "pid": self.pid,
            "uptime": round(now - self.started_at, 1)
            if self.state == RUNNING and self.started_at
            else None,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_exit": self.last_exit,
            "next_start": self.next_start,
            "health": self.health,
            "health_detail": self.health_detail,
            "restart": self.spec.restart,
            "command": self.spec.command,
            "log": str(self.log.path),
            "log_bytes": self.log.disk_usage(),
            "log_dropped": self.log.dropped,
        }


class Supervisor:
    """All programs of one agent, their persisted desired state and stale pids."""

    def __init__(self, home: Path, record: RecordHook, io_hook: IOHook) -> None:
        self.home = home
        self.logs_dir = home / "logs"
        self.state_path = home / "programs.json"
        self.pids_path = home / "pids.json"
        self.record = record
        self.io_hook = io_hook
        self.programs: dict[str, Program] = {}
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            io_hook(str(self.logs_dir), exc)

    def load(self) -> list[str]:
        """Read the desired state; returns one message per program that could not be read."""
        problems: list[str] = []
        data = read_json(self.state_path, {})
        entries = data.get("programs", {}) if isinstance(data, dict) else {}
        for name, entry in sorted(entries.items()):
            try:
                spec = ProgramSpec.from_dict(entry.get("spec"))
            except (ValueError, AttributeError) as exc:
                problems.append(f"{self.state_path}: program {name}: {exc}")
                continue
            program = Program(spec, self)
            program.desired = "running" if entry.get("desired") == "running" else "stopped"
            self.programs[spec.name] = program
        return problems

    def save(self) -> bool:
        """Persist the desired state atomically; False (and reported) when it failed."""
        value = {
            "programs": {
                name: {"spec": p.spec.to_dict(), "desired": p.desired}
                for name, p in sorted(self.programs.items())
            }
        }
        try:
            write_json(self.state_path, value)
        except OSError as exc:
            self.io_hook(str(self.state_path), exc)
            return False
        self.io_hook(str(self.state_path), None)
        return True

    def save_pids(self) -> None:
        value = {
            name: {"pid": p.pid, "start": process_start_ticks(p.pid)}
            for name, p in sorted(self.programs.items())
            if p.pid is not None
        }
        try:
            write_json(self.pids_path, value)
        except OSError as exc:
            self.io_hook(str(self.pids_path), exc)

    async def reap_stale(self) -> list[str]:
        """Kill process groups a previous agent left running (but not the adopted
        ones); names of those killed."""
        data = read_json(self.pids_path, {})
        killed: list[str] = []
        groups: list[int] = []
        for name, entry in sorted(data.items() if isinstance(data, dict) else []):
            program = self.programs.get(name)
            if program is not None and program.adopting is not None:
                continue
            pid = entry.get("pid") if isinstance(entry, dict) else None
            if not isinstance(pid, int) or pid <= 1:
                continue
            start = process_start_ticks(pid)
            if start is None or start != entry.get("start"):
                continue  # gone, or the pid now belongs to another process
            _kill_group(pid, signal.SIGTERM)
            groups.append(pid)
            killed.append(name)
        deadline = time.monotonic() + 3.0
        while groups and time.monotonic() < deadline:
            groups = [g for g in groups if group_alive(g)]
            if groups:
                await asyncio.sleep(0.05)
        for group in groups:
            _kill_group(group, signal.SIGKILL)
        return killed

    def handover(self) -> dict[str, Any]:
        """What the next build needs to adopt the running programs across an exec:
        name → pid, start time, pipe fd (made inheritable), started_at, restarts."""
        programs: dict[str, Any] = {}
        for name, p in sorted(self.programs.items()):
            if p.state != RUNNING or p.pid is None or p.out_fd is None:
                continue
            os.set_inheritable(p.out_fd, True)
            programs[name] = {
                "pid": p.pid,
                "start": process_start_ticks(p.pid),
                "fd": p.out_fd,
                "started_at": p.started_at,
                "restarts": p.restarts,
            }
        return programs

    def adopt(self, handed: dict[str, Any]) -> list[str]:
        """Take over the programs of a :meth:`handover`; names of those adopted.

        Adopted only when the program is still wanted and its pid has the start
        time recorded at the handover; an fd not adopted is closed (the process,
        if alive, is left to :meth:`reap_stale`).
        """
        adopted: list[str] = []
        for name, entry in sorted(handed.items()):
            program = self.programs.get(name)
            try:
                pid, fd = int(entry["pid"]), int(entry["fd"])
            except (KeyError, TypeError, ValueError):
                continue
            same = entry.get("start") is not None and process_start_ticks(pid) == entry["start"]
            if program is None or program.desired != "running" or not same:
                try:
                    os.close(fd)
                except OSError:
                    pass
                continue
            os.set_inheritable(fd, False)
            program.adopting = (pid, fd)
            program.started_at = entry.get("started_at")
            program.restarts = int(entry.get("restarts") or 0)
            adopted.append(name)
        return adopted

    def resume(self) -> None:
        """Start every program whose desired state is ``running``."""
        for program in self.programs.values():
            if program.desired == "running":
                program.start()

    def get(self, name: str) -> Program:
        program = self.programs.get(name)
        if program is None:
            raise KeyError(f"no program named {name!r}")
        return program

    async def start(self, spec: ProgramSpec) -> dict[str, Any]:
        """Start ``spec`` (replacing a program of that name whose spec differs)."""
        existing = self.programs.get(spec.name)
        if existing is not None:
            if existing.spec == spec and existing.running_loop:
                existing.desired = "running"
                self.save()
                return existing.status()
            await existing.halt()
            existing.log.close()
        program = Program(spec, self)
        program.desired = "running"
        self.programs[spec.name] = program
        self.save()
        program.start()
        await program.spawned()
        return program.status()

    async def stop(self, name: str) -> dict[str, Any]:
        program = self.get(name)
        program.desired = "stopped"
        self.save()
        await program.halt()
        self.record("stopped", name, "by request")
        return program.status()

    async def restart(self, name: str) -> dict[str, Any]:
        program = self.get(name)
        program.desired = "running"
        self.save()
        await program.restart("by request")
        await asyncio.sleep(0)
        return program.status()

    async def remove(self, name: str) -> dict[str, Any]:
        program = self.get(name)
        await program.halt()
        program.log.close()
        del self.programs[name]
        self.save()
        return {"name": name, "removed": True}

    async def shutdown(self) -> None:
        """Stop every program, keeping the desired state for the next agent."""
        await asyncio.gather(*(p.halt() for p in self.programs.values()))
        for program in self.programs.values():
            program.log.close()
        self.save_pids()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is not None:
            return [self.get(name).status()]
        return [p.status() for _, p in sorted(self.programs.items())]
