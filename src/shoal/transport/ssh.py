"""The SSH transport, on asyncssh.

Reads what ssh reads, in its order: a node's ``ssh_options`` (``-o``, ``-i``)
and its inventory user and port as ssh's command line, the node's own
ssh_config file (labs use one), ``~/.ssh/config``, then the system
``ssh_config`` (see :mod:`.sshconfig`); ssh-agent; ``UserKnownHostsFile`` and
``GlobalKnownHostsFile`` (``/etc/ssh/ssh_known_hosts``, where clusters
distribute host keys). Inventory address and port, when set, win over
ssh_config's HostName and Port. The system directory is ``/etc/ssh`` unless
``system_dir`` (or ``$SHOAL_SSH_SYSTEM_DIR``) says otherwise.
A node with a ``gateway`` attribute is reached through one shared connection to
its gateway (:mod:`.gateways`), with this module's keys and checks unchanged.

An authentication failure says, in one line, what was tried and what the
server allows (``auth failed for root@10.0.0.1:22: tried publickey
(~/.ssh/id_ed25519, agent: 2 keys), server allows publickey,password``) and is
logged on the ``shoal.transport`` logger.

Host keys are always verified. ``HostKeyPolicy.VERIFY`` (default) refuses a
host that is not in known_hosts; ``ACCEPT_NEW`` trusts a host seen for the
first time and records its key; a host whose key *changed* (in any known_hosts
file that verifies, the global ones included) is refused under both, with a
message that says so (the checks live in :mod:`.sshlogin`). Each decision is
logged on ``shoal.transport``: a key accepted (where recorded) or refused at INFO,
the known_hosts file that trusted a key at DEBUG. asyncssh's errors are translated here into
:mod:`shoal.errors`; nothing above this module sees an asyncssh type.

Commands run under the node's login shell as::

    export SHOAL_NODE=... K=V; exec timeout -k GRACE T sh -c 'CMD'

so a timeout kills the command's whole process group *on the node* (coreutils
``timeout`` signals its group), not only the local side. The result is
returned as soon as the remote shell has exited: a command that leaves a
background process holding its stdout does not hang the run.

An interrupted command (its task cancelled: Ctrl-C, SIGTERM, a caller's
callback that failed) is ended on the node too. sshd runs each command as the
leader of its own session, and the exported ``SHOAL_RUN`` token is on that
shell's command line, so a second channel on the same connection finds it
(``pgrep -f``) and signals the whole session (``pkill -s``): TERM, then KILL
after the grace period, as a timeout does. (OpenSSH 9.2's sshd ignores the
SSH "signal" channel request, and would signal only the shell if it did not.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shlex
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import asyncssh

from shoal.agent.linkwaits import keepalive_count
from shoal.errors import (
    AuthError,
    CommandTimeout,
    ConnectError,
    TransportError,
    UsageError,
)
from shoal.nodes.model import Node

from . import gateways, hostkeys, sshconfig
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
from .sftp import SFTPCopier
from .sshlogin import HostKeyPolicy, LoginChecker, LoginPlan, auth_failure
from .tcpinfo import LinkState, link_state
from .unixstream import UnixStream

#: Seconds between the remote TERM and KILL when a command times out or is interrupted.
KILL_GRACE = 2.0
#: Longest an interrupt waits for the node to confirm it signalled the command.
END_REMOTE_TIMEOUT = 3.0
#: Seconds the SSH handshake may take once TCP is connected (the node answered): the
#: connect timeout finds dead nodes; a live one on a lossy link (30 % each way: every
#: round trip of the key exchange may wait out doubled retransmission timeouts) needs
#: longer, as OpenSSH's own LoginGraceTime of 120 s allows it.
HANDSHAKE_SECONDS = 60.0
#: Keys asyncssh (like ssh) tries when no IdentityFile is given, in ~/.ssh.
log = logging.getLogger("shoal.transport")


def _aes_accelerated() -> bool:
    """Whether this CPU encrypts AES in hardware (x86 'aes' flag, ARMv8 'aes' feature)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return " aes" in line
    except OSError:
        pass
    return False


#: With AES in hardware, AES-GCM costs ~40% less CPU than chacha20-poly1305 in
#: asyncssh (10 MiB to 32 nodes: 1.35 s against 2.34 s of client CPU); OpenSSH's
#: own default puts chacha20 first. "^" moves these to the front of the defaults.
AES_ACCELERATED = _aes_accelerated()
PREFER_AES_GCM = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


def _user_config() -> list[str]:
    default = Path.home() / ".ssh" / "config"
    return [str(default)] if os.access(default, os.R_OK) else []


def node_options(node: Node) -> list[tuple[str, tuple[str, ...]]]:
    """The node's command-line settings: its own key (as ``ssh -i``), then its ``-o``s."""
    out: list[tuple[str, tuple[str, ...]]] = []
    if node.identity_file:
        out.append(("identityfile", (node.identity_file,)))
    try:
        out += [sshconfig.parse_option(text) for text in node.ssh_options]
    except UsageError as exc:
        raise UsageError(str(exc), node=node.name) from None
    return out


def _tilde(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


def remote_command(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    sudo: bool = False,
) -> str:
    """The exact shell line sent to the node (pure; unit-tested)."""
    parts = []
    if env:
        for key, value in env.items():
            if not key.isidentifier():
                raise ValueError(f"invalid environment variable name: {key!r}")
            parts.append(f"{key}={shlex.quote(value)}")
    prefix = f"export {' '.join(parts)}; " if parts else ""
    if timeout is None and not sudo:
        return prefix + command  # the login shell runs it, as ssh would: one exec fewer
    inner = ["sh", "-c", command]
    if sudo:
        inner = ["sudo", "-n", "-E", "--", *inner]
    line = shlex.join(inner)
    if timeout is not None:
        limit = f"{max(timeout, 0.001):.3f}"
        line = (
            f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {KILL_GRACE:g} "
            f"{limit} {line}; else exec {line}; fi"
        )
    else:
        line = f"exec {line}"
    return prefix + line


def end_remote_line(token: str, sudo: bool) -> str:
    """The shell line that ends a command started with ``SHOAL_RUN=token``: TERM to the
    session(s) of every process carrying the token, KILL :data:`KILL_GRACE` later (pure;
    the direct path runs it on a second channel, a relay gateway over its client's
    multiplexed connection)."""
    # The shell's command line has the token from the start; whatever it execs has it
    # in its environment. This line's own session (it names the token) is skipped.
    pattern = shlex.quote(f"SHOAL_RUN=[{token[0]}]{token[1:]}")
    script = (
        f"me=$(ps -o sid= -p $$ | tr -d ' '); sids=$({{ pgrep -f {pattern}; grep -lzxF "
        f"SHOAL_RUN={token} /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }} | "
        'while read -r p; do ps -o sid= -p "$p"; done | tr -d " " | sort -u | '
        'grep -vxF "$me"); '
        "for s in $sids; do pkill -TERM -s $s; done; "
        f'[ -z "$sids" ] || (sleep {KILL_GRACE:g}; for s in $sids; do pkill -KILL -s $s; '
        "done) >/dev/null 2>&1 &"
    )
    return f"sudo -n sh -c {shlex.quote(script)}" if sudo else script


class _Session(asyncssh.SSHClientSession[bytes]):
    """Collects one command's output (up to its limit); notices exit before EOF."""

    def __init__(self, capture: OutputCapture) -> None:
        loop = asyncio.get_running_loop()
        self.output = capture
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.output.add("stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout", data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status
        if not self.exited.done():
            self.exited.set_result(None)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.exited.done():
            self.exited.set_result(None)


class SSHConnection(Connection):
    """One SSH connection to one node, reused for every operation."""

    def __init__(
        self,
        node: Node,
        conn: asyncssh.SSHClientConnection,
        keepalive: float = 0.0,
        keepalive_count: int = 3,
    ) -> None:
        self.node = node
        self._conn = conn
        self._keepalive = keepalive  # seconds, as connected (0: none)
        self._keepalive_count = self._tolerated = keepalive_count
        tick = getattr(conn, "_keepalive_timer_callback", None)
        if callable(tick):  # asyncssh's keepalive check (private): refit its tolerance first

            def refit() -> None:
                # a lossy link found while it runs (an upload's backoff spells); set
                # directly: set_keepalive would arm a second timer from inside this one
                count = self._fit(link_state(conn.get_extra_info("socket")))
                if count is not None:
                    conn._keepalive_count_max = count
                tick()

            conn._keepalive_timer_callback = refit  # type: ignore[method-assign]
        self._sftp: asyncssh.SFTPClient | None = None
        #: called once closed (a node behind a gateway: the gateway's release)
        self.on_close: Callable[[], Awaitable[None]] | None = None

    def is_closed(self) -> bool:
        return self._conn.is_closed()

    def link(self) -> LinkState | None:
        """The path's loss and RTO as TCP measured them; a lossy link's keepalives are
        tolerated longer (:func:`~shoal.agent.linkwaits.keepalive_count`), a clean one's
        as configured: a dead node is noticed as fast as before."""
        state = link_state(self._conn.get_extra_info("socket"))
        count = self._fit(state)
        if count is not None:
            self._conn.set_keepalive(count_max=count)
        return state

    def _fit(self, state: LinkState | None) -> int | None:
        """The keepalive count ``state`` calls for, when above the one in force (its loss
        leaves out the timeouts going on now: a dead node's buy it no time)."""
        if state is None or self._keepalive <= 0:
            return None
        count = keepalive_count(state.loss, state.rto, self._keepalive, self._keepalive_count)
        if count <= self._tolerated:
            return None
        self._tolerated = count
        return count

    def quiet_keepalive(self, quiet: bool) -> None:
        """asyncssh re-arms its keepalive timer on every packet received (a timer
        cancelled and one scheduled per beat of a watched agent): off while watched."""
        self._conn.set_keepalive(0 if quiet else self._keepalive)

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
        token = secrets.token_hex(8)
        env = {"SHOAL_RUN": token, **(env or {})}
        line = remote_command(command, env=env, timeout=timeout, sudo=sudo)
        try:
            return await self._run(line, input, timeout, OutputCapture(max_output, on_line))
        except asyncio.CancelledError:
            await self._end_remote(token, sudo)
            raise

    async def _end_remote(self, token: str, sudo: bool) -> None:
        """Signal the session(s) of the processes that carry ``token`` (bounded in time)."""
        with contextlib.suppress(asyncssh.Error, OSError, asyncio.TimeoutError):
            line = end_remote_line(token, sudo)
            await asyncio.wait_for(self._conn.run(line, check=False), END_REMOTE_TIMEOUT)

    async def _run(
        self,
        line: str,
        input: bytes | None,
        timeout: float | None,
        capture: OutputCapture,
    ) -> CommandResult:
        # from before the exec request: the node's `timeout` may start before this loop,
        # busy with hundreds of links, sees the channel open
        started = time.monotonic()
        try:
            session = _Session(capture)
            chan, _ = await self._conn.create_session(lambda: session, line, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            raise TransportError(f"cannot start command: {exc.reason}", self.node.name) from exc
        except asyncssh.Error as exc:
            raise ConnectError(f"connection lost: {exc}", self.node.name) from exc
        except OSError as exc:
            raise ConnectError(f"connection lost: {exc.strerror or exc}", self.node.name) from exc
        # A command that ends without reading its input (a missing program, say)
        # may have closed the channel already: its exit status is the answer.
        with contextlib.suppress(BrokenPipeError):
            if input is not None:
                chan.write(input)
            chan.write_eof()
        # The remote `timeout` fires at T and kills by T+grace; the local limit is a
        # backstop for a node that stops answering mid-command.
        hard = None if timeout is None else timeout + KILL_GRACE + 3.0
        try:
            await asyncio.wait_for(asyncio.shield(session.exited), hard)
        except asyncio.TimeoutError:
            chan.close()
            raise CommandTimeout(
                f"command timed out after {timeout:g}s (node stopped answering)", self.node.name
            ) from None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(session.closed), DRAIN_AFTER_EXIT)
        if not session.closed.done():
            chan.close()  # a background process still holds the output open
        capture.flush_lines()
        elapsed = time.monotonic() - started
        status = session.exit_status
        if timeout is not None and status in (124, 137) and elapsed >= timeout * 0.98:
            raise CommandTimeout(
                f"command timed out after {timeout:g}s and was killed on the node",
                self.node.name,
            )
        if status is None and session.exit_signal is None:
            raise ConnectError("connection lost while the command ran", self.node.name)
        return CommandResult(
            exit_status=status,
            stdout=capture.stdout,
            stderr=capture.stderr,
            signal=session.exit_signal,
            dropped=capture.dropped,
        )

    async def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = await self._conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                raise TransportError(f"cannot start SFTP: {exc}", self.node.name) from exc
        return self._sftp

    async def put(self, local: str, remote: str) -> int:
        copier = SFTPCopier(await self.sftp(), self.node.name, discard=self._discard)
        return await copier.upload(local, remote)

    async def _discard(self, path: str) -> None:
        """Remove ``path`` on the node over a fresh channel (not behind queued SFTP writes)."""
        await self._conn.run(f"rm -f -- {shlex.quote(path)}", check=False)

    async def get(self, remote: str, local: str) -> int:
        return await SFTPCopier(await self.sftp(), self.node.name).download(remote, local)

    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        try:
            _, stream = await self._conn.create_unix_connection(UnixStream, path, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"cannot open {path} on the node: {exc}", self.node.name) from exc
        assert isinstance(stream, UnixStream)
        return stream, stream

    async def forward_remote(self, host: str, port: int) -> RemoteForward:
        try:
            listener = await self._conn.forward_remote_port("127.0.0.1", 0, host, port)
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(
                f"cannot forward a port on the node to the controller: {exc}", self.node.name
            ) from exc
        return RemoteForward("127.0.0.1", listener.get_port(), listener.close)

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            await on_close()


class SSHTransport(Transport):
    """Opens asyncssh connections; see the module docstring for the policies."""

    def __init__(
        self,
        *,
        host_keys: HostKeyPolicy = HostKeyPolicy.VERIFY,
        preconnected: dict[str, socket.socket] | None = None,
        use_user_config: bool = True,
        keepalive: float = 5.0,
        keepalive_count: int = 3,
        system_dir: str | None = None,
    ) -> None:
        self.host_keys = host_keys
        #: where ssh_config and ssh_known_hosts are read (``/etc/ssh``); "" reads none
        self.system_dir = sshconfig.system_dir() if system_dir is None else system_dir
        self.keepalive = keepalive
        self.keepalive_count = keepalive_count
        self._preconnected = preconnected or {}
        self._user_config = _user_config() if use_user_config else []
        self._known_files: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._key_cache: dict[str, list[asyncssh.SSHKeyPair]] = {}
        self._kh_cache: dict[tuple[tuple[str, int, int], ...], asyncssh.SSHKnownHosts] = {}
        self._gateways = gateways.GatewayPool(lambda n, t: self.connect(n, timeout=t))

    def keep_only(self, names: Collection[str]) -> None:
        for name in list(self._preconnected):
            if name not in names:
                self._preconnected.pop(name).close()

    def config_files(self, node: Node) -> list[str]:
        """The user-side config files of this node (the system file comes after them)."""
        return ([node.ssh_config] if node.ssh_config else []) + self._user_config

    def _system_config(self) -> list[str]:
        path = os.path.join(self.system_dir, "ssh_config") if self.system_dir else ""
        return [path] if path and os.access(path, os.R_OK) else []

    def known_hosts_files(self, node: Node, config: list[str]) -> list[str]:
        """The known_hosts files ssh would use for this node (slow path only)."""
        key = (node.name, tuple(config))
        if key not in self._known_files:
            opts = asyncssh.SSHClientConnectionOptions(config=config, host=node.name)
            files = opts.known_hosts
            if files == () or files is None:
                system = self.system_dir or sshconfig.ETC_SSH
                files = [
                    *(os.path.expanduser(f) for f in sshconfig.DEFAULT_USER_KNOWN_HOSTS),
                    f"{system}/ssh_known_hosts",
                    f"{system}/ssh_known_hosts2",
                ]
            self._known_files[key] = [str(f) for f in files]  # type: ignore[union-attr]
        return self._known_files[key]

    def _resolve(self, node: Node) -> tuple[list[str], sshconfig.Resolved | None]:
        """The node's config files and, when the fast path can, its settings."""
        config = self.config_files(node)
        resolved = sshconfig.resolve(
            config,
            node.name,
            node.user,
            node.port,
            options=node_options(node),
            system=self.system_dir or None,
        )
        return config, resolved

    async def _wait_socket(self, node: Node, timeout: float | None) -> socket.socket | None:
        sock = self._preconnected.pop(node.name, None)
        if sock is None:
            return None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        fd = sock.fileno()
        loop.add_writer(fd, writable)
        try:
            await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            loop.remove_writer(fd)
            sock.close()
            raise ConnectError(
                f"connect to {node.host}:{node.port} timed out after {timeout:g}s", node.name
            ) from None
        loop.remove_writer(fd)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            sock.close()
            raise _os_error(OSError(code, os.strerror(code)), node)
        return sock

    def _keys(self, paths: list[str]) -> list[asyncssh.SSHKeyPair]:
        """Private keys loaded once per file (missing files skipped, as ssh does)."""
        keys: list[asyncssh.SSHKeyPair] = []
        for path in paths:
            if path not in self._key_cache:
                try:
                    self._key_cache[path] = list(asyncssh.load_keypairs([path]))
                except (OSError, asyncssh.KeyImportError, ValueError):
                    self._key_cache[path] = []
            keys.extend(self._key_cache[path])
        return keys

    def _known_hosts(self, paths: list[str]) -> asyncssh.SSHKnownHosts:
        """known_hosts files parsed once (again when one changes, e.g. accept-new)."""
        stamp = []
        for path in paths:
            try:
                st = os.stat(path)
                stamp.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        key = tuple(stamp)
        if key not in self._kh_cache:
            text = ""
            for path, _, _ in stamp:
                with contextlib.suppress(OSError):
                    text += Path(path).read_text(errors="replace") + "\n"
            self._kh_cache[key] = asyncssh.import_known_hosts(text)
        return self._kh_cache[key]

    def _connect_kwargs(
        self, node: Node, config: list[str], resolved: sshconfig.Resolved | None, sock: bool
    ) -> LoginPlan:
        """asyncssh options for this node, where its host keys are, what it authenticates with."""
        if resolved is None:
            return self._slow_kwargs(node, config, sock)
        kwargs: dict[str, Any] = {"config": [], "username": resolved.user}
        kwargs["host"] = node.name if sock else node.host or resolved.hostname
        if not sock:
            kwargs["port"] = resolved.port
        keys: list[asyncssh.SSHKeyPair] = []
        if resolved.identity_files:
            keys = kwargs["client_keys"] = self._keys(resolved.identity_files)
        agent = resolved.identity_agent
        if agent is None or (resolved.identities_only and not keys):
            kwargs["agent_path"] = agent = None
        else:
            if agent:
                kwargs["agent_path"] = agent
            if resolved.identities_only:  # the agent's copies of the listed keys only
                kwargs["agent_identities"] = [k.public_data for k in keys]
        files = resolved.known_hosts + resolved.global_known_hosts
        kwargs["known_hosts"] = self._known_hosts(files)
        if resolved.proxy_jump:
            kwargs["tunnel"] = resolved.proxy_jump
        if "ciphers" not in resolved.options and AES_ACCELERATED:
            kwargs["encryption_algs"] = PREFER_AES_GCM
        for key, arg in (("kexalgorithms", "kex_algs"), ("hostkeyalgorithms",
                         "server_host_key_algs"), ("ciphers", "encryption_algs"),
                         ("macs", "mac_algs")):  # fmt: skip
            if key in resolved.options:
                kwargs[arg] = resolved.options[key]
        if "serveraliveinterval" in resolved.options:
            kwargs["keepalive_interval"] = float(resolved.options["serveraliveinterval"])
        if "serveralivecountmax" in resolved.options:
            kwargs["keepalive_count_max"] = int(resolved.options["serveralivecountmax"])
        tried = self._key_names(resolved.identity_files) if resolved.identity_files else None
        return LoginPlan(
            kwargs,
            resolved.known_hosts,
            files,
            f"{resolved.user}@{node.host or resolved.hostname}:{node.port or resolved.port}",
            tried,
            None if agent is None else agent or os.environ.get("SSH_AUTH_SOCK") or None,
            resolved.identities_only,
        )

    def _slow_kwargs(self, node: Node, config: list[str], sock: bool) -> LoginPlan:
        """asyncssh reads the config files itself; the command line still comes first."""
        cli = sshconfig.resolve([], node.name, node.user, node.port, options=node_options(node))
        assert cli is not None  # no file: nothing that needs asyncssh
        given = {key for key, _ in node_options(node)}
        kwargs: dict[str, Any] = {"config": config + self._system_config()}
        kwargs["host"] = node.name if sock else node.host or node.name
        if node.user or "user" in given:
            kwargs["username"] = cli.user
        if (node.port or "port" in given) and not sock:
            kwargs["port"] = cli.port
        if cli.identity_files:
            kwargs["client_keys"] = self._keys(cli.identity_files)
        if cli.proxy_jump:
            kwargs["tunnel"] = cli.proxy_jump
        for key, arg in (("serveraliveinterval", "keepalive_interval"),
                         ("serveralivecountmax", "keepalive_count_max")):  # fmt: skip
            if key in cli.options:
                kwargs[arg] = int(cli.options[key])
        # known_hosts still read by us: a missing file is empty, as for OpenSSH
        user_files = cli.known_hosts if "userknownhostsfile" in given else None
        files = user_files or self.known_hosts_files(node, config + self._system_config())
        kwargs["known_hosts"] = self._known_hosts(files)
        who = f"{node.user + '@' if node.user else ''}{node.address}:{node.port or 22}"
        tried = self._key_names(cli.identity_files) if cli.identity_files else None
        return LoginPlan(kwargs, files, files, who, tried, os.environ.get("SSH_AUTH_SOCK"), False)

    def _key_names(self, paths: list[str]) -> list[str]:
        """The key files, as a person reads them (``~/``; a file without a key says so)."""
        return [_tilde(p) if self._key_cache.get(p) else f"{_tilde(p)} (no key)" for p in paths]

    async def connect(
        self,
        node: Node,
        *,
        timeout: float | None = 10.0,
        tunnel: SSHConnection | None = None,
        agent_forward: str | None = None,
    ) -> SSHConnection:
        """A connection to ``node``: directly, or through ``tunnel`` (the connection to
        its gateway: :mod:`.gateways` gives it when the node has one); ``agent_forward``:
        the agent socket its sessions forward (a relay gateway's, :mod:`.relay`)."""
        if node.gateway and tunnel is None:
            return await gateways.connect_behind(self._gateways, self.connect, node, timeout)
        checker: LoginChecker | None = None
        plan: LoginPlan | None = None
        started = time.monotonic()
        phase = "connect"
        try:
            config, resolved = self._resolve(node)
            given = dict(node_options(node))
            if resolved is not None and "connecttimeout" in given:
                timeout = resolved.connect_timeout  # -o ConnectTimeout, as ssh's command line
            policy = self.host_keys
            if "stricthostkeychecking" in given:
                strict = given["stricthostkeychecking"][0].lower()
                policy = HostKeyPolicy.ACCEPT_NEW if strict == "accept-new" else policy
            sock = None if tunnel else await self._wait_socket(node, timeout)
            left = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
            if sock is None and node.host and node.port and tunnel is None:
                sock = await _open_socket(node, left)
            plan = self._connect_kwargs(node, config, resolved, sock is not None)
            if tunnel is not None:
                plan.kwargs["tunnel"] = tunnel._conn  # direct-tcpip on the gateway's connection
            if agent_forward is not None:
                plan.kwargs["agent_forwarding"] = agent_forward
            log.debug(
                "connect %s: %s (%s path)",
                node.name,
                plan.who,
                "asyncssh" if resolved is None else "fast",
            )
            checker = LoginChecker(node.name, plan, policy)
            plan.kwargs.setdefault("keepalive_interval", self.keepalive)
            plan.kwargs.setdefault("keepalive_count_max", self.keepalive_count)
            key_checker = checker
            if sock is not None and left is not None:  # TCP is up: the handshake's own limit
                left = timeout = max(left, HANDSHAKE_SECONDS)
                phase = "SSH handshake"
            conn = await asyncssh.connect(
                sock=sock,
                client_factory=lambda: key_checker,
                connect_timeout=left,
                **plan.kwargs,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise hostkeys.refusal(
                checker.verdict if checker else None,
                checker.stale if checker else None,
                node.name,
                exc,
            ) from exc
        except asyncssh.PermissionDenied as exc:
            assert plan is not None and checker is not None
            message = await auth_failure(plan, checker, exc)
            log.info("%s: %s", node.name, message)
            raise AuthError(message, node.name) from exc
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError) as exc:
            raise ConnectError(f"connection closed during SSH handshake: {exc}", node.name) from exc
        except asyncssh.ChannelOpenError as exc:  # only a tunnel opens a channel to connect
            via = tunnel.node.name if tunnel else "the tunnel"
            raise ConnectError(f"gateway {via} cannot reach it: {exc.reason}", node.name) from exc
        except asyncssh.Error as exc:
            raise TransportError(f"SSH error: {exc}", node.name) from exc
        except asyncio.TimeoutError:
            raise ConnectError(f"{phase} timed out after {timeout:g}s", node.name) from None
        except socket.gaierror as exc:
            raise ConnectError(f"cannot resolve host name {node.address!r}", node.name) from exc
        except OSError as exc:
            raise _os_error(exc, node) from exc
        except ValueError as exc:  # asyncssh reports bad config/keys this way
            raise TransportError(f"SSH configuration error: {exc}", node.name) from exc
        if checker.verdict is None and log.isEnabledFor(logging.DEBUG):
            hostkeys.log_trusted_by(
                node.name, str(plan.kwargs.get("host") or node.address), plan.known_hosts, conn
            )
        made = SSHConnection(
            node,
            conn,
            float(plan.kwargs["keepalive_interval"]),
            int(plan.kwargs["keepalive_count_max"]),
        )
        made.link()  # the handshake's retransmissions already tell a lossy link
        return made


async def _open_socket(node: Node, timeout: float | None) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(node.host, node.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _os_error(exc: OSError, node: Node) -> ConnectError:
    where = f"{node.address}:{node.port or 22}"
    reasons = {
        errno.ECONNREFUSED: f"connection refused by {where}",
        errno.EHOSTUNREACH: f"no route to host {where}",
        errno.ENETUNREACH: f"network unreachable for {where}",
        errno.ETIMEDOUT: f"connect to {where} timed out",
        errno.ECONNRESET: f"connection reset by {where}",
    }
    return ConnectError(reasons.get(exc.errno or 0, f"cannot connect to {where}: {exc}"), node.name)
