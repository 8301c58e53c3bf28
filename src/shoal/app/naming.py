"""What an application is called on its nodes, and the ``${...}`` values of a member.

An application lives in ``<agent home>/apps/<app>`` on each node
(:func:`app_dir`); its steps and services are known to the node's agent as
``<app>.<component>.<step>`` (:func:`step_id`: a one-shot step's id, a
service's program name), which is how ``status``, ``logs`` and ``down`` find
them again. :func:`values` gives a member node the variables the spec
documents (see :mod:`.appspec`), :func:`expand` substitutes them — in a
command each value is one shell word — and :func:`environment` is the
``SHOAL_*`` and ``env:`` environment of one step. Everything here is pure.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from shoal.nodes.model import Node

from .appspec import VAR_RE, AppSpec, Component, Step


def app_dir(home: str, app: str) -> str:
    return f"{home.rstrip('/')}/apps/{app}"


def step_id(app: str, comp: str, step: str) -> str:
    """The agent's name for a step: a one-shot step's id, a service's program name."""
    return f"{app}.{comp}.{step}"


def values(
    spec: AppSpec,
    comp: Component,
    node: Node,
    *,
    home: str,
    slot: int,
    members: Mapping[str, Sequence[Node]],
) -> dict[str, str]:
    """The ``${...}`` values of ``node`` as a member of ``comp`` (slot ``slot``,
    agent home ``home``), with ``members`` the current members of every component."""
    adir = app_dir(home, spec.name)
    out = {
        "node": node.name,
        "index": str(slot),
        "component": comp.name,
        "app": spec.name,
        "dir": adir,
        "addr": node.address,
        "count": str(len(members.get(comp.name, []))),
    }
    for cname, nodes in members.items():
        addrs = [n.address for n in nodes]
        out[f"addrs.{cname}"] = ",".join(addrs)
        out[f"addr.{cname}"] = addrs[0] if addrs else ""
        out[f"nodes.{cname}"] = ",".join(n.name for n in nodes)
        out[f"count.{cname}"] = str(len(nodes))
    for sname in spec.software:
        out[f"sw.{sname}"] = f"{adir}/sw/{sname}"
    return out


def expand(text: str, values: Mapping[str, str], *, shell: bool = True) -> str:
    """``text`` with its ``${...}`` replaced; in a command (``shell``) each value is
    one shell word, quoted when it needs it (``${dir}`` under a home with a space)."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
        if key not in values:
            return m.group(0)
        value = values[key]
        return shlex.quote(value) if shell and value else value

    return VAR_RE.sub(sub, text)


def environment(
    spec: AppSpec, comp: Component, step: Step, node: Node, values: Mapping[str, str]
) -> dict[str, str]:
    """The environment of ``step`` on ``node``: ``SHOAL_*``, then the component's and
    the step's ``env:`` (expanded, not quoted)."""
    env = {
        "SHOAL_APP": spec.name,
        "SHOAL_COMPONENT": comp.name,
        "SHOAL_NODE": node.name,
        "SHOAL_INDEX": values["index"],
        "SHOAL_APP_DIR": values["dir"],
    }
    env.update({k: expand(v, values, shell=False) for k, v in comp.env.items()})
    env.update({k: expand(v, values, shell=False) for k, v in step.env.items()})
    return env
