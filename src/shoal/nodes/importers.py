"""Readers that turn inventory files into :class:`Node` records (pure parsing).

Formats:

* **plain list** (CoDeploy's node list, ``MQ_NODES``): one node per line,
  ``[user@]host[:port] [name=NAME] [groups=G1,G2] [KEY=VALUE ...]``; ``#``
  starts a comment, blank lines are skipped; ``host`` may be a node-set pattern
  (``n[01-16]``) or a bracketed IPv6 address (``[::1]:2222``, which then needs
  ``name=``). The node's name is the host unless ``name=`` is given.
* **Ansible INI**: ``[group]`` host lines with ``key=value`` host vars,
  ``[group:vars]``, ``[group:children]``, ``host:port``, and ranges
  ``www[01:50]`` / ``db-[a:f]`` / ``n[1:9:2]``.
* **Ansible YAML**: nested ``hosts`` / ``vars`` / ``children`` under ``all``
  (or any top-level groups), with the same ranges in host names.

Ansible's connection variables become the record fields: ``ansible_host``
(``ansible_ssh_host``) -> host, ``ansible_user`` (``ansible_ssh_user``) -> user,
``ansible_port`` (``ansible_ssh_port``) -> port; every other variable is an
attribute. Variables merge as Ansible does: ``all`` < parent group < child
group < host. A host belongs to its groups and to all their ancestors, so
``@parent`` includes the hosts of its children. Values that read as integers,
floats or booleans are stored typed.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from shoal.errors import InventoryError, NodeSetParseError
from shoal.nodes.model import AttrValue, Node
from shoal.nodes.nodeset import MAX_NAMES, expand

HOST_KEYS = ("ansible_host", "ansible_ssh_host")
USER_KEYS = ("ansible_user", "ansible_ssh_user")
PORT_KEYS = ("ansible_port", "ansible_ssh_port")
#: The deepest chain of groups (``children`` of ``children``...) an inventory may have.
MAX_GROUP_DEPTH = 100
_ANSIBLE_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")


@dataclass
class Inventory:
    """What a file describes: nodes, plus group variables (kept for display)."""

    nodes: list[Node]
    group_vars: dict[str, dict[str, AttrValue]] = field(default_factory=dict)


def typed(value: Any) -> AttrValue:
    """A YAML/INI value as an attribute: numbers and booleans typed, others text."""
    if isinstance(value, (bool, int, float)):
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        return json.dumps(value, sort_keys=True, default=str)
    text = value
    if text.lower() in ("true", "yes"):
        return True
    if text.lower() in ("false", "no"):
        return False
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*(?:[eE][-+]?\d+)?", text):
        return float(text)
    return text


# --- plain lists ----------------------------------------------------------


def _split_address(spec: str, where: str) -> tuple[str | None, str, int | None]:
    user: str | None = None
    if "@" in spec:
        user, _, spec = spec.rpartition("@")
        if not user:
            raise InventoryError(f"{where}: empty user in {spec!r}")
    port: int | None = None
    if spec.startswith("[") and "]" in spec and not re.match(r"^\[[\d,\-/]+\]", spec):
        host, _, rest = spec[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise InventoryError(f"{where}: bad port in {spec!r}")
            port = int(rest[1:])
        return user, host, port
    m = re.match(r"^(.*?):(\d+)$", spec)
    if m:
        spec, port = m.group(1), int(m.group(2))
    if port is not None and not 0 < port < 65536:
        raise InventoryError(f"{where}: port {port} out of range")
    return user, spec, port


def parse_plain(text: str, source: str = "<list>") -> list[Node]:
    """Nodes of a plain node list (see the module docstring for the format)."""
    nodes: list[Node] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc}") from None
        user, host, port = _split_address(words[0], where)
        name: str | None = None
        groups: tuple[str, ...] = ()
        attrs: dict[str, AttrValue] = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise InventoryError(f"{where}: expected KEY=VALUE, got {word!r}")
            if key == "name":
                name = value
            elif key in ("groups", "group"):
                groups = tuple(g for g in value.split(",") if g)
            else:
                attrs[key] = typed(value)
        if ":" in host:  # IPv6 literal
            if not name:
                raise InventoryError(f"{where}: an IPv6 address needs name=NAME")
            hosts = [host]
        else:
            try:
                hosts = expand(host)
            except NodeSetParseError as exc:
                raise InventoryError(f"{where}: {exc}") from None
        if len(nodes) + len(hosts) > MAX_NAMES:
            raise InventoryError(f"{where}: the list names more than {MAX_NAMES:,} nodes")
        for h in hosts:
            node_name = name if name and len(hosts) == 1 else h
            nodes.append(
                Node(
                    name=node_name,
                    host=None if h == node_name else h,
                    user=user,
                    port=port,
                    groups=groups,
                    attrs=dict(attrs),
                )
            )
    _no_duplicates(nodes, source)
    return nodes


def _no_duplicates(nodes: list[Node], source: str) -> None:
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise InventoryError(f"{source}: node {n.name!r} appears twice (give name=NAME)")
        seen.add(n.name)


def read_plain_file(path: str | Path) -> list[Node]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read node list {path}: {exc.strerror}") from None
    return parse_plain(text, str(path))


# --- Ansible shared ---------------------------------------------------------


def expand_ansible(pattern: str) -> list[str]:
    """Host names of an Ansible host pattern: ``www[01:50].x``, ``db-[a:f]``, ``[1:9:2]``.

    Refused before expanding when it stands for more than MAX_NAMES hosts.
    """
    columns: list[list[str]] = []  # the literal texts and ranges, in order
    pos = 0
    total = 1
    for m in _ANSIBLE_RANGE.finditer(pattern):
        start, stop, step_text = m.group(1), m.group(2), m.group(3)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise InventoryError(f"bad host range step {step} in {pattern!r}")
        numbers = start.isdigit() and stop.isdigit()
        if numbers:
            values: range | str = range(int(start), int(stop) + 1, step)
        elif len(start) == 1 and len(stop) == 1 and start.isalpha() and stop.isalpha():
            letters = string.ascii_letters
            values = letters[letters.index(start) : letters.index(stop) + 1 : step]
        else:
            raise InventoryError(f"bad host range [{start}:{stop}] in {pattern!r}")
        if not values:
            raise InventoryError(f"empty host range in {pattern!r}")
        total *= len(values)
        if total > MAX_NAMES:
            raise InventoryError(f"{pattern!r} stands for more than {MAX_NAMES:,} hosts")
        width = len(start) if numbers and start.startswith("0") and len(start) > 1 else 0
        columns.append([pattern[pos : m.start()]])
        if isinstance(values, range):
            columns.append([f"{i:0{width}d}" for i in values])
        else:
            columns.append(list(values))
        pos = m.end()
    columns.append([pattern[pos:]])
    return ["".join(combo) for combo in product(*columns)]


class _Groups:
    """Group graph of an Ansible inventory, then flattened into nodes."""

    def __init__(self) -> None:
        self.hosts: dict[str, list[str]] = {}  # group -> direct hosts
        self.children: dict[str, list[str]] = {}
        self.vars: dict[str, dict[str, AttrValue]] = {}
        self.host_vars: dict[str, dict[str, AttrValue]] = {}
        self.order: list[str] = []  # hosts in order of first appearance

    def group(self, name: str) -> None:
        self.hosts.setdefault(name, [])
        self.children.setdefault(name, [])
        self.vars.setdefault(name, {})

    def add_host(self, group: str, host: str, hvars: Mapping[str, AttrValue]) -> None:
        self.group(group)
        if host not in self.host_vars:
            if len(self.order) >= MAX_NAMES:
                raise InventoryError(f"the inventory names more than {MAX_NAMES:,} hosts")
            self.host_vars[host] = {}
            self.order.append(host)
        self.host_vars[host].update(hvars)
        if host not in self.hosts[group]:
            self.hosts[group].append(host)

    def parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {g: set() for g in self.hosts}
        for g, kids in self.children.items():
            for k in kids:
                parents.setdefault(k, set()).add(g)
        return parents

    def ancestors(self, source: str) -> dict[str, list[str]]:
        """Every group's ancestors, farthest first, each once; computed depth first over
        an explicit stack, refusing loops and nesting deeper than MAX_GROUP_DEPTH."""
        parents = self.parents()
        done: dict[str, list[str]] = {}
        for top in sorted(parents):
            path = [top]
            todo = [iter(sorted(parents[top]))]
            while todo:
                p = next(todo[-1], None)
                if p is None:
                    g = path.pop()
                    todo.pop()
                    out: dict[str, None] = {}
                    for q in sorted(parents.get(g, ())):
                        out.update(dict.fromkeys(done[q]))
                        out[q] = None
                    done[g] = list(out)
                elif p in path:
                    raise InventoryError(f"{source}: group {p!r} is its own ancestor")
                elif p not in done:
                    if len(path) >= MAX_GROUP_DEPTH:
                        raise InventoryError(
                            f"{source}: group {top!r} is nested deeper than {MAX_GROUP_DEPTH}"
                        )
                    path.append(p)
                    todo.append(iter(sorted(parents.get(p, ()))))
        return done

    def nodes(self, source: str) -> Inventory:
        known = self.ancestors(source)

        def ancestors(g: str) -> list[str]:
            return known.get(g, [])

        host_groups: dict[str, list[str]] = {h: [] for h in self.order}
        for g, hosts in self.hosts.items():
            for h in hosts:
                host_groups[h].append(g)
        nodes: list[Node] = []
        for h in self.order:
            chain: list[str] = []  # lowest precedence first
            for g in host_groups[h]:
                for a in [*ancestors(g), g]:
                    if a not in chain:
                        chain.append(a)
            merged: dict[str, AttrValue] = dict(self.vars.get("all", {}))
            depth = {g: len(ancestors(g)) for g in chain}
            for g in sorted(chain, key=lambda g: (depth[g], g)):
                merged.update(self.vars.get(g, {}))
            merged.update(self.host_vars[h])
            nodes.append(_ansible_node(h, merged, chain, source))
        gvars = {g: v for g, v in self.vars.items() if v and g not in ("all", "ungrouped")}
        return Inventory(nodes, gvars)


def _ansible_node(host: str, hvars: dict[str, AttrValue], groups: list[str], src: str) -> Node:
    address: str | None = None
    user: str | None = None
    port: int | None = None
    attrs: dict[str, AttrValue] = {}
    name = host
    m = re.match(r"^(.*?):(\d+)$", host)
    if m and ":" not in m.group(1):
        name, port = m.group(1), int(m.group(2))
    for key, value in hvars.items():
        if key in HOST_KEYS:
            address = str(value)
        elif key in USER_KEYS:
            user = str(value)
        elif key in PORT_KEYS:
            try:
                port = int(str(value))
            except ValueError:
                raise InventoryError(f"{src}: host {host}: {key} is not a port") from None
        else:
            attrs[key] = value
    kept = tuple(sorted(g for g in groups if g not in ("all", "ungrouped")))
    return Node(name=name, host=address, user=user, port=port, groups=kept, attrs=attrs)


# --- Ansible INI ---------------------------------------------------------------


def parse_ansible_ini(text: str, source: str = "<ini>") -> Inventory:
    g = _Groups()
    section = "ungrouped"
    kind = "hosts"
    g.group("all")
    g.group("ungrouped")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{source}:{lineno}"
        if line.startswith("[") and line.endswith("]"):
            header = line[1:-1].strip()
            section, _, kind = header.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InventoryError(f"{where}: unknown section kind {kind!r}")
            g.group(section)
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc}") from None
        if not words:
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise InventoryError(f"{where}: expected KEY=VALUE in [{section}:vars]")
            g.vars[section][key.strip()] = typed(_strip_quotes(value.strip()))
        elif kind == "children":
            g.group(words[0])
            g.children[section].append(words[0])
        else:
            hvars: dict[str, AttrValue] = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise InventoryError(f"{where}: expected KEY=VALUE, got {word!r}")
                hvars[key] = typed(value)
            for host in expand_ansible(words[0]):
                g.add_host(section, host, hvars)
    return g.nodes(source)


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


# --- Ansible YAML --------------------------------------------------------------


def parse_ansible_yaml(text: str, source: str = "<yaml>") -> Inventory:
    import yaml

    from shoal import yamlload

    try:
        data = yamlload.load(text)
    except yamlload.LimitError as exc:
        raise InventoryError(f"{source}:{exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise InventoryError(f"{source}: an Ansible YAML inventory is a mapping of groups")
    g = _Groups()
    g.group("all")

    def walk(name: str, body: Any, path: str) -> None:
        g.group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise InventoryError(f"{source}: group {path} must be a mapping")
        hosts = body.get("hosts") or {}
        if isinstance(hosts, list):  # tolerated: a list of host names
            hosts = dict.fromkeys(hosts)
        if not isinstance(hosts, dict):
            raise InventoryError(f"{source}: {path}.hosts must be a mapping")
        for pattern, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                raise InventoryError(f"{source}: vars of host {pattern} must be a mapping")
            typed_vars = {str(k): typed(v) for k, v in (hvars or {}).items()}
            for host in expand_ansible(str(pattern)):
                g.add_host(name, host, typed_vars)
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise InventoryError(f"{source}: {path}.vars must be a mapping")
        g.vars[name].update({str(k): typed(v) for k, v in gvars.items()})
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise InventoryError(f"{source}: {path}.children must be a mapping")
        for child, cbody in children.items():
            if str(child) not in g.children[name]:
                g.children[name].append(str(child))
            walk(str(child), cbody, f"{path}.children.{child}")

    for top, body in data.items():
        walk(str(top), body, str(top))
    return g.nodes(source)


# --- dispatch --------------------------------------------------------------------


FORMATS = ("auto", "list", "ini", "yaml")


def detect_format(path: str, text: str) -> str:
    lower = path.lower()
    if lower.endswith((".yml", ".yaml")):
        return "yaml"
    if lower.endswith((".ini", ".cfg")):
        return "ini"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if re.match(r"^\[[A-Za-z0-9_.\-:]+\]$", line) and not re.match(r"^\[[\d,\-/]+\]", line):
            return "ini"
        if line in ("all:", "---") or re.match(r"^[A-Za-z0-9_.\-]+:\s*$", line):
            return "yaml"
        return "list"
    return "list"


def read_inventory(path: str, fmt: str = "auto") -> Inventory:
    """Nodes (and group vars) of an inventory file in any supported format."""
    if fmt not in FORMATS:
        raise InventoryError(f"unknown inventory format {fmt!r} (one of {', '.join(FORMATS)})")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror}") from None
    if fmt == "auto":
        fmt = detect_format(path, text)
    if fmt == "list":
        return Inventory(parse_plain(text, path))
    if fmt == "ini":
        return parse_ansible_ini(text, path)
    return parse_ansible_yaml(text, path)


def with_group(nodes: Iterable[Node], group: str) -> list[Node]:
    """The nodes with ``group`` added to their groups."""
    from dataclasses import replace

    return [replace(n, groups=tuple(sorted({*n.groups, group}))) for n in nodes]
