"""The inventory: nodes and groups stored in the controller's SQLite state.

Tables (declared here, owned here)::

    inv_nodes(name PK, host, user, port, ssh_config, attrs JSON, added, updated)
    inv_groups(name PK, vars JSON)           groups known even when empty
    inv_members(grp, node)                   membership, cascades with the node
    inv_attrs(key, node, value, is_bool)     attrs again, typed, one row each, so a
                                             filter reads one key without JSON
    inv_login(node PK, identity_file,        the login settings of the nodes that
              become, python)                have any (Ansible's connection vars)
    inv_sshopts(node PK, options JSON)       ssh -o options of the nodes that have
                                             any (ansible_ssh_common/extra_args)

Other layers call :func:`import_nodes` (upsert a batch in one transaction,
optionally making it the whole content of a group: the lab registers its nodes
this way) and :func:`remove_group` (delete a group and every node in it).
Every function takes an optional open :class:`~shoal.state.State`; without one
it opens the default state database and closes it again.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from shoal.errors import InventoryError, UnknownNameError
from shoal.nodes.model import AttrValue, Node
from shoal.nodes.nodeset import natural_key
from shoal.state import State, opened

SCHEMA = """
CREATE TABLE IF NOT EXISTS inv_nodes (
    name TEXT PRIMARY KEY,
    host TEXT,
    user TEXT,
    port INTEGER,
    ssh_config TEXT,
    attrs TEXT NOT NULL DEFAULT '{}',
    added REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inv_groups (
    name TEXT PRIMARY KEY,
    vars TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS inv_members (
    grp TEXT NOT NULL REFERENCES inv_groups(name) ON DELETE CASCADE,
    node TEXT NOT NULL REFERENCES inv_nodes(name) ON DELETE CASCADE,
    PRIMARY KEY (grp, node)
);
CREATE INDEX IF NOT EXISTS inv_members_node ON inv_members(node);
CREATE TABLE IF NOT EXISTS inv_attrs (
    key TEXT NOT NULL,
    node TEXT NOT NULL REFERENCES inv_nodes(name) ON DELETE CASCADE,
    value,
    is_bool INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, node)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inv_attrs_node ON inv_attrs(node);
CREATE TABLE IF NOT EXISTS inv_login (
    node TEXT PRIMARY KEY REFERENCES inv_nodes(name) ON DELETE CASCADE,
    identity_file TEXT,
    become INTEGER NOT NULL DEFAULT 0,
    python TEXT
);
CREATE TABLE IF NOT EXISTS inv_sshopts (
    node TEXT PRIMARY KEY REFERENCES inv_nodes(name) ON DELETE CASCADE,
    options TEXT NOT NULL
);
"""

_decode = json.JSONDecoder().decode
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
GROUP_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]*$")
RESERVED = frozenset({"all", "failed", "healthy", "limit", "random", "spread"})


@dataclass(frozen=True)
class ImportReport:
    """What one import changed."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass
class GroupInfo:
    name: str
    size: int
    vars: dict[str, AttrValue] = field(default_factory=dict)


def ensure(state: State) -> None:
    state.ensure("inventory", SCHEMA)


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InventoryError(
            f"invalid node name {name!r}: use letters, digits, '_', '.', '-' "
            "(start with a letter, digit or '_')"
        )
    if name in RESERVED:
        raise InventoryError(f"invalid node name {name!r}: it is a reserved word")


def check_group(name: str) -> None:
    if not GROUP_RE.match(name) or name == "all":
        raise InventoryError(f"invalid group name {name!r}")


def _row_to_node(row: Sequence[object], groups: tuple[str, ...]) -> Node:
    name, host, user, port, ssh_config, attrs, identity_file, become, python, options = row[:10]
    return Node(
        name=str(name),
        host=host if host is None else str(host),
        user=user if user is None else str(user),
        port=None if port is None else int(str(port)),
        groups=groups,
        attrs=_decode(str(attrs)) if attrs and attrs != "{}" else {},
        ssh_config=ssh_config if ssh_config is None else str(ssh_config),
        identity_file=identity_file if identity_file is None else str(identity_file),
        become=bool(become),
        python=python if python is None else str(python),
        ssh_options=tuple(_decode(str(options))) if options else (),
    )


def import_nodes(
    nodes: Iterable[Node],
    *,
    replace_group: str | None = None,
    group_vars: dict[str, dict[str, AttrValue]] | None = None,
    state: State | None = None,
) -> ImportReport:
    """Add or replace ``nodes`` in one transaction.

    A node that exists already is replaced whole (address, user, port, attrs,
    ssh_config, login settings, ssh options and its group memberships become those
    given). With ``replace_group`` every given node also joins that group, and the
    nodes that were in the group before but are not given now are deleted from the
    inventory: the group then holds exactly ``nodes``.
    """
    batch = list(nodes)
    seen = _checked_names(batch, replace_group)
    now = time.time()
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            existing = {r[0] for r in db.execute("SELECT name FROM inv_nodes")}
            removed: list[str] = []
            if replace_group is not None:
                removed = _drop_leavers(db, replace_group, seen)
            rows, members, attr_rows, groups = _import_rows(batch, replace_group, now)
            logins = [
                (n.name, n.identity_file, int(n.become), n.python)
                for n in batch
                if n.identity_file or n.become or n.python
            ]
            db.executemany(
                "INSERT INTO inv_nodes(name, host, user, port, ssh_config, attrs, added, updated)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET host=excluded.host,"
                " user=excluded.user, port=excluded.port, ssh_config=excluded.ssh_config,"
                " attrs=excluded.attrs, updated=excluded.updated",
                rows,
            )
            db.executemany("DELETE FROM inv_members WHERE node=?", [(n,) for n in seen & existing])
            db.executemany("DELETE FROM inv_attrs WHERE node=?", [(n,) for n in seen & existing])
            db.executemany("DELETE FROM inv_login WHERE node=?", [(n,) for n in seen & existing])
            db.executemany("DELETE FROM inv_sshopts WHERE node=?", [(n,) for n in seen & existing])
            db.executemany(
                "INSERT INTO inv_sshopts(node, options) VALUES (?,?)",
                [(n.name, json.dumps(list(n.ssh_options))) for n in batch if n.ssh_options],
            )
            db.executemany(
                "INSERT INTO inv_login(node, identity_file, become, python) VALUES (?,?,?,?)",
                logins,
            )
            db.executemany(
                "INSERT INTO inv_attrs(key, node, value, is_bool) VALUES (?,?,?,?)", attr_rows
            )
            db.executemany(
                "INSERT OR IGNORE INTO inv_groups(name) VALUES (?)", [(g,) for g in groups]
            )
            for g, gvars in (group_vars or {}).items():
                check_group(g)
                db.execute(
                    "INSERT INTO inv_groups(name, vars) VALUES (?, ?) ON CONFLICT(name)"
                    " DO UPDATE SET vars=excluded.vars",
                    (g, json.dumps(gvars, sort_keys=True)),
                )
            db.executemany("INSERT OR IGNORE INTO inv_members(grp, node) VALUES (?,?)", members)
    names = [n.name for n in batch]
    return ImportReport(
        added=tuple(n for n in names if n not in existing),
        updated=tuple(n for n in names if n in existing),
        removed=tuple(sorted(removed, key=natural_key)),
        groups=tuple(sorted(groups)),
    )


def _checked_names(batch: list[Node], replace_group: str | None) -> set[str]:
    """The names of ``batch``, each valid and given once, its groups' too; InventoryError."""
    seen: set[str] = set()
    for node in batch:
        check_name(node.name)
        if node.name in seen:
            raise InventoryError(f"node {node.name!r} is given twice")
        seen.add(node.name)
        for g in node.groups:
            check_group(g)
    if replace_group is not None:
        check_group(replace_group)
    return seen


def _drop_leavers(db: sqlite3.Connection, group: str, kept: set[str]) -> list[str]:
    """Delete the nodes of ``group`` that are not ``kept`` (the group is made to exist)."""
    old = [r[0] for r in db.execute("SELECT node FROM inv_members WHERE grp=?", (group,))]
    removed = [n for n in old if n not in kept]
    db.executemany("DELETE FROM inv_nodes WHERE name=?", [(n,) for n in removed])
    db.execute("INSERT OR IGNORE INTO inv_groups(name) VALUES (?)", (group,))
    return removed


#: one attribute of one node in ``inv_attrs``: key, node, value, is_bool
_AttrRow = tuple[str, str, AttrValue, int]


def _import_rows(
    batch: list[Node], replace_group: str | None, now: float
) -> tuple[list[tuple[object, ...]], list[tuple[str, str]], list[_AttrRow], set[str]]:
    """The inventory rows of ``batch``: nodes, memberships, attributes, and the groups named."""
    groups: set[str] = set()
    rows: list[tuple[object, ...]] = []
    members: list[tuple[str, str]] = []
    attr_rows: list[_AttrRow] = []
    for node in batch:
        node_groups = set(node.groups)
        if replace_group is not None:
            node_groups.add(replace_group)
        groups |= node_groups
        rows.append(
            (
                node.name,
                node.host,
                node.user,
                node.port,
                node.ssh_config,
                json.dumps(dict(node.attrs), sort_keys=True),
                now,
                now,
            )
        )
        members.extend((g, node.name) for g in node_groups)
        attr_rows.extend((k, node.name, v, int(isinstance(v, bool))) for k, v in node.attrs.items())
    return rows, members, attr_rows, groups


def remove_group(name: str, *, state: State | None = None) -> list[str]:
    """Delete group ``name`` and every node that belongs to it; the names removed.

    Removing a group that does not exist removes nothing (idempotent, so a lab
    can call it on tear-down without checking first).
    """
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            gone = [r[0] for r in db.execute("SELECT node FROM inv_members WHERE grp=?", (name,))]
            db.executemany("DELETE FROM inv_nodes WHERE name=?", [(n,) for n in gone])
            db.execute("DELETE FROM inv_groups WHERE name=?", (name,))
    return sorted(gone, key=natural_key)


def remove_nodes(names: Iterable[str], *, state: State | None = None) -> list[str]:
    """Delete the named nodes (unknown names are ignored); the names removed."""
    wanted = list(names)
    with opened(state) as st:
        ensure(st)
        with st.transaction() as db:
            existing = {r[0] for r in db.execute("SELECT name FROM inv_nodes")}
            gone = [n for n in wanted if n in existing]
            db.executemany("DELETE FROM inv_nodes WHERE name=?", [(n,) for n in gone])
    return sorted(gone, key=natural_key)


def count(state: State) -> int:
    ensure(state)
    return int(state.db.execute("SELECT count(*) FROM inv_nodes").fetchone()[0])


def all_names(state: State) -> set[str]:
    ensure(state)
    return {r[0] for r in state.db.execute("SELECT name FROM inv_nodes")}


def existing(state: State, names: Iterable[str]) -> set[str]:
    """Those of ``names`` that are in the inventory."""
    ensure(state)
    wanted = set(names)
    if len(wanted) <= 500:
        marks = ",".join("?" * len(wanted))
        rows = state.db.execute(f"SELECT name FROM inv_nodes WHERE name IN ({marks})", list(wanted))
        return {r[0] for r in rows}
    return wanted & all_names(state)


def group_members(state: State, group: str) -> set[str]:
    """Members of ``group``; UnknownNameError when no such group exists."""
    ensure(state)
    db = state.db
    names = {r[0] for r in db.execute("SELECT node FROM inv_members WHERE grp=?", (group,))}
    if (
        not names
        and db.execute("SELECT 1 FROM inv_groups WHERE name=?", (group,)).fetchone() is None
    ):
        raise UnknownNameError(f"unknown group: @{group}")
    return names


def groups(state: State) -> list[GroupInfo]:
    ensure(state)
    rows = state.db.execute(
        "SELECT g.name, g.vars, count(m.node) FROM inv_groups g"
        " LEFT JOIN inv_members m ON m.grp = g.name GROUP BY g.name"
    )
    return [GroupInfo(r[0], int(r[2]), json.loads(r[1])) for r in rows]


def attr_values(state: State, key: str) -> dict[str, AttrValue]:
    """``{node: value}`` of inventory attribute ``key`` for the nodes that have it."""
    ensure(state)
    db = state.db
    out: dict[str, AttrValue] = dict(
        db.execute("SELECT node, value FROM inv_attrs WHERE key=? AND is_bool=0", (key,))
    )
    for name, value in db.execute(
        "SELECT node, value FROM inv_attrs WHERE key=? AND is_bool=1", (key,)
    ):
        out[name] = bool(value)
    return out


def field_values(state: State, column: str) -> dict[str, AttrValue]:
    """``{node: value}`` of one record column (host, user, port) where it is set."""
    if column not in ("host", "user", "port", "ssh_config"):
        raise InventoryError(f"no such node field: {column}")
    ensure(state)
    rows = state.db.execute(f"SELECT name, {column} FROM inv_nodes WHERE {column} IS NOT NULL")
    return {r[0]: r[1] for r in rows}


def load_nodes(state: State, names: Iterable[str] | None = None) -> list[Node]:
    """Node records (all, or those named that exist), in natural order."""
    ensure(state)
    db = state.db
    wanted = None if names is None else set(names)
    cols = (
        "n.name, n.host, n.user, n.port, n.ssh_config, n.attrs, l.identity_file, l.become,"
        " l.python, o.options"
    )
    joined = (
        "inv_nodes n LEFT JOIN inv_login l ON l.node = n.name"
        " LEFT JOIN inv_sshopts o ON o.node = n.name"
    )
    if wanted is None:
        rows = db.execute(f"SELECT {cols} FROM {joined}").fetchall()
        mrows = db.execute("SELECT node, grp FROM inv_members").fetchall()
    elif len(wanted) <= 500:
        marks = ",".join("?" * len(wanted))
        args = list(wanted)
        rows = db.execute(f"SELECT {cols} FROM {joined} WHERE n.name IN ({marks})", args).fetchall()
        mrows = db.execute(
            f"SELECT node, grp FROM inv_members WHERE node IN ({marks})", args
        ).fetchall()
    else:  # most of the inventory: one scan beats a long IN list or a join table
        rows = [r for r in db.execute(f"SELECT {cols} FROM {joined}") if r[0] in wanted]
        mrows = [r for r in db.execute("SELECT node, grp FROM inv_members") if r[0] in wanted]
    member: dict[str, list[str]] = {}
    for node, grp in mrows:
        member.setdefault(node, []).append(grp)
    out = [_row_to_node(row, tuple(sorted(member.get(row[0], ())))) for row in rows]
    out.sort(key=lambda n: natural_key(n.name))
    return out


def with_defaults(node: Node, user: str | None) -> Node:
    """``node`` with ``user`` filled in when it has none."""
    return node if node.user or not user else replace(node, user=user)
