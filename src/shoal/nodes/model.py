"""The node record every layer passes around (pure data, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

AttrValue = str | int | float | bool
#: The attribute that names the node the controller reaches a node through.
GATEWAY = "gateway"


@dataclass(frozen=True)
class Node:
    """One machine Shoal can reach.

    ``name`` is the inventory name (what ``@`` expands to and what selections
    match). ``host`` is the address to connect to; when ``None`` the name itself
    is resolved through ssh_config (``HostName``) and DNS, as ``ssh NAME`` would.
    ``ssh_config`` names an extra ssh_config file read before ``~/.ssh/config``
    for this node (labs use it to carry their keys and known_hosts).

    The login settings an inventory may give (Ansible's connection variables):
    ``identity_file`` is a private key tried before ssh_config's IdentityFile
    entries (as ``ssh -i`` does); ``become`` runs ``shoal run``'s commands under
    ``sudo -n`` (``ansible_become``); ``python`` is the interpreter that runs the
    agent on the node (``ansible_python_interpreter``; ``None``: the default).
    ``ssh_options`` are ``ssh -o`` options (``"Keyword value"``) read before every
    ssh_config file, as on ssh's command line (``-w``/``-o``/``-i`` give them).
    """

    name: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    groups: tuple[str, ...] = ()
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    ssh_config: str | None = None
    identity_file: str | None = None
    become: bool = False
    python: str | None = None
    ssh_options: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return self.host or self.name

    @property
    def gateway(self) -> str | None:
        """The node this one is reached through (attribute ``gateway=<node name>``:
        :mod:`shoal.transport.gateways`), or None: directly."""
        value = self.attrs.get(GATEWAY)
        return str(value) if value not in (None, "", False) else None
