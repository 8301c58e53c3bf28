"""One-shot steps run by the agent for the controller (``step.*`` requests).

Theory of operation. An application's process block is a sequence of one-shot
commands and supervised services; the controller drives it over one open
stream per node. A one-shot command runs here, not in an SSH session, so that
it outlives the controller: ``step.run {id, command, env?, cwd?, limit?}``
(``limit``: seconds before the step is killed) starts ``/bin/sh -c command``
in its own process group (output to ``logs/steps/<id>.log``) and answers when
it exits with ``{id, exit, tail, started, ended, cached}``. The same ``id``
asked again while it runs attaches to the running command (a controller killed
and restarted never runs a step twice); once it succeeded, the recorded result
is answered at once (``cached: true``) as long as the command, env and cwd are
the same; a failed step runs again. Successes are kept in ``steps.json`` so an
agent restart keeps them.

A *gated* step (``step.run {..., gate: true}``) is spawned at once but held:
its shell waits on a pipe, and the request answers ``{gated: true}`` without
waiting. ``step.open {id}`` lets it go (one write on the pipe), so a barrier's
release costs the node no fork or exec; asking ``step.run`` again then
attaches to it as usual. Its ``started`` and ``limit`` count from the open.

A step outlives its agent too: the command runs under a small shell wrapper
that writes its exit status to ``logs/steps/<id>.exit``, and running steps
(pid and start time) are kept in ``steps-running.json``. A new agent (an
upgrade, a crash) adopts the ones still running — it waits for their exit
through a pidfd, without polling — and takes the exit status of those that
ended meanwhile from their files, so a step is never started twice because
its agent changed.

``step.logs {id, lines?, offset?}`` answers ``{data, offset}`` like
``proc.logs``: the last ``lines`` (default 50) of the step's log, or with
``offset`` the bytes after byte ``offset`` of it (at most :data:`READ_MAX` a
request; an offset past the end — the log was removed and written again —
reads from 0); ``offset`` in the answer is where the next read starts, so a
follower polls with it. A step this agent never heard of is refused.

``step.status {prefix}`` lists recorded and running steps whose id starts with
the prefix; ``step.forget {prefix}`` kills running ones, removes their records
and logs (``app down`` leaves nothing behind).

Standard library only, Python >= 3.9 (this ships inside the agent).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .persist import read_json, write_json
from .supervisor import process_start_ticks

TAIL_BYTES = 4096
#: Most bytes one ``step.logs`` answers (proc.logs' bound).
READ_MAX = 1 << 20
#: $1 = the step's command, $2 = its exit file (written when it ends)
WRAPPER = '/bin/sh -c "$1"; c=$?; echo $c > "$2.tmp" && mv -f "$2.tmp" "$2"; exit $c'
GATE = "IFS= read -r _gate || exit 125; exec </dev/null; "
ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")

RecordHook = Callable[[str, Optional[str], str], Any]


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or set(value) - ID_CHARS:
        raise ValueError(f"bad step id {value!r}: use letters, digits and _.@- (max 200)")
    return value


def _digest(command: str, env: dict[str, str], cwd: str | None) -> str:
    text = json.dumps([command, sorted(env.items()), cwd], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Steps:
    """Recorded and running steps of one agent."""

    def __init__(self, home: Path, record: RecordHook) -> None:
        self.home = home
        self.logs = home / "logs" / "steps"
        self.path = home / "steps.json"
        self.record = record
        data = read_json(self.path, {})
        self.done: dict[str, dict[str, Any]] = data if isinstance(data, dict) else {}
        self.running: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.digests: dict[str, str] = {}
        self.pgids: dict[str, int] = {}
        #: held steps: their shell's stdin and the future of when they were let go
        self.gates: dict[str, tuple[asyncio.StreamWriter, asyncio.Future[float]]] = {}
        self.running_path = home / "steps-running.json"
        self.adopted = False

    def _exit_path(self, step_id: str) -> Path:
        return self.logs / f"{step_id}.exit"

    def _save_running(self, step_id: str, entry: dict[str, Any] | None) -> None:
        data = read_json(self.running_path, {})
        if not isinstance(data, dict):
            data = {}
        if entry is None:
            data.pop(step_id, None)
        else:
            data[step_id] = entry
        try:
            write_json(self.running_path, data)
        except OSError:
            pass

    def _adopt(self) -> None:
        """Take over the steps a previous agent left running (see the module docstring)."""
        self.adopted = True
        data = read_json(self.running_path, {})
        for step_id, entry in sorted(data.items() if isinstance(data, dict) else []):
            if step_id in self.running or not isinstance(entry, dict):
                continue
            pid = entry.get("pid")
            if not isinstance(pid, int) or pid <= 1:
                continue
            self.digests[step_id] = str(entry.get("digest", ""))
            self.pgids[step_id] = pid
            alive = process_start_ticks(pid) == entry.get("ticks")
            future = asyncio.ensure_future(
                self._watch(step_id, pid, float(entry.get("started", time.time())), alive)
            )
            self.running[step_id] = future
            future.add_done_callback(functools.partial(self._finished, step_id))

    async def _watch(self, step_id: str, pid: int, started: float, alive: bool) -> dict[str, Any]:
        if alive:
            await _wait_pid(pid)
        try:
            text = self._exit_path(step_id).read_text().strip()
            code: int | None = int(text)
            note = "adopted from a previous agent"
        except (OSError, ValueError):
            code, note = None, "lost with a previous agent"
        return self._result(step_id, code, note, started, self.digests.get(step_id, ""))

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if not self.adopted:
            self._adopt()
        if op == "step.run":
            return await self.run(args)
        if op == "step.open":
            return self.open(_check_id(args.get("id")))
        if op == "step.logs":
            return self.read_log(args)
        if op == "step.status":
            return self.status(str(args.get("prefix", "")))
        if op == "step.forget":
            return await self.forget(str(args.get("prefix", "")))
        raise ValueError(f"unknown operation {op!r}")

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        step_id = _check_id(args.get("id"))
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"step {step_id}: command must be a non-empty string")
        env = args.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError(f"step {step_id}: env must map strings to strings")
        cwd = args.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError(f"step {step_id}: cwd must be a string")
        timeout = args.get("limit")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"step {step_id}: limit must be a positive number of seconds")
        digest = _digest(command, env, cwd)
        previous = self.done.get(step_id)
        if previous is not None and previous.get("digest") == digest:
            return dict(previous, cached=True)
        gated = bool(args.get("gate"))
        future = self.running.get(step_id)
        if future is None or self.digests.get(step_id) != digest:
            if future is not None:
                await self._kill(step_id)
            spawned: asyncio.Future[None] | None = None
            if gated:
                spawned = asyncio.get_running_loop().create_future()
            future = asyncio.ensure_future(
                self._execute(step_id, command, env, cwd, timeout, spawned)
            )
            self.running[step_id] = future
            self.digests[step_id] = digest
            future.add_done_callback(functools.partial(self._finished, step_id))
            if spawned is not None:
                waiters: set[asyncio.Future[Any]] = {spawned, future}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if gated and step_id in self.gates:
            return {"id": step_id, "gated": True, "cached": False}
        result: dict[str, Any] = await asyncio.shield(future)
        return dict(result, cached=False)

    def _finished(self, step_id: str, future: asyncio.Future[dict[str, Any]]) -> None:
        if self.running.get(step_id) is future:
            del self.running[step_id]
            self.pgids.pop(step_id, None)

    async def _execute(
        self,
        step_id: str,
        command: str,
        env: dict[str, str],
        cwd: str | None,
        timeout: float | None,
        spawned: asyncio.Future[None] | None = None,
    ) -> dict[str, Any]:
        started = time.time()
        full_env = dict(os.environ)
        full_env.update(env)
        log_path = self.logs / f"{step_id}.log"
        try:
            self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
            if cwd:
                Path(cwd).mkdir(parents=True, exist_ok=True)
            log = open(str(log_path), "ab")  # noqa: SIM115 (closed once the child holds it)
        except OSError as exc:
            return self._result(step_id, None, f"cannot start: {exc}", started, "")
        exit_path = self._exit_path(step_id)
        try:
            try:
                exit_path.unlink()
            except OSError:
                pass
            try:
                # held until step.open writes a line when gated
                wrapper = (GATE if spawned is not None else "") + WRAPPER
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh",
                    "-c",
                    wrapper,
                    "shoal-step",
                    command,
                    str(exit_path),
                    stdin=asyncio.subprocess.PIPE if spawned else asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cwd,
                    env=full_env,
                    start_new_session=True,
                )
            except OSError as exc:
                return self._result(step_id, None, f"cannot start: {exc}", started, "")
        finally:
            log.close()
        self.pgids[step_id] = proc.pid
        self._save_running(
            step_id,
            {
                "pid": proc.pid,
                "ticks": process_start_ticks(proc.pid),
                "digest": self.digests.get(step_id, ""),
                "started": started,
            },
        )
        if spawned is not None and proc.stdin is not None:
            opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.gates[step_id] = (proc.stdin, opened)
            spawned.set_result(None)
            started = await opened  # the open's own time, not this task's next turn
        self.record("step_started", None, f"{step_id} pid {proc.pid}")
        note = ""
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            code = None
            note = f"timed out after {timeout:g}s"
        _killpg(proc.pid, signal.SIGKILL)  # leftovers of the group
        return self._result(step_id, code, note, started, digest=self.digests.get(step_id, ""))

    def _result(
        self, step_id: str, code: int | None, note: str, started: float, digest: str
    ) -> dict[str, Any]:
        result = {
            "id": step_id,
            "exit": code,
            "note": note,
            "tail": self._tail(step_id),
            "started": started,
            "ended": time.time(),
            "digest": digest,
        }
        self.record("step_exited", None, f"{step_id} exit {code}{' ' + note if note else ''}")
        self._save_running(step_id, None)
        if code == 0:
            self.done[step_id] = result
            self._save()
        return result

    def _tail(self, step_id: str) -> str:
        try:
            with open(str(self.logs / f"{step_id}.log"), "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - TAIL_BYTES))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def read_log(self, args: dict[str, Any]) -> dict[str, Any]:
        """``step.logs``: a tail of the step's log, or its bytes after an offset."""
        step_id = _check_id(args.get("id"))
        offset = args.get("offset")
        lines = args.get("lines", 50)
        if offset is not None and (not isinstance(offset, int) or offset < 0):
            raise ValueError(f"step {step_id}: offset must be a whole number of bytes, 0 or more")
        if not isinstance(lines, int) or lines < 0:
            raise ValueError(f"step {step_id}: lines must be a whole number, 0 or more")
        try:
            handle = open(str(self.logs / f"{step_id}.log"), "rb")  # noqa: SIM115
        except FileNotFoundError:
            if step_id in self.done or step_id in self.running:
                return {"data": "", "offset": 0}
            raise KeyError(f"no step named {step_id!r} on this agent") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if offset is None:
                data = _last_lines(handle, size, lines)
                end = size
            else:
                start = offset if offset <= size else 0
                handle.seek(start)
                data = handle.read(READ_MAX)
                end = start + len(data)
        return {"data": data.decode("utf-8", "replace"), "offset": end}

    def _save(self) -> None:
        try:
            write_json(self.path, self.done)
        except OSError:
            pass

    def open(self, step_id: str) -> dict[str, Any]:
        """Let a gated step go; ``opened`` is False when it was not held."""
        gate = self.gates.pop(step_id, None)
        if gate is None:
            return {"id": step_id, "opened": False}
        writer, opened = gate
        at = time.time()
        try:
            writer.write(b"go\n")
            writer.close()
        except (OSError, RuntimeError):
            pass
        if not opened.done():
            opened.set_result(at)
        return {"id": step_id, "opened": True, "at": at}

    def status(self, prefix: str) -> dict[str, Any]:
        done = {k: v for k, v in self.done.items() if k.startswith(prefix)}
        running = sorted(k for k in self.running if k.startswith(prefix))
        return {"done": done, "running": running}

    async def _kill(self, step_id: str) -> None:
        gate = self.gates.pop(step_id, None)
        if gate is not None and not gate[1].done():
            gate[1].set_result(time.time())
        pgid = self.pgids.get(step_id)
        future = self.running.get(step_id)
        if pgid is not None:
            _killpg(pgid, signal.SIGKILL)
        if future is not None:
            try:
                await asyncio.wait_for(asyncio.shield(future), 5)
            except (asyncio.TimeoutError, Exception):
                pass

    async def forget(self, prefix: str) -> dict[str, Any]:
        if not prefix:
            raise ValueError("step.forget needs a non-empty prefix")
        killed = sorted(k for k in self.running if k.startswith(prefix))
        for step_id in killed:
            await self._kill(step_id)
        removed = sorted(k for k in self.done if k.startswith(prefix))
        for step_id in removed:
            del self.done[step_id]
        self._save()
        logs = 0
        try:
            for path in self.logs.glob("*"):
                if path.name.startswith(prefix):
                    path.unlink()
                    logs += 1
        except OSError:
            pass
        return {"killed": killed, "removed": removed, "logs": logs}


def _last_lines(handle: Any, size: int, lines: int) -> bytes:
    """The last ``lines`` lines of an open file of ``size`` bytes (within READ_MAX)."""
    if lines <= 0:
        return b""
    handle.seek(max(0, size - READ_MAX))
    parts = handle.read(READ_MAX).split(b"\n")
    trailing = parts[-1] == b""
    if trailing:
        parts = parts[:-1]
    kept = parts[-lines:]
    return b"\n".join(kept) + (b"\n" if trailing and kept else b"")


async def _wait_pid(pid: int) -> None:
    """Until ``pid`` (not our child) has exited: a pidfd when the kernel has them."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        gone = asyncio.Event()
        loop.add_reader(fd, gone.set)
        try:
            await gone.wait()
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return
    while process_start_ticks(pid) is not None:  # no pidfd: check twice a second
        await asyncio.sleep(0.5)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
