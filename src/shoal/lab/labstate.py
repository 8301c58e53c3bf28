"""The lab's state file: a JSON record of everything a lab made and how it is.

Owns :class:`LabState` and :class:`LabNode` and their (de)serialisation to
``labs/NAME/state.json``, written atomically. ``up`` writes the record with
``status: creating`` *before* it makes anything, so a crash leaves a record
that names the lab; ``down`` still discovers leftovers by name prefix, because
a crash can also happen before the first write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import LabError
from shoal.lab.labspec import Shaping

STATE_FILE = "state.json"
VERSION = 1

#: Node states: ``up`` answers; ``cut`` link down, processes untouched;
#: ``killed`` every process gone (or frozen, rootless) and link down.
NODE_STATES = ("up", "cut", "killed")


@dataclass
class LabNode:
    name: str
    addr: str
    port: int
    netns: str | None = None
    pid: int | None = None
    state: str = "up"
    shaping: Shaping = field(default_factory=Shaping)
    #: the node the controller reaches this one through (a site node, :mod:`.site`)
    gateway: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "addr": self.addr,
            "port": self.port,
            "netns": self.netns,
            "pid": self.pid,
            "state": self.state,
            "shaping": self.shaping.to_json(),
            **({"gateway": self.gateway} if self.gateway else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> LabNode:
        return cls(
            name=str(d["name"]),
            addr=str(d["addr"]),
            port=int(d["port"]),  # type: ignore[call-overload]
            netns=d.get("netns") if isinstance(d.get("netns"), str) else None,  # type: ignore[arg-type]
            pid=d.get("pid") if isinstance(d.get("pid"), int) else None,  # type: ignore[arg-type]
            state=str(d.get("state", "up")),
            shaping=Shaping.from_json(d.get("shaping")),  # type: ignore[arg-type]
            gateway=d.get("gateway") if isinstance(d.get("gateway"), str) else None,  # type: ignore[arg-type]
        )


@dataclass
class LabState:
    name: str
    mode: str  # "netns" or "rootless"
    dir: str
    status: str = "creating"  # "creating" → "up"
    created: float = 0.0
    subnet: str | None = None
    controller_addr: str | None = None
    controller: Shaping = field(default_factory=Shaping)
    nodes: list[LabNode] = field(default_factory=list)
    #: the site's subnet, when some nodes sit behind a gateway (:mod:`.site`)
    site: str | None = None

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"lab {self.name} has no node {name!r} (nodes are n1..n{len(self.nodes)})")

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "name": self.name,
            "mode": self.mode,
            "dir": self.dir,
            "status": self.status,
            "created": self.created,
            "subnet": self.subnet,
            "controller_addr": self.controller_addr,
            "controller": self.controller.to_json(),
            "nodes": [n.to_json() for n in self.nodes],
            **({"site": self.site} if self.site else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> LabState:
        return cls(
            name=str(d["name"]),
            mode=str(d["mode"]),
            dir=str(d["dir"]),
            status=str(d.get("status", "creating")),
            created=float(d.get("created", 0.0)),  # type: ignore[arg-type]
            subnet=d.get("subnet") if isinstance(d.get("subnet"), str) else None,  # type: ignore[arg-type]
            controller_addr=(
                d.get("controller_addr") if isinstance(d.get("controller_addr"), str) else None  # type: ignore[arg-type]
            ),
            controller=Shaping.from_json(d.get("controller")),  # type: ignore[arg-type]
            nodes=[LabNode.from_json(n) for n in d.get("nodes", [])],  # type: ignore[attr-defined]
            site=d.get("site") if isinstance(d.get("site"), str) else None,  # type: ignore[arg-type]
        )


def save(state: LabState) -> None:
    path = Path(state.dir) / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1) + "\n")
    os.replace(tmp, path)


def load(labdir: Path) -> LabState | None:
    """The lab's state, or None when there is no (readable) state file."""
    path = labdir / STATE_FILE
    try:
        data = json.loads(path.read_text())
        return LabState.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"lab state {path} is unreadable ({exc}); run: shoal lab down") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
