"""ssh_config, read once per file instead of once per connection.

asyncssh re-reads and re-tokenises every config file on every connection
(about 20 ms for a 32-host file here, so O(N²) across a fleet). This module
parses each file once into blocks and resolves a node's settings from them
with OpenSSH's rules, so the result can be handed to asyncssh as explicit
options, together with keys and known_hosts that are also loaded once:

* the order ssh reads: the command line (``-o``, ``-i``, ``-l``, ``-p``: see
  :func:`parse_option`), the user's files (a node's own ssh_config, then
  ``~/.ssh/config``), then the system file (``/etc/ssh/ssh_config``, or
  ``$SHOAL_SSH_SYSTEM_DIR/ssh_config``); the first value obtained wins,
  ``IdentityFile`` accumulates;
* ``Host`` patterns with ``*``, ``?`` and ``!`` (case-sensitive, as ssh);
  ``Match`` with ``all``, ``host``, ``originalhost``, ``user``, ``localuser``
  (each may be negated with ``!``; ``host`` and ``user`` see the HostName and
  User obtained so far, as ssh's do);
* ``Include`` with globs (sorted), relative to ``~/.ssh`` in a user file and to
  the system directory in the system file; inside a ``Host``/``Match`` block it
  includes conditionally, and a ``Match`` inside the included file does not
  change the including block's state afterwards (OpenSSH's readconf.c);
* ``UserKnownHostsFile`` (default ``~/.ssh/known_hosts``, ``known_hosts2``)
  and ``GlobalKnownHostsFile`` (default ``ssh_known_hosts``,
  ``ssh_known_hosts2`` of the system directory) both verify host keys;
* keywords that do not change how Shoal connects (``SendEnv``,
  ``HashKnownHosts``, ``GSSAPI*``, forwarding, ...) are known and ignored.

A block that uses anything else (``Match exec``/``canonical``/``final``,
``ProxyCommand``, ``HostKeyAlias``, unknown ``%`` tokens, ...) makes
:func:`resolve` return None for the hosts it concerns, and the transport then
hands the files to asyncssh unchanged: slower, never different. The agreement
with OpenSSH is tested against ``ssh -G`` (tests/unit/test_ssh_g_agreement.py).
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shoal.errors import UsageError

#: The system directory OpenSSH reads (ssh_config, ssh_known_hosts).
ETC_SSH = "/etc/ssh"
#: Environment variable that points Shoal at another system directory (tests, odd sites).
SYSTEM_DIR_ENV = "SHOAL_SSH_SYSTEM_DIR"

#: Keywords resolved here and used to connect.
RESOLVED = {
    "hostname", "user", "port", "identityfile", "identitiesonly", "identityagent",
    "userknownhostsfile", "globalknownhostsfile", "proxyjump", "connecttimeout",
    "kexalgorithms", "hostkeyalgorithms", "ciphers", "macs", "serveraliveinterval",
    "serveralivecountmax", "stricthostkeychecking",
}  # fmt: skip
#: Keywords known to make no difference to how Shoal connects: a non-interactive
#: client that never forwards anything, never sends its environment and never
#: accepts a changed host key.
NO_EFFECT = {
    "pubkeyacceptedalgorithms", "pubkeyacceptedkeytypes", "checkhostip", "updatehostkeys",
    "passwordauthentication", "kbdinteractiveauthentication",
    "challengeresponseauthentication", "batchmode", "loglevel", "hashknownhosts",
    "visualhostkey", "addkeystoagent", "forwardx11", "forwardx11trusted", "forwardagent",
    "requesttty", "controlmaster", "controlpath", "controlpersist", "sendenv", "setenv",
    "gssapiauthentication", "gssapidelegatecredentials", "gssapikeyexchange",
    "gssapitrustdns", "gssapirenewalforcesrekey", "gssapiserveridentity",
    "gssapiclientidentity", "escapechar", "tunnel", "tunneldevice", "permitlocalcommand",
    "localcommand", "rekeylimit", "tcpkeepalive", "compression", "forwardx11timeout",
    "xauthlocation", "exitonforwardfailure", "clearallforwardings", "localforward",
    "remoteforward", "dynamicforward", "gatewayports", "streamlocalbindmask",
    "streamlocalbindunlink", "hostbasedauthentication", "enablesshkeysign",
    "numberofpasswordprompts", "usekeychain", "ignoreunknown", "fingerprinthash",
    "verifyhostkeydns", "identityfile2",
}  # fmt: skip
#: Every keyword of the fast path.
FAST = RESOLVED | NO_EFFECT | {"host", "match", "include"}
#: ``Match`` criteria reproduced here (others: asyncssh).
MATCH_CRITERIA = {"all", "host", "originalhost", "user", "localuser"}
#: ``-o`` keywords Shoal honours, as ssh's command line does.
COMMAND_LINE = (RESOLVED | NO_EFFECT) - {"identityfile2"}
#: The most deeply nested Include OpenSSH follows.
MAX_INCLUDE_DEPTH = 16
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")

_SPLIT = re.compile(r"\s*=\s*|\s+")
_TOKEN = re.compile(r"%(.)")


def system_dir() -> str:
    """The system ssh directory: ``$SHOAL_SSH_SYSTEM_DIR`` or ``/etc/ssh``."""
    return os.environ.get(SYSTEM_DIR_ENV) or ETC_SSH


def _words(rest: str) -> tuple[str, ...]:
    if '"' not in rest:
        return tuple(rest.split())
    try:
        return tuple(shlex.split(rest, comments=False))
    except ValueError:
        return tuple(rest.split())


def parse_option(text: str) -> tuple[str, tuple[str, ...]]:
    """One ``-o 'Keyword value'`` (or ``Keyword=value``) as ``(keyword, values)``.

    Raises UsageError, in one line, for a keyword Shoal does not honour and for
    ``StrictHostKeyChecking no`` (Shoal never accepts a changed host key).
    """
    parts = _SPLIT.split(text.strip(), maxsplit=1)
    key = parts[0].lower()
    values = _words(parts[1]) if len(parts) > 1 else ()
    if not key or not values:
        raise UsageError(f"-o {text!r}: expected 'Keyword value'")
    if key not in COMMAND_LINE:
        raise UsageError(
            f"-o {text!r}: Shoal cannot honour {parts[0]} (it honours User, Port, HostName, "
            "IdentityFile, IdentitiesOnly, IdentityAgent, ProxyJump, StrictHostKeyChecking, "
            "UserKnownHostsFile, GlobalKnownHostsFile, ConnectTimeout, ServerAlive*, the "
            "algorithm lists, and options without effect here such as SendEnv or BatchMode)"
        )
    if key == "stricthostkeychecking" and values[0].lower() not in ("yes", "ask", "accept-new"):
        raise UsageError(
            f"-o {text!r}: Shoal never accepts unknown or changed host keys silently; "
            "use StrictHostKeyChecking accept-new (trust first-seen keys) or yes"
        )
    numeric = ("port", "connecttimeout", "serveraliveinterval", "serveralivecountmax")
    if key in numeric and not values[0].isdigit():
        raise UsageError(f"-o {text!r}: {parts[0]} takes a whole number")
    return key, values


# --- parsing ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A run of settings under one condition.

    ``kind`` is ``host`` (``patterns``), ``match`` (``criteria``: negated,
    criterion, comma-separated patterns) or ``same``: the settings after an
    ``Include`` (or at the top of an included file) share the activity of block
    ``guard`` (always active when None). A ``host``/``match`` block inside an
    included file can only be active if its ``guard`` is.
    """

    kind: str
    patterns: tuple[str, ...] = ()
    criteria: tuple[tuple[bool, str, str], ...] = ()
    guard: int | None = None
    settings: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: every keyword of its settings is reproduced here
    fast: bool = True
    #: every Match criterion is reproduced here
    decidable: bool = True

    def host_matches(self, host: str) -> bool:
        hit = False
        for pat in self.patterns:
            negated = pat.startswith("!")
            if _glob(pat[1:] if negated else pat).fullmatch(host):
                if negated:
                    return False
                hit = True
        return hit


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's wildcards: ``*`` and ``?`` only (no ``[...]`` classes)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)  # fmt: skip


def match_list(text: str, patterns: str, *, fold: bool = False) -> bool:
    """OpenSSH's match_pattern_list: a negated hit refuses, else any hit accepts."""
    if fold:
        text, patterns = text.lower(), patterns.lower()
    hit = False
    for pat in patterns.split(","):
        negated = pat.startswith("!")
        if _glob(pat[1:] if negated else pat).fullmatch(text):
            if negated:
                return False
            hit = True
    return hit


@dataclass(frozen=True)
class ParsedConfig:
    """A file's blocks (its Includes flattened in), literal Host blocks indexed by name.

    A lab's or a fleet's config has one ``Host`` block per node: scanning them all
    for every node would be O(N²) (160 ms for 250 nodes); the index makes it O(N).
    ``depends`` are the files and glob patterns read, to notice a change.
    """

    blocks: tuple[Block, ...]
    literal: dict[str, tuple[int, ...]]
    wildcard: tuple[int, ...]
    depends: tuple[tuple[str, tuple[str, ...]], ...] = ()
    stamps: tuple[tuple[str, int, int], ...] = ()

    def candidates(self, host: str) -> list[int]:
        """Indices of the blocks that may be active for ``host``, in file order."""
        return sorted({*self.literal.get(host, ()), *self.wildcard})


def _index(blocks: list[Block]) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    keys: list[frozenset[str] | None] = []
    for block in blocks:
        own: frozenset[str] | None = None
        if block.kind == "host" and not any(c in p for p in block.patterns for c in "*?!"):
            own = frozenset(block.patterns)
        gated = None if block.guard is None else keys[block.guard]
        keys.append(own if own is not None else gated)
    literal: dict[str, list[int]] = {}
    wildcard: list[int] = []
    for i, names in enumerate(keys):
        if names is None:
            wildcard.append(i)
        else:
            for name in names:
                literal.setdefault(name, []).append(i)
    return {k: tuple(v) for k, v in literal.items()}, tuple(wildcard)


class _Reader:
    """Flattens one top file and its Includes into blocks."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.blocks: list[Block] = []
        self.depends: list[tuple[str, tuple[str, ...]]] = []
        self.stamps: list[tuple[str, int, int]] = []

    def read(self, path: str, guard: int | None, depth: int) -> None:
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return  # a missing or unreadable file is skipped, as ssh does
        self.stamps.append((path, st.st_mtime_ns, st.st_size))
        kind, block_guard = "same", guard
        patterns: tuple[str, ...] = ()
        criteria: tuple[tuple[bool, str, str], ...] = ()
        settings: list[tuple[str, tuple[str, ...]]] = []
        fast = decidable = True

        def close() -> int:
            self.blocks.append(
                Block(kind, patterns, criteria, block_guard, tuple(settings), fast, decidable)
            )
            return len(self.blocks) - 1

        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = _SPLIT.split(line, maxsplit=1)
            key = parts[0].lower()
            values = _words(parts[1]) if len(parts) > 1 else ()
            if key in ("host", "match"):
                close()
                settings, fast, decidable, block_guard = [], True, True, guard
                if key == "host":
                    kind, patterns, criteria = "host", values, ()
                else:
                    kind, patterns = "match", ()
                    criteria, decidable = _criteria(values)
            elif key == "include":
                this = close()
                active_ref = this if kind != "same" else block_guard
                for path_ in self._expand_include(values):
                    if depth >= MAX_INCLUDE_DEPTH:
                        fast = False
                        break
                    self.read(path_, active_ref, depth + 1)
                kind, patterns, criteria, block_guard = "same", (), (), active_ref
                settings, decidable = [], True
            else:
                if key not in FAST:
                    fast = False
                settings.append((key, values))
        close()

    def _expand_include(self, values: tuple[str, ...]) -> list[str]:
        found: list[str] = []
        for value in values:
            pattern = os.path.expanduser(value)
            if not os.path.isabs(pattern):
                pattern = os.path.join(self.base, pattern)
            matches = tuple(sorted(glob.glob(pattern)))
            self.depends.append((pattern, matches))
            found.extend(matches)
        return found


def _criteria(values: tuple[str, ...]) -> tuple[tuple[tuple[bool, str, str], ...], bool]:
    out: list[tuple[bool, str, str]] = []
    words = list(values)
    fast = bool(words)
    while words:
        word = words.pop(0).lower()
        negated = word.startswith("!")
        word = word.lstrip("!")
        if word == "all":
            out.append((negated, "all", ""))
            continue
        if word not in MATCH_CRITERIA or not words:
            return tuple(out), False
        out.append((negated, word, words.pop(0)))
    return tuple(out), fast


@lru_cache(maxsize=64)
def _parse_cached(path: str, base: str, mtime_ns: int, size: int) -> ParsedConfig:
    reader = _Reader(base)
    reader.read(path, None, 0)
    literal, wildcard = _index(reader.blocks)
    return ParsedConfig(
        tuple(reader.blocks), literal, wildcard, tuple(reader.depends), tuple(reader.stamps)
    )


def _current(parsed: ParsedConfig) -> bool:
    """Whether no file and no Include glob of ``parsed`` changed since it was read."""
    for path, mtime, size in parsed.stamps[1:]:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_mtime_ns, st.st_size) != (mtime, size):
            return False
    return all(tuple(sorted(glob.glob(p))) == seen for p, seen in parsed.depends)


def parse(path: str, base: str | None = None) -> ParsedConfig | None:
    """The blocks of a config file, cached until it or an included file changes.

    ``base`` is where relative Includes are looked for (default ``~/.ssh``);
    None if the file is unreadable.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    base = base if base is not None else str(Path.home() / ".ssh")
    parsed = _parse_cached(path, base, st.st_mtime_ns, st.st_size)
    if (parsed.stamps[1:] or parsed.depends) and not _current(parsed):
        _parse_cached.cache_clear()
        parsed = _parse_cached(path, base, st.st_mtime_ns, st.st_size)
    return parsed


# --- resolution -----------------------------------------------------------------


@dataclass
class Resolved:
    """A node's effective SSH settings, as OpenSSH would compute them."""

    hostname: str
    port: int
    user: str
    identity_files: list[str] = field(default_factory=list)
    identities_only: bool = False
    #: None: no agent (IdentityAgent none); "" the default ($SSH_AUTH_SOCK); else a path
    identity_agent: str | None = ""
    #: UserKnownHostsFile (accept-new records into the first)
    known_hosts: list[str] = field(default_factory=list)
    #: GlobalKnownHostsFile (read, never written)
    global_known_hosts: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    connect_timeout: float | None = None
    strict_host_key_checking: str | None = None
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


class _State:
    """Values obtained so far while reading, in ssh's order (first one wins)."""

    def __init__(self, name: str, user: str | None, port: int | None) -> None:
        self.name = name
        self.found: dict[str, tuple[str, ...]] = {}
        self.identity: list[str] = []
        if user:
            self.found["user"] = (user,)
        if port:
            self.found["port"] = (str(port),)

    def take(self, settings: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        for key, values in settings:
            if not values:
                continue
            if key == "identityfile":
                self.identity.append(values[0])
            elif key not in self.found:
                self.found[key] = values

    def matches(self, block: Block) -> bool:
        for negated, what, patterns in block.criteria:
            if what == "all":
                hit = True
            elif what == "host":
                host = self.found.get("hostname", (self.name,))[0].replace("%h", self.name)
                hit = match_list(host, patterns, fold=True)
            elif what == "originalhost":
                hit = match_list(self.name, patterns, fold=True)
            elif what == "user":
                hit = match_list(self.found.get("user", (_local_user(),))[0], patterns)
            else:  # localuser
                hit = match_list(_local_user(), patterns)
            if hit == negated:
                return False
        return True


def _walk(state: _State, parsed: ParsedConfig) -> bool:
    """Apply a file's active blocks to ``state``; False if one needs asyncssh."""
    active: dict[int, bool] = {}
    for i in parsed.candidates(state.name):
        block = parsed.blocks[i]
        gate = True if block.guard is None else active.get(block.guard, False)
        if block.kind == "same":
            on = gate
        elif not gate:
            on = False
        elif block.kind == "host":
            on = block.host_matches(state.name)
        else:
            if not block.decidable:
                return False  # an unsupported Match criterion: its result is unknown
            on = state.matches(block)
        active[i] = on
        if on:
            if not block.fast:
                return False
            state.take(block.settings)
    return True


def resolve(
    files: list[str],
    name: str,
    user: str | None = None,
    port: int | None = None,
    *,
    options: Sequence[tuple[str, tuple[str, ...]]] = (),
    system: str | None = None,
) -> Resolved | None:
    """Settings for host ``name``; None when a file needs asyncssh.

    Read in ssh's order: ``user``/``port`` (an inventory's or ``user@host:port``)
    and ``options`` (``-o``/``-i``, from :func:`parse_option`) as ssh's command
    line, the user ``files`` in order (relative Includes from ``~/.ssh``), then
    ``ssh_config`` of the ``system`` directory when one is given (its relative
    Includes from there; ``GlobalKnownHostsFile`` defaults to its
    ``ssh_known_hosts``).
    """
    state = _State(name, user, port)
    state.take(options)
    sources: list[tuple[str, str | None]] = [(path, None) for path in files]
    if system is not None:
        sources.append((os.path.join(system, "ssh_config"), system))
    for path, base in sources:
        parsed = parse(path, base)
        if parsed is not None and not _walk(state, parsed):
            return None
    return _finish(state, system or ETC_SSH)


def _finish(state: _State, system: str) -> Resolved | None:
    found = state.found
    local_user = _local_user()
    remote_user = found.get("user", (local_user,))[0]
    expanded_host = _expand(found.get("hostname", (state.name,))[0], state.name, local_user,
                            remote_user)  # fmt: skip
    if expanded_host is None:
        return None

    def expand(raw: str) -> str | None:
        return _expand(raw, expanded_host, local_user, remote_user)

    res = Resolved(
        hostname=expanded_host,
        port=int(found.get("port", ("22",))[0]),
        user=remote_user,
        identities_only=found.get("identitiesonly", ("no",))[0].lower() == "yes",
    )
    for raw in state.identity:
        ident = expand(raw)
        if ident is None:
            return None
        if ident not in res.identity_files:
            res.identity_files.append(ident)
    agent = found.get("identityagent", ("SSH_AUTH_SOCK",))[0]
    if agent.lower() == "none":
        res.identity_agent = None
    elif agent != "SSH_AUTH_SOCK":
        if agent.startswith("$"):
            return None  # an environment variable naming the socket: asyncssh
        res.identity_agent = expand(agent)
        if res.identity_agent is None:
            return None
    for key, target, default in (
        ("userknownhostsfile", res.known_hosts, DEFAULT_USER_KNOWN_HOSTS),
        ("globalknownhostsfile", res.global_known_hosts,
         (f"{system}/ssh_known_hosts", f"{system}/ssh_known_hosts2")),
    ):  # fmt: skip
        for raw in found.get(key, default):
            known = expand(raw)
            if known is None:
                return None
            if known != "/dev/null":
                target.append(known)
    jump = found.get("proxyjump", (None,))[0]
    res.proxy_jump = None if jump is None or jump.lower() == "none" else jump
    timeout = found.get("connecttimeout", ("none",))[0]
    res.connect_timeout = float(timeout) if timeout.isdigit() and int(timeout) > 0 else None
    strict = found.get("stricthostkeychecking")
    res.strict_host_key_checking = strict[0].lower() if strict else None
    for key in ("kexalgorithms", "hostkeyalgorithms", "ciphers", "macs",
                "serveraliveinterval", "serveralivecountmax"):  # fmt: skip
        if key in found:
            res.options[key] = found[key][0]
    return res
