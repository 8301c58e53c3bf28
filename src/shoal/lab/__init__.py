"""A local lab of real SSH nodes on this machine (``shoal lab``).

Each node is a network namespace with its own address on a bridge with no
uplink, its own sshd, hostname, home and /tmp (root); or, without root, an sshd
on its own loopback port with its own home (rootless). See :mod:`shoal.lab.labctl`
for the :class:`Lab` object and DESIGN.md "Testing on real hosts".
"""

from __future__ import annotations

from shoal.lab.labctl import Lab, LabStatus, LabSummary, NodeStatus, TeardownReport, list_labs
from shoal.lab.labspec import MAX_NODES, LabSpec, ShapeChange, Shaping

__all__ = [
    "MAX_NODES",
    "Lab",
    "LabSpec",
    "LabStatus",
    "LabSummary",
    "NodeStatus",
    "ShapeChange",
    "Shaping",
    "TeardownReport",
    "list_labs",
]
