"""ClusterShell group sources, read as clush reads them: ``@group`` and ``@source:group``.

A clush user's groups live outside any inventory, in ``groups.conf``: this module
finds the same files ClusterShell 1.9 does and answers "which nodes are in
``@source:group``" from them, so the groups a site already keeps work in Shoal's
selections without importing anything.

Files, in ClusterShell's order (a later file's settings win): ``/etc/clustershell/
groups.conf``, ``$XDG_CONFIG_HOME/clustershell/groups.conf`` (``~/.config/...``),
``~/.local/etc/clustershell/groups.conf``; with ``$CLUSTERSHELL_CFGDIR`` set, only
``$CLUSTERSHELL_CFGDIR/groups.conf``. Their ``[Main]`` section names the
``default`` source (the one ``@group`` without a source means), ``confdir`` (more
``*.conf`` files of source sections) and ``autodir`` (``*.yaml`` group files); both
default to ``/etc/clustershell/groups.conf.d`` / ``groups.d`` and their ``$CFGDIR``
twins (``$CFGDIR``: the directory of the groups.conf read last).

Two kinds of source:

* **YAML** (``groups.d/*.yaml``): each file maps source names to ``{group:
  node-set}``; a node set may name groups of its source (``@compute,login1``,
  ``@all!@gpu``) or of another (``@roles:adm``). The ``all`` group, when not
  given, is the union of the source's groups.
* **upcalls** (a section of groups.conf or a confdir file): ``map`` (the node set
  of ``$GROUP``), ``all`` and ``list`` (the group names) shell commands, run on
  this machine with ``$GROUP``, ``$SOURCE`` and ``$CFGDIR`` replaced, each within
  :data:`UPCALL_TIMEOUT`; an answer is cached for the life of the
  :class:`GroupSources` (clush's ``cache_time`` is not needed by a one-shot CLI).

Errors are :class:`~shoal.errors.InventoryError` with the file or the upcall in a
one-line message. Nothing here is stored in the inventory.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import InventoryError, NodeSetParseError
from shoal.nodes.nodeset import MAX_NAMES, count, expand

#: Longest one upcall may take, in seconds.
UPCALL_TIMEOUT = 10.0
#: Deepest chain of groups naming groups (``@a`` -> ``@b`` -> ...).
MAX_GROUP_DEPTH = 32
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-+]*$")
_DEFAULT_CONFDIR = "/etc/clustershell/groups.conf.d $CFGDIR/groups.conf.d"
_DEFAULT_AUTODIR = "/etc/clustershell/groups.d $CFGDIR/groups.d"


@dataclass
class Source:
    """One group source: static groups (YAML) or upcall commands."""

    name: str
    where: str  # the file that defines it, for messages
    groups: dict[str, str] | None = None  # YAML: group -> node-set text
    upcalls: dict[str, str] = field(default_factory=dict)  # map/all/list -> command


def config_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The groups.conf files ClusterShell would read, lowest priority first (existing ones)."""
    env = os.environ if env is None else env
    if env.get("CLUSTERSHELL_CFGDIR"):
        candidates = [Path(env["CLUSTERSHELL_CFGDIR"]) / "groups.conf"]
    else:
        home = Path(env.get("HOME") or Path.home())
        xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        candidates = [
            Path("/etc/clustershell/groups.conf"),
            xdg / "clustershell" / "groups.conf",
            home / ".local" / "etc" / "clustershell" / "groups.conf",
        ]
    return [p for p in candidates if p.is_file()]


class GroupSources:
    """The group sources of a set of groups.conf files; :meth:`members` answers ``@x``."""

    def __init__(self, files: list[Path] | None = None) -> None:
        files = config_files() if files is None else files
        parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
        try:
            parser.read(files)
        except configparser.Error as exc:
            raise InventoryError(f"clustershell groups.conf: {_one_line(exc)}") from None
        self.cfgdir = str(files[-1].parent) if files else "/etc/clustershell"
        main = parser["Main"] if parser.has_section("Main") else {}
        self.sources: dict[str, Source] = {}
        where = str(files[-1]) if files else "groups.conf"
        for section in parser.sections():
            if section != "Main":
                self._add_upcalls(section, dict(parser[section]), where)
        for directory in self._dirs(main.get("confdir", _DEFAULT_CONFDIR)):
            for path in sorted(directory.glob("*.conf")):
                self._read_conf(path)
        for directory in self._dirs(main.get("autodir", _DEFAULT_AUTODIR)):
            for path in sorted(directory.glob("*.yaml")):
                self._read_yaml(path)
        default = main.get("default") or next(iter(self.sources), None)
        self.default: str | None = default
        self._cache: dict[tuple[str, str], set[str]] = {}

    # -- reading ------------------------------------------------------------------

    def _dirs(self, value: str) -> list[Path]:
        out = []
        for word in value.split():
            path = Path(word.replace("$CFGDIR", self.cfgdir))
            if path.is_dir() and path not in out:
                out.append(path)
        return out

    def _add_upcalls(self, names: str, body: dict[str, str], where: str) -> None:
        if "map" not in body:
            raise InventoryError(f"{where}: group source [{names}] has no map upcall")
        upcalls = {k: v for k, v in body.items() if k in ("map", "all", "list")}
        for name in names.split(","):  # [a,b] defines sources a and b alike
            name = name.strip()
            self.sources[name] = Source(name, where, upcalls=dict(upcalls))

    def _read_conf(self, path: Path) -> None:
        parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise InventoryError(f"{path}: {_one_line(exc)}") from None
        for section in parser.sections():
            self._add_upcalls(section, dict(parser[section]), str(path))

    def _read_yaml(self, path: Path) -> None:
        import yaml

        from shoal import yamlload

        try:
            data = yamlload.load(path.read_text())
        except OSError as exc:
            raise InventoryError(f"cannot read group file {path}: {exc.strerror}") from None
        except yamlload.LimitError as exc:
            raise InventoryError(f"{path}:{exc.line}: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}: not valid YAML: {_one_line(exc)}") from None
        if data is None:
            return
        if not isinstance(data, dict):
            raise InventoryError(f"{path}: a group file maps source names to groups")
        for source, groups in data.items():
            if not isinstance(groups, dict):
                raise InventoryError(f"{path}: source {source} must map groups to node sets")
            self.sources[str(source)] = Source(
                str(source),
                str(path),
                groups={str(g): _text(v, path, g) for g, v in groups.items()},
            )

    # -- answering ----------------------------------------------------------------

    def split(self, ref: str) -> tuple[str, str]:
        """``(source, group)`` of ``source:group`` or ``group`` (the default source)."""
        source, sep, group = ref.rpartition(":")
        if not sep:
            if self.default is None:
                raise InventoryError(f"@{ref}: no ClusterShell group source is configured")
            source = self.default
        return source, group

    def knows(self, ref: str) -> bool:
        """Whether ``ref`` names a configured source (``@x`` is then this module's)."""
        source, sep, _ = ref.rpartition(":")
        return (source if sep else self.default) in self.sources

    def members(self, ref: str) -> set[str]:
        """The node names of ``@ref``; InventoryError for an unknown source or group."""
        source, group = self.split(ref)
        return self._members(source, group, ())

    def groups(self, source: str | None = None) -> list[str]:
        """The group names of ``source`` (default: the default source)."""
        src = self._source(source or self.default or "")
        if src.groups is not None:
            return sorted(src.groups)
        if "list" not in src.upcalls:
            return []
        return sorted(self._upcall(src, "list", "").split())

    def _source(self, name: str) -> Source:
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise InventoryError(f"unknown ClusterShell group source {name!r} (known: {known})")
        return self.sources[name]

    def _members(self, source: str, group: str, chain: tuple[str, ...]) -> set[str]:
        ref = f"{source}:{group}"
        if ref in chain:
            raise InventoryError("group loop: @" + " -> @".join([*chain, ref]))
        if len(chain) >= MAX_GROUP_DEPTH:
            raise InventoryError(f"@{ref}: groups nested deeper than {MAX_GROUP_DEPTH}")
        if (source, group) in self._cache:
            return set(self._cache[(source, group)])
        src = self._source(source)
        if src.groups is not None:
            if group in src.groups:
                text = src.groups[group]
            elif group == "all":
                text = ",".join(f"@{g}" for g in src.groups) or ""
            else:
                raise InventoryError(f"unknown group @{ref} (in {src.where})")
        elif group == "all" and "all" in src.upcalls:
            text = self._upcall(src, "all", group)
        else:
            text = self._upcall(src, "map", group)
            if not text.strip():
                raise InventoryError(f"unknown group @{ref} (its map upcall printed nothing)")
        names = self._parse(text, source, (*chain, ref))
        self._cache[(source, group)] = names
        return set(names)

    def _parse(self, text: str, source: str, chain: tuple[str, ...]) -> set[str]:
        """A node set naming groups: ``,`` ``!`` ``&`` ``^`` left to right, as clush;
        whitespace (an upcall's lines, a groups file's ``a b c``) separates like ``,``."""
        text = re.sub(r"\s+", ",", re.sub(r"\s*([,!&^])\s*", r"\1", text.strip()))
        if not text:
            return set()
        result: set[str] = set()
        op, depth, start = ",", 0, 0
        for i, ch in enumerate(text + ","):
            depth += (ch == "[") - (ch == "]")
            if depth or ch not in ",!&^":
                continue
            chunk = text[start:i]
            start = i + 1
            if not chunk:
                raise InventoryError(f"@{chain[-1]}: empty element in {text!r}")
            names = self._element(chunk, source, chain)
            if len(result) + len(names) > MAX_NAMES:
                raise InventoryError(f"@{chain[-1]} stands for more than {MAX_NAMES:,} names")
            result = {",": result | names, "!": result - names,
                      "&": result & names, "^": result ^ names}[op]  # fmt: skip
            op = ch
        return result

    def _element(self, chunk: str, source: str, chain: tuple[str, ...]) -> set[str]:
        if chunk.startswith("@"):
            ref = chunk[1:]
            inner_source, sep, group = ref.rpartition(":")
            return self._members(inner_source if sep else source, group, chain)
        try:
            if count(chunk) > MAX_NAMES:
                raise InventoryError(f"@{chain[-1]}: {chunk!r} stands for too many names")
            return set(expand(chunk))
        except NodeSetParseError as exc:
            raise InventoryError(f"@{chain[-1]}: {exc}") from None

    def _upcall(self, src: Source, kind: str, group: str) -> str:
        if group and not _NAME.match(group):
            raise InventoryError(f"invalid group name {group!r} for source {src.name}")
        command = (
            src.upcalls[kind]
            .replace("$CFGDIR", self.cfgdir)
            .replace("$SOURCE", src.name)
            .replace("$GROUP", group)
        )
        what = f"group source {src.name}: {kind} upcall"
        try:  # its own process group, so a timeout ends whatever the command started
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise InventoryError(f"{what} cannot start: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=UPCALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise InventoryError(f"{what} took longer than {UPCALL_TIMEOUT:g}s") from None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): leave nothing behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode != 0:
            detail = _one_line(err) or f"exit status {proc.returncode}"
            raise InventoryError(f"{what} for @{group or '*'} failed: {detail}")
        return out


_loaded: GroupSources | None = None


def configured() -> GroupSources:
    """This process's group sources (the files of :func:`config_files`), read once."""
    global _loaded
    if _loaded is None:
        _loaded = GroupSources()
    return _loaded


def _text(value: Any, path: Path, group: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, (str, int)):
        return str(value)
    raise InventoryError(f"{path}: group {group} must be a node set (text or a list)")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
