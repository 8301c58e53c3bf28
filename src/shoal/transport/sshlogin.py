"""One SSH login, planned and checked: the plan asyncssh is given, the host-key decision
made during the handshake, and the one line that says why authentication failed.

:class:`LoginPlan` is how one connection is made (asyncssh's options, the known_hosts
files that verify, the keys and agent offered). :class:`LoginChecker` is the client
asyncssh calls for a host key it does not already trust (refused when known_hosts has
another key for the host, recorded under ``HostKeyPolicy.ACCEPT_NEW`` when new, refused
otherwise) and notes the methods the server allows; :func:`auth_failure` words a failed
login from both. :mod:`.ssh` connects with them; :mod:`.hostkeys` reads and writes the
files.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from . import hostkeys

DEFAULT_KEYS = ("id_ed25519_sk", "id_ecdsa_sk", "id_ed448", "id_ed25519", "id_ecdsa", "id_rsa",
                "id_dsa")  # fmt: skip

log = logging.getLogger("shoal.transport")


class HostKeyPolicy(enum.Enum):
    VERIFY = "verify"
    ACCEPT_NEW = "accept-new"


@dataclass
class LoginPlan:
    """How one connection is made: asyncssh's options and what to say if it fails."""

    kwargs: dict[str, Any]
    #: where accept-new records a first-seen key (the first of them)
    user_known_hosts: list[str]
    #: every known_hosts file that verifies (user's, then the global ones)
    known_hosts: list[str]
    #: user@host:port
    who: str
    #: the key files offered (None: ssh's defaults in ~/.ssh)
    keys: list[str] | None
    #: the agent socket consulted, if any
    agent: str | None
    identities_only: bool


async def _agent_keys(path: str) -> str:
    """``agent: N keys`` (asked only after a failure, bounded in time)."""
    try:
        async with asyncssh.connect_agent(path) as agent:
            keys = await asyncio.wait_for(agent.get_keys(), 2.0)
    except (asyncio.TimeoutError, asyncssh.Error, OSError, ValueError):
        return "agent: unreachable"
    return f"agent: {len(keys)} key{'s' if len(keys) != 1 else ''}"


async def auth_failure(
    plan: LoginPlan, checker: LoginChecker, exc: asyncssh.PermissionDenied
) -> str:
    """One line: who, the keys and methods tried, the methods the server allows."""
    if plan.keys is None:
        home = Path.home() / ".ssh"
        found = [f"~/.ssh/{k}" for k in DEFAULT_KEYS if (home / k).is_file()]
        tried = found or ["no key in ~/.ssh"]
    else:
        tried = list(plan.keys) or ["no key"]
    if plan.agent:
        tried.append(
            "agent: only those keys" if plan.identities_only else await _agent_keys(plan.agent)
        )
    allowed = ",".join(checker.server_methods) or f"none Shoal could use ({exc.reason})"
    return (
        f"auth failed for {plan.who}: tried publickey ({', '.join(tried)}), server allows {allowed}"
    )


class LoginChecker(asyncssh.SSHClient):
    """Decides on keys not already trusted by known_hosts (asyncssh calls us only then),
    and notes the authentication methods the server allows."""

    def __init__(self, node: str, plan: LoginPlan, policy: HostKeyPolicy) -> None:
        self._node = node
        self._plan = plan
        self._policy = policy
        self._conn: asyncssh.SSHClientConnection | None = None
        self.verdict: str | None = None  # "unknown" | "changed" | "accepted"
        self.stale: tuple[str, str] | None = None  # (known_hosts file, entry) when changed
        self.server_methods: list[str] = []

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def _note_methods(self) -> None:
        if self._conn is not None:
            for method in self._conn.get_server_auth_methods():
                if method not in self.server_methods:
                    self.server_methods.append(method)

    def public_key_auth_requested(self) -> None:
        """Called once the keys given are used up: the server still allows these."""
        self._note_methods()
        return None

    def password_auth_requested(self) -> None:
        self._note_methods()
        return None

    def kbdint_auth_requested(self) -> None:
        self._note_methods()
        return None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        offered = f"{key.get_algorithm()} {key.get_fingerprint()}"
        path = hostkeys.known_in(self._plan.known_hosts, host, addr, port)
        if path is not None:  # a key for this host is known, and not this one
            self.stale = path, host if port in (0, 22) else f"[{host}]:{port}"
            self.verdict = "changed"
            log.info(
                "%s: refused host key %s: %s has another key for it", self._node, offered, path
            )
            return False
        files = self._plan.user_known_hosts
        if self._policy is HostKeyPolicy.ACCEPT_NEW and files:
            hostkeys.record_key(files[0], [self._node, host, addr], port, key)
            self.verdict = "accepted"
            log.info("%s: accepted new host key %s, recorded in %s", self._node, offered, files[0])
            return True
        self.verdict = "unknown"
        log.info(
            "%s: refused unknown host key %s (not in %s)",
            self._node,
            offered,
            ", ".join(self._plan.known_hosts) or "any known_hosts file",
        )
        return False
