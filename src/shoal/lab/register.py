"""Registering a lab's nodes in the controller's inventory (and removing them).

Owns the lab's one contact with :mod:`shoal.nodes.inventory`: after ``up`` the
nodes are imported as exactly the members of group ``lab`` (so ``shoal run -s
@lab ...`` and every other command find them, with the lab's ssh_config), and
``down`` removes the nodes whose ssh_config is this lab's — also when the
state file is gone.

Node names (n1, n2, ...) are the same in every lab, so only one lab per
``SHOAL_HOME`` can own them in the inventory: the first one up. A second lab
that would take over names still used by a live lab is not registered (it is
used through its own ssh_config and inventory file); once the first lab is
down, the next ``up`` registers again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shoal.errors import ShoalError
from shoal.nodes.model import Node

GROUP = "lab"


def register(nodes: Sequence[Node]) -> bool:
    """Make group ``lab`` hold exactly ``nodes``; False (nothing changed) when another
    live lab owns the group or an inventory node outside it has a lab node's name."""
    from shoal.nodes import inventory
    from shoal.state import State

    mine = {n.ssh_config for n in nodes}
    names = {n.name for n in nodes}
    with State() as st:
        inventory.ensure(st)
        for other in inventory.load_nodes(st):
            owner = other.ssh_config
            if other.name in names and GROUP not in other.groups:
                return False  # a node of the user's own with a lab name: never overwrite it
            if GROUP in other.groups and owner not in mine and owner and Path(owner).exists():
                return False
        inventory.import_nodes(nodes, replace_group=GROUP, state=st)
    return True


def unregister(ssh_config: Path) -> list[str]:
    """Remove from the inventory every node that uses ``ssh_config``; their names."""
    from shoal.nodes import inventory
    from shoal.state import State

    wanted = str(ssh_config)
    try:
        with State() as st:
            inventory.ensure(st)
            mine = [n.name for n in inventory.load_nodes(st) if n.ssh_config == wanted]
            if not mine:
                return []
            return inventory.remove_nodes(mine, state=st)
    except ShoalError:
        return []  # no usable state database: nothing was registered there
