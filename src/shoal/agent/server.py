"""The agent process: event log + supervisor behind a Unix socket.

Theory of operation. :class:`Agent` owns the working area (default
``~/.shoal``): ``agent.sock`` (mode 0600, the only control endpoint; SSH's
authentication is the authentication), ``programs.json`` (desired state),
``pids.json``, ``events.jsonl``, ``logs/``. Each connection is a sequence of
JSON-line requests; ordinary ones are answered in order, streaming ones
(``watch``, ``exec``) run beside them on the same connection and push messages
(:mod:`protocol`). Requests:

``hello`` / ``status``          versions, build, pid, uptime, io errors, programs
``proc.start`` {spec}           start (or replace) a program; persisted
``proc.stop|restart|remove`` {name}
``proc.status`` {name?}         one or all programs
``proc.logs`` {name, lines?, offset?}   tail, or bytes after an offset (follow)
``events`` {since, limit?}      events with seq > since
``shutdown``                    stop programs (desired state kept) and exit
``content.*``                   push sessions, chunk fetches, switch-over (:mod:`.pushsession`)
``step.run|open|logs|status|forget``  one-shot steps of applications (:mod:`.steps`)
``ping``                        ``{t: agent wall clock, seq: last event seq}`` (rtt, skew)
``watch`` {since, beat}         events pushed as recorded, heartbeats (:mod:`.watching`)
``exec`` {command, ...}         a command under the login shell, output pushed (:mod:`.execute`)
``cancel`` {id}                 end a stream of this connection
``logs.list|read|ack``          central log collection (:mod:`.logship`)
``audit.scan|page|replace``     files hashed for ``shoal audit``, stat-cached (:mod:`.filehash`)
``agent.handover``              exec ``<home>/agent.pyz`` in this process: the new build
                                adopts the running programs (:meth:`Supervisor.handover`)
``agent.share|unshare``         serve this agent's zipapp to peers (:mod:`.agentshare`)

At most :data:`MAX_CLIENTS` connections are served at once: a newcomer past
that closes the oldest one waiting for its next request with no stream running
(else it is refused), so idle connections, however many, never lock ``status``
out. A connection's end ends its streams (an exec's process group is killed).

Write errors in the working area (a full disk) never stop the agent: they are
recorded as an ``io_error`` event and listed under ``errors`` in ``status``
until a later write to the same file succeeds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import protocol
from .agentshare import AgentShare
from .eventjournal import EventLog
from .execute import MAX_EXECS, ExecRequest, ExecStream
from .filehash import FileAudit
from .logship import LogShip
from .outbox import Outbox
from .persist import write_atomic
from .progspec import ProgramSpec
from .pushsession import ContentService
from .rotate import RotatingLog
from .steps import Steps
from .supervisor import Supervisor
from .watching import WatchStream, beat_interval, since_seq

AGENT_VERSION = "0.1.0"
#: Control connections served at once (a push holds about five per controller).
MAX_CLIENTS = 256


def read_build() -> str:
    """The build id baked into the zipapp (``dev`` when run from a source tree)."""
    try:
        import pkgutil

        data = pkgutil.get_data(__package__ or "shoal.agent", "BUILD")
    except (OSError, ValueError):
        data = None
    return data.decode("ascii").strip() if data else "dev"


class Agent:
    """One node agent serving its working area."""

    def __init__(
        self, home: Path, lock_fd: int | None = None, handed: dict[str, Any] | None = None
    ) -> None:
        self.home = home
        #: the working area's lock (``agent.pid``), kept across a handover's exec
        self.lock_fd = lock_fd
        #: programs handed over by the build this process ran before (name → entry)
        self.handed = handed or {}
        self._handover_to: str | None = None
        self.sock_path = home / "agent.sock"
        self.build = read_build()
        self.started = time.time()
        self.errors: dict[str, str] = {}
        self.events = EventLog(home / "events.jsonl", on_error=self._io)
        self.supervisor = Supervisor(home, self._record, self._io)
        self.steps = Steps(home, self._record)
        self.logship = LogShip(self.supervisor.logs_dir, self._program_log)
        self.agent_id = self._identity()
        self.content = ContentService(home, self._record)
        self.audit = FileAudit(home, self._record)
        self.share = AgentShare(home, self.build, self._record)
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        #: connection handler → its connection (oldest first)
        self._clients: dict[asyncio.Task[Any], _Conn] = {}
        self._execs: set[ExecStream] = set()

    def _identity(self) -> str:
        path = self.home / "agent.id"
        try:
            text = path.read_text().strip()
            if text:
                return text
        except OSError:
            pass
        ident = uuid.uuid4().hex[:16]
        try:
            write_atomic(path, (ident + "\n").encode())
        except OSError as exc:
            self._io(str(path), exc)
        return ident

    # -- hooks -----------------------------------------------------------

    def _record(self, kind: str, program: str | None, detail: str) -> None:
        self.events.record(kind, program, detail)

    def _io(self, where: str, exc: OSError | None) -> None:
        """Track write errors per file; one event per transition, never raised."""
        if exc is None:
            if where in self.errors:
                del self.errors[where]
                self.events.record("io_recovered", None, where)
            return
        message = f"{exc.strerror or exc}: {where}"
        if self.errors.get(where) != message:
            self.errors[where] = message
            self.events.record("io_error", None, message)

    # -- lifecycle -------------------------------------------------------

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Recover programs, listen on the socket, run until shutdown."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stopping.set)
        for problem in self.supervisor.load():
            self.events.record("io_error", None, problem)
        adopted = self.supervisor.adopt(self.handed)
        killed = await self.supervisor.reap_stale()
        self.events.record(
            "agent_started",
            None,
            f"pid {os.getpid()} build {self.build} protocol {protocol.PROTOCOL_VERSION}"
            + (f"; adopted {', '.join(adopted)}" if adopted else "")
            + (f"; killed leftovers of {', '.join(killed)}" if killed else ""),
        )
        try:
            os.unlink(str(self.sock_path))
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=str(self.sock_path), limit=protocol.MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(str(self.sock_path), 0o600)
        self.content.start()
        self.supervisor.resume()
        if ready is not None:
            ready()
        await self._stopping.wait()
        self.events.record("agent_stopping", None, f"pid {os.getpid()}")
        self._server.close()
        self.content.close()
        self.share.close()
        try:
            os.unlink(str(self.sock_path))
        except OSError:
            pass
        await self.supervisor.shutdown()

    def request_shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    # -- requests --------------------------------------------------------

    def _admit(self, task: asyncio.Task[Any], conn: _Conn) -> bool:
        if len(self._clients) >= MAX_CLIENTS:
            idle = next((t for t, c in self._clients.items() if c.waiting and not c.streams), None)
            if idle is None:
                return False
            del self._clients[idle]
            idle.cancel()
        self._clients[task] = conn
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn()
        if not self._admit(task, conn):
            writer.write(protocol.encode(protocol.failure(None, "too many connections")))
            writer.close()
            return
        outbox = Outbox(writer)
        try:
            while True:
                conn.waiting = True
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    outbox.put(protocol.failure(None, "message too long"))
                    break
                if not line:
                    break
                if task not in self._clients:
                    break  # evicted as it read
                conn.waiting = False
                request_id: Any = None
                try:
                    message = protocol.decode(line)
                    request_id = message.get("id")
                    req = protocol.check_request(message)
                except protocol.ProtocolError as exc:
                    await outbox.send(protocol.failure(request_id, str(exc), exc.kind))
                    break  # a peer that does not speak our protocol gets nothing more
                if req["op"] in protocol.STREAMING_OPS:
                    refusal = self._open_stream(req, outbox, conn)
                    if refusal is not None:
                        await outbox.send(refusal)
                    continue
                await outbox.send(await self._answer(req, conn))
                if req["op"] == "shutdown":
                    break
                if req["op"] == "agent.handover" and self._handover_to is not None:
                    # a moment for the reply to leave (over SSH) before the exec closes it
                    loop = asyncio.get_running_loop()
                    loop.call_later(0.2, self._exec_handover, self._handover_to)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # gone, or evicted for a newcomer
        finally:
            self._clients.pop(task, None)
            for stream in list(conn.streams.values()):
                stream.close()
            try:
                writer.close()
            except OSError:
                pass

    async def _answer(self, req: dict[str, Any], conn: _Conn) -> dict[str, Any]:
        """The one reply to an ordinary request."""
        try:
            if req["op"] == "cancel":
                stream = conn.streams.get(req["args"].get("id"))
                if stream is not None:
                    stream.cancel()
                return protocol.reply(req["id"], {"cancelled": stream is not None})
            return protocol.reply(req["id"], await self.dispatch(req["op"], req["args"]))
        except (KeyError, ValueError, TypeError) as exc:
            text = exc.args[0] if exc.args else str(exc)
            return protocol.failure(req["id"], str(text), "agent")
        except Exception as exc:  # answer, and keep serving
            text = f"agent error in {req['op']}: {type(exc).__name__}: {exc}"
            return protocol.failure(req["id"], text, "agent")

    def _open_stream(
        self, req: dict[str, Any], outbox: Outbox, conn: _Conn
    ) -> dict[str, Any] | None:
        """Start a ``watch`` or ``exec``; a refusal to send, or None (the stream answers)."""
        rid, args = req["id"], req["args"]
        if rid in conn.streams:
            return protocol.failure(rid, f"request {rid!r} is already streaming")
        stream: WatchStream | ExecStream
        try:
            if req["op"] == "watch":
                since = since_seq(args.get("since"))
                beat = beat_interval(args.get("beat"))
                stream = WatchStream(
                    rid, outbox, self.events, str(self.home), self._program_states, beat
                )
            else:
                if len(self._execs) >= MAX_EXECS:
                    return protocol.failure(rid, "too many commands running")
                stream = ExecStream(rid, outbox, ExecRequest(args))
        except ValueError as exc:
            return protocol.failure(rid, str(exc))
        conn.streams[rid] = stream

        def ended() -> None:
            if conn.streams.get(rid) is stream:
                del conn.streams[rid]
            if isinstance(stream, ExecStream):
                self._execs.discard(stream)

        stream.on_end = ended
        if isinstance(stream, WatchStream):
            stream.start(since, self.agent_id)
        else:
            self._execs.add(stream)
            stream.start()
        return None

    def _check_handover(self) -> dict[str, Any]:
        """Refuse a handover that cannot work; the build it would exec."""
        pyz = self.home / "agent.pyz"
        if self.lock_fd is None:
            raise ValueError("this agent does not hold its working area's lock: restart it")
        try:
            with zipfile.ZipFile(str(pyz)) as archive:
                new = archive.read("shoal/agent/BUILD").decode("ascii").strip()
                archive.getinfo("__main__.py")
        except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise ValueError(f"no agent build to hand over to in {pyz}: {exc}") from None
        if new == self.build:
            raise ValueError(f"build {new} already runs")
        self._handover_to = str(pyz)
        programs = sum(1 for p in self.supervisor.programs.values() if p.out_fd is not None)
        return {"pid": os.getpid(), "from": self.build, "to": new, "programs": programs}

    def _exec_handover(self, pyz: str) -> None:
        """Exec the new build in this process, passing the running programs over."""
        assert self.lock_fd is not None
        path = self.home / "handover.json"
        programs = self.supervisor.handover()
        os.set_inheritable(self.lock_fd, True)
        value = {"lock_fd": self.lock_fd, "from": self.build, "programs": programs}
        self.events.record(
            "agent_handover",
            None,
            f"pid {os.getpid()} build {self.build}: exec {pyz}; "
            f"{len(programs)} running program(s) handed over",
        )
        try:
            write_atomic(path, json.dumps(value).encode())
            argv = [sys.executable, pyz, "serve", "--home", str(self.home), "--handover", str(path)]
            os.execv(sys.executable, argv)
        except OSError as exc:  # still the old build: keep serving
            self._handover_to = None
            os.set_inheritable(self.lock_fd, False)
            self.events.record("io_error", None, f"handover failed: {exc.strerror or exc}")

    def _program_log(self, name: str) -> RotatingLog | None:
        program = self.supervisor.programs.get(name)
        return program.log if program is not None else None

    def _program_states(self) -> dict[str, int]:
        return dict(Counter(p.state for p in self.supervisor.programs.values()))

    def hello(self) -> dict[str, Any]:
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "version": AGENT_VERSION,
            "build": self.build,
            "agent_id": self.agent_id,
            "pid": os.getpid(),
            "home": str(self.home),
            "host": socket.gethostname(),
            "uptime": round(time.time() - self.started, 1),
            "errors": sorted(self.errors.values()),
            "last_event": self.events.seq,
            "handover": True,
        }

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        """Carry out one validated request; KeyError/ValueError become refusals."""
        sup = self.supervisor
        if op.startswith("content."):
            return await self.content.dispatch(op, args)
        if op == "hello":
            return self.hello()
        if op == "ping":
            return {"t": round(time.time(), 6), "seq": self.events.seq}
        if op == "status":
            result = self.hello()
            result["programs"] = sup.status()
            return result
        if op == "proc.start":
            spec = ProgramSpec.from_dict(args.get("spec"))  # type: ignore[arg-type]
            return await sup.start(spec)
        if op == "proc.status":
            return sup.status(_name(args) if args.get("name") is not None else None)
        if op == "proc.stop":
            return await sup.stop(_name(args))
        if op == "proc.restart":
            return await sup.restart(_name(args))
        if op == "proc.remove":
            return await sup.remove(_name(args))
        if op == "proc.logs":
            program = sup.get(_name(args))
            offset = args.get("offset")
            if offset is not None:
                data, new_offset = program.log.read_from(int(offset))
            else:
                data = program.log.tail(int(args.get("lines", 50)))
                new_offset = program.log.offset
            return {"data": data.decode("utf-8", "replace"), "offset": new_offset}
        if op == "events":
            result = self.events.since(int(args.get("since", 0)), int(args.get("limit", 1000)))
            result["agent_id"] = self.agent_id
            return result
        if op.startswith("step."):
            return await self.steps.dispatch(op, args)
        if op.startswith("logs."):
            return self.logship.dispatch(op, args)
        if op.startswith("audit."):
            return await self.audit.dispatch(op, args)
        if op in ("agent.share", "agent.unshare"):
            return await self.share.dispatch(op, args)
        if op == "agent.handover":
            return self._check_handover()
        if op == "shutdown":
            asyncio.get_running_loop().call_soon(self.request_shutdown)
            return {"pid": os.getpid(), "stopping": True}
        raise ValueError(f"unknown operation {op!r}")


class _Conn:
    """One control connection: whether it waits for a request, and its running streams."""

    def __init__(self) -> None:
        self.waiting = True
        self.streams: dict[Any, WatchStream | ExecStream] = {}


def _name(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("missing program name")
    return name
