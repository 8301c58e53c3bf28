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
* **Ansible JSON**: what ``ansible-inventory --list`` (with or without
  ``--export``) and dynamic inventory scripts print: ``_meta.hostvars`` plus
  one object per group with ``hosts`` (a list), ``vars`` and ``children`` (a
  list of group names).

Ansible's connection variables become the record fields: ``ansible_host``
(``ansible_ssh_host``) -> host, ``ansible_user`` (``ansible_ssh_user``) -> user,
``ansible_port`` (``ansible_ssh_port``) -> port, ``ansible_ssh_private_key_file``
(``ansible_private_key_file``) -> identity_file, ``ansible_become`` -> become
(``shoal run`` under ``sudo -n``), ``ansible_python_interpreter`` -> python (the
agent's; ``auto*`` means the default); ``ansible_ssh_common_args`` then
``ansible_ssh_extra_args`` -> ssh_options, read as ssh's command line (``-o
Keyword=value``, ``-o 'Keyword value'``, ``-oKeyword=value``; ``-J``, ``-i``, ``-l``,
``-p``, ``-c``, ``-m`` as their ``-o`` twins; any other ssh flag is dropped with a
warning naming it, the variable and the hosts); every other variable is an attribute.
Variables merge as Ansible does: ``all`` < parent group < child group < host.
A host belongs to its groups and to all their ancestors, so ``@parent``
includes the hosts of its children. Values that read as integers, floats or
booleans are stored typed.

Vault-encrypted values (YAML ``!vault``, JSON ``{"__ansible_vault": ...}``) are
never decrypted: the variable is skipped and the import carries a warning
naming it and its hosts or group; the rest of the file is imported. Connection
settings Shoal cannot honour (a ``become_method`` other than sudo, a
``become_user`` other than root, ``ansible_connection`` other than ssh) are
kept as attributes and warned about too.
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
from shoal.nodes.nodeset import MAX_NAMES, expand, fold

HOST_KEYS = ("ansible_host", "ansible_ssh_host")
USER_KEYS = ("ansible_user", "ansible_ssh_user")
PORT_KEYS = ("ansible_port", "ansible_ssh_port")
KEY_KEYS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
BECOME_KEYS = ("ansible_become", "ansible_sudo")
PYTHON_KEYS = ("ansible_python_interpreter",)
#: ssh command-line arguments, in the order Ansible puts them on ssh's command line.
SSH_ARGS_KEYS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
#: ssh flags that are an ``-o`` option with their argument.
_SSH_FLAG_OPTIONS = {
    "J": "ProxyJump", "i": "IdentityFile", "l": "User", "p": "Port",
    "c": "Ciphers", "m": "MACs",
}  # fmt: skip
#: ssh flags that take an argument (dropped with it when not in _SSH_FLAG_OPTIONS).
_SSH_VALUED = frozenset("BbcDEeFIiJLlmOopQRSWw")
#: Connection settings kept as attributes but not honoured, with the values that are fine.
_UNUSED = {
    "ansible_become_method": ("sudo",),
    "ansible_become_user": ("root",),
    "ansible_connection": ("ssh", "smart", "paramiko"),
}
#: The deepest chain of groups (``children`` of ``children``...) an inventory may have.
MAX_GROUP_DEPTH = 100
_ANSIBLE_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")


@dataclass
class Inventory:
    """What a file describes: nodes, group variables (kept for display), and the
    one-line warnings of what was read but not used (vault values, say)."""

    nodes: list[Node]
    group_vars: dict[str, dict[str, AttrValue]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Vaulted:
    """A vault-encrypted value: never decrypted, its variable skipped."""

    def __repr__(self) -> str:
        return "<vault>"


VAULTED = _Vaulted()


def _vaulted(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is, or holds, a vault-encrypted value."""
    if value is VAULTED:
        return True
    if isinstance(value, dict):
        if "__ansible_vault" in value:
            return True
        return depth < 64 and any(_vaulted(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return depth < 64 and any(_vaulted(v, depth + 1) for v in value)
    return False


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
        self.skipped: dict[tuple[str, str], list[str]] = {}  # (kind, variable) -> owners
        self.dropped: dict[tuple[str, str], list[str]] = {}  # (variable, ssh flag) -> hosts

    def clean(self, raw: Mapping[Any, Any], kind: str, owner: str) -> dict[str, AttrValue]:
        """``raw`` variables typed, vault-encrypted ones dropped and noted for a warning."""
        out: dict[str, AttrValue] = {}
        for key, value in raw.items():
            if _vaulted(value):
                owners = self.skipped.setdefault((kind, str(key)), [])
                if owner not in owners:
                    owners.append(owner)
            else:
                out[str(key)] = typed(value)
        return out

    def warnings(self, source: str, nodes: list[Node]) -> list[str]:
        out = [
            f"{source}: vault-encrypted variable {var} of {kind} {fold(owners)} skipped"
            " (Shoal does not decrypt vault values)"
            for (kind, var), owners in self.skipped.items()
        ]
        unused: dict[tuple[str, AttrValue], list[str]] = {}
        for n in nodes:
            for key, fine in _UNUSED.items():
                if key in n.attrs and n.attrs[key] not in fine:
                    unused.setdefault((key, n.attrs[key]), []).append(n.name)
        out += [
            f"{source}: {var} of host {fold(hosts)}: ssh flag {flag} not used (Shoal takes "
            "-o options and -J, -i, -l, -p, -c, -m)"
            for (var, flag), hosts in self.dropped.items()
        ]
        out += [
            f"{source}: {key}={value} of host {fold(hosts)} is not used"
            f" (Shoal connects over SSH{' and becomes root with sudo' if 'become' in key else ''})"
            for (key, value), hosts in unused.items()
        ]
        return out

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
            nodes.append(_ansible_node(h, merged, chain, source, self.dropped))
        gvars = {g: v for g, v in self.vars.items() if v and g not in ("all", "ungrouped")}
        return Inventory(nodes, gvars, self.warnings(source, nodes))


def ssh_arguments(text: str) -> tuple[list[str], list[str]]:
    """ssh command-line arguments as ``(["Keyword value" ...], [dropped flag ...])``.

    ``-o X=Y``, ``-o 'X Y'``, ``-oX=Y`` are options as written; ``-J``, ``-i``,
    ``-l``, ``-p``, ``-c``, ``-m`` (joined to their value or not) their ``-o``
    twins; any other flag (with its value, if it takes one) or word is dropped.
    ValueError for unbalanced quotes.
    """
    words = shlex.split(text)
    options: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if len(word) < 2 or word[0] != "-" or word == "--":
            dropped.append(word)
            continue
        letter, value = word[1], word[2:] or None
        if letter in _SSH_VALUED and value is None:
            value = words[i] if i < len(words) else ""
            i += 1
        if letter == "o" and value:
            options.append(value)
        elif letter in _SSH_FLAG_OPTIONS and value:
            options.append(f"{_SSH_FLAG_OPTIONS[letter]} {value}")
        else:
            dropped.append(word if not value or word[2:] else f"{word} {value}")
    return options, dropped


def _ansible_node(
    host: str,
    hvars: dict[str, AttrValue],
    groups: list[str],
    src: str,
    dropped: dict[tuple[str, str], list[str]],
) -> Node:
    address: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    become = False
    python: str | None = None
    ssh_args: dict[str, list[str]] = {}
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
        elif key in KEY_KEYS:
            identity = str(value) or None
        elif key in BECOME_KEYS:
            if value not in (True, False):  # 1 and 0 are too
                raise InventoryError(f"{src}: host {host}: {key} is not a boolean: {value!r}")
            become = bool(value)
        elif key in PYTHON_KEYS:
            python = None if str(value).startswith("auto") else str(value) or None
        elif key in SSH_ARGS_KEYS:
            try:
                ssh_args[key], flags = ssh_arguments(str(value))
            except ValueError as exc:
                raise InventoryError(f"{src}: host {host}: {key}: {exc}") from None
            for flag in flags:
                hosts = dropped.setdefault((key, flag), [])
                if name not in hosts:
                    hosts.append(name)
        else:
            attrs[key] = value
    kept = tuple(sorted(g for g in groups if g not in ("all", "ungrouped")))
    return Node(
        name=name,
        host=address,
        user=user,
        port=port,
        groups=kept,
        attrs=attrs,
        identity_file=identity,
        become=become,
        python=python,
        ssh_options=tuple(o for key in SSH_ARGS_KEYS for o in ssh_args.get(key, ())),
    )


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


def _load_yaml(text: str) -> Any:
    """The YAML document, with ``!vault`` values as :data:`VAULTED` (bounds of yamlload)."""
    import yaml

    from shoal import yamlload

    class Constructor(yaml.constructor.SafeConstructor):
        pass

    Constructor.add_constructor("!vault", lambda _c, _n: VAULTED)
    node = yamlload.compose(text)
    return None if node is None else Constructor().construct_document(node)


def parse_ansible_yaml(text: str, source: str = "<yaml>") -> Inventory:
    import yaml

    from shoal import yamlload

    try:
        data = _load_yaml(text)
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
            for host in expand_ansible(str(pattern)):
                g.add_host(name, host, g.clean(hvars or {}, "host", host))
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise InventoryError(f"{source}: {path}.vars must be a mapping")
        g.vars[name].update(g.clean(gvars, "group", name))
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


# --- Ansible JSON (ansible-inventory --list) -------------------------------------


def parse_ansible_json(text: str, source: str = "<json>") -> Inventory:
    """Nodes of ``ansible-inventory --list`` output (or a dynamic inventory script's)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InventoryError(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InventoryError(f"{source}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{source}: an Ansible JSON inventory is an object of groups")
    meta = data.get("_meta", {})
    hostvars = meta.get("hostvars", {}) if isinstance(meta, dict) else None
    if not isinstance(hostvars, dict):
        raise InventoryError(f"{source}: _meta.hostvars must be an object")
    g = _Groups()
    g.group("all")
    for name, body in data.items():
        if name == "_meta":
            continue
        if isinstance(body, list):  # the old script form: a group is its list of hosts
            body = {"hosts": body}
        if not isinstance(body, dict):
            raise InventoryError(f"{source}: group {name} must be an object")
        g.group(name)
        for key in ("hosts", "children"):
            if not isinstance(body.get(key) or [], list):
                raise InventoryError(f"{source}: {name}.{key} must be a list")
        for host in body.get("hosts") or []:
            hvars = hostvars.get(str(host)) or {}
            if not isinstance(hvars, dict):
                raise InventoryError(f"{source}: _meta.hostvars.{host} must be an object")
            g.add_host(name, str(host), g.clean(hvars, "host", str(host)))
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise InventoryError(f"{source}: {name}.vars must be an object")
        g.vars[name].update(g.clean(gvars, "group", name))
        for child in body.get("children") or []:
            g.group(str(child))
            if str(child) not in g.children[name]:
                g.children[name].append(str(child))
    for host, hvars in hostvars.items():  # in _meta but in no group: ungrouped
        if host not in g.host_vars and isinstance(hvars, dict):
            g.add_host("ungrouped", str(host), g.clean(hvars, "host", str(host)))
    return g.nodes(source)


# --- dispatch --------------------------------------------------------------------


FORMATS = ("auto", "list", "ini", "yaml", "json")


def detect_format(path: str, text: str) -> str:
    lower = path.lower()
    if lower.endswith((".yml", ".yaml")):
        return "yaml"
    if lower.endswith((".ini", ".cfg")):
        return "ini"
    if lower.endswith(".json") or text.lstrip().startswith("{"):
        return "json"
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
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror}") from None
    return parse_inventory(text, path, fmt)


def parse_inventory(text: str, source: str, fmt: str = "auto") -> Inventory:
    """Nodes of an inventory text (``source`` names it in messages and guides ``auto``)."""
    if fmt not in FORMATS:
        raise InventoryError(f"unknown inventory format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "auto":
        fmt = detect_format(source, text)
    if fmt == "list":
        return Inventory(parse_plain(text, source))
    if fmt == "ini":
        return parse_ansible_ini(text, source)
    if fmt == "json":
        return parse_ansible_json(text, source)
    return parse_ansible_yaml(text, source)


def with_group(nodes: Iterable[Node], group: str) -> list[Node]:
    """The nodes with ``group`` added to their groups."""
    from dataclasses import replace

    return [replace(n, groups=tuple(sorted({*n.groups, group}))) for n in nodes]
