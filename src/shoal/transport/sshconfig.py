"""ssh_config, read once per file instead of once per connection.

asyncssh re-reads and re-tokenises every config file on every connection
(about 20 ms for a 32-host file here, so O(N²) across a fleet). This module
parses each file once into Host blocks and resolves a node's settings from
them with OpenSSH's rules (first value wins, ``IdentityFile`` accumulates,
``Host`` patterns with ``*``, ``?`` and ``!``). The result is handed to
asyncssh as explicit options, together with keys and known_hosts that are
also loaded once.

Only keywords whose meaning is fully reproduced here take this fast path.
A file that uses anything else (``Match``, ``Include``, ``ProxyCommand``,
``IdentityFile`` without ``IdentitiesOnly``, unknown ``%`` tokens, ...) makes
:func:`resolve` return None for the hosts it concerns, and the transport then
hands the files to asyncssh unchanged: slower, never different.
"""

from __future__ import annotations

import fnmatch
import getpass
import os
import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: Keywords resolved here; any other keyword sends its hosts to the slow path.
FAST = {
    "host", "hostname", "user", "port", "identityfile", "identitiesonly", "identityagent",
    "userknownhostsfile", "globalknownhostsfile", "proxyjump", "connecttimeout",
    "kexalgorithms", "hostkeyalgorithms", "ciphers", "macs", "serveraliveinterval",
    "serveralivecountmax", "pubkeyacceptedalgorithms", "pubkeyacceptedkeytypes",
    # no effect on a non-interactive client that never accepts a changed key:
    "stricthostkeychecking", "checkhostip", "updatehostkeys", "passwordauthentication",
    "kbdinteractiveauthentication", "challengeresponseauthentication", "batchmode",
    "loglevel", "hashknownhosts", "visualhostkey", "addkeystoagent", "forwardx11",
    "requesttty", "controlmaster", "controlpath", "controlpersist",
}  # fmt: skip
_SPLIT = re.compile(r"\s*=\s*|\s+")
_TOKEN = re.compile(r"%(.)")


@dataclass(frozen=True)
class Block:
    patterns: tuple[str, ...]
    settings: tuple[tuple[str, tuple[str, ...]], ...]
    fast: bool

    def matches(self, host: str) -> bool:
        hit = False
        for pat in self.patterns:
            negated = pat.startswith("!")
            if fnmatch.fnmatchcase(host, pat[1:] if negated else pat):
                if negated:
                    return False
                hit = True
        return hit


@dataclass(frozen=True)
class ParsedConfig:
    """A file's blocks, with those whose patterns are all literal indexed by name.

    A lab's or a fleet's config has one ``Host`` block per node: scanning them all
    for every node would be O(N²) (160 ms for 250 nodes); the index makes it O(N).
    """

    blocks: tuple[Block, ...]
    literal: dict[str, tuple[int, ...]]
    wildcard: tuple[int, ...]

    def candidates(self, host: str) -> list[Block]:
        """Blocks that may match ``host``, in file order."""
        order = sorted({*self.literal.get(host, ()), *self.wildcard})
        return [self.blocks[i] for i in order]


def _index(blocks: tuple[Block, ...]) -> ParsedConfig:
    literal: dict[str, list[int]] = {}
    wildcard: list[int] = []
    for i, block in enumerate(blocks):
        if any(ch in pat for pat in block.patterns for ch in "*?!"):
            wildcard.append(i)
        else:
            for pat in block.patterns:
                literal.setdefault(pat, []).append(i)
    return ParsedConfig(blocks, {k: tuple(v) for k, v in literal.items()}, tuple(wildcard))


@lru_cache(maxsize=64)
def _parse_cached(path: str, mtime_ns: int, size: int) -> ParsedConfig:
    blocks: list[Block] = []
    patterns: tuple[str, ...] = ("*",)
    settings: list[tuple[str, tuple[str, ...]]] = []
    fast = True
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = _SPLIT.split(line, maxsplit=1)
            key = parts[0].lower()
            rest = parts[1] if len(parts) > 1 else ""
            values = tuple(shlex.split(rest) if '"' in rest else rest.split())
            if key == "host":
                blocks.append(Block(patterns, tuple(settings), fast))
                patterns, settings, fast = values, [], True
                continue
            if key not in FAST:
                fast = False
            settings.append((key, values))
    blocks.append(Block(patterns, tuple(settings), fast))
    return _index(tuple(blocks))


def parse(path: str) -> ParsedConfig | None:
    """The Host blocks of a config file, cached until the file changes; None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _parse_cached(path, st.st_mtime_ns, st.st_size)


@dataclass
class Resolved:
    """A node's effective SSH settings, as OpenSSH would compute them."""

    hostname: str
    port: int
    user: str
    identity_files: list[str] = field(default_factory=list)
    identities_only: bool = False
    identity_agent: str | None = None
    known_hosts: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # algs and keepalives


def _expand(value: str, host: str, user: str, remote_user: str) -> str | None:
    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        table = {"%": "%", "h": host, "u": user, "r": remote_user, "d": str(Path.home())}
        if c not in table:
            raise KeyError(c)
        return table[c]

    try:
        value = _TOKEN.sub(sub, value)
    except KeyError:
        return None
    return os.path.expanduser(value)


@lru_cache(maxsize=1)
def _local_user() -> str:
    """The local user name, looked up once (a passwd lookup per node cost ~0.5 ms)."""
    return getpass.getuser()


def resolve(
    files: list[str], name: str, user: str | None = None, port: int | None = None
) -> Resolved | None:
    """Settings for host ``name`` from ``files`` in order; None when a file needs asyncssh."""
    found: dict[str, tuple[str, ...]] = {}
    identity: list[str] = []
    for path in files:
        parsed = parse(path)
        if parsed is None:
            continue
        for block in parsed.candidates(name):
            if not block.matches(name):
                continue
            if not block.fast:
                return None
            for key, values in block.settings:
                if not values:
                    continue
                if key == "identityfile":
                    identity.append(values[0])
                elif key not in found:
                    found[key] = values
    local_user = _local_user()
    remote_user = user or (found.get("user", (local_user,))[0])
    host = found.get("hostname", (name,))[0]
    expanded_host = _expand(host, name, local_user, remote_user)
    if expanded_host is None:
        return None
    res = Resolved(
        hostname=expanded_host,
        port=port or int(found.get("port", ("22",))[0]),
        user=remote_user,
        identities_only=found.get("identitiesonly", ("no",))[0].lower() == "yes",
    )
    for raw in identity:
        ident = _expand(raw, expanded_host, local_user, remote_user)
        if ident is None:
            return None
        res.identity_files.append(ident)
    if res.identity_files and not res.identities_only:
        return None  # agent keys *and* files: leave that mix to asyncssh
    agent = found.get("identityagent", (None,))[0]
    if agent is not None:
        res.identity_agent = (
            None
            if agent.lower() == "none"
            else _expand(agent, expanded_host, local_user, remote_user)
        )
        if agent.lower() not in ("none", "ssh_auth_sock") and res.identity_agent is None:
            return None
    for key in ("userknownhostsfile", "globalknownhostsfile"):
        for raw in found.get(key, ()):
            known = _expand(raw, expanded_host, local_user, remote_user)
            if known is None:
                return None
            if known != "/dev/null":
                res.known_hosts.append(known)
    if "userknownhostsfile" not in found:
        res.known_hosts.insert(0, str(Path.home() / ".ssh" / "known_hosts"))
    jump = found.get("proxyjump", (None,))[0]
    res.proxy_jump = None if jump is None or jump.lower() == "none" else jump
    for key in ("kexalgorithms", "hostkeyalgorithms", "ciphers", "macs",
                "serveraliveinterval", "serveralivecountmax"):  # fmt: skip
        if key in found:
            res.options[key] = found[key][0]
    return res
