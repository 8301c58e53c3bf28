"""Pieces the command adapters share: selection, connection and agent options, node resolution."""

from __future__ import annotations

import argparse
from typing import Any

from shoal.nodes.model import Node
from shoal.numeric import number


def add_select_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--select",
        metavar="EXPR",
        default=None,
        help="selection expression (default: all nodes; see README 'Selecting nodes')",
    )


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """``-w HOSTS``, ``-l USER``, ``-i KEY``, ``-o OPTION``: ad-hoc targets, as pssh/clush/ssh."""
    add_hosts_options(parser)
    parser.add_argument(
        "-i",
        "--identity",
        metavar="KEY",
        action="append",
        default=[],
        help="private key tried first, as ssh -i (repeatable)",
    )
    parser.add_argument(
        "-o",
        "--ssh-option",
        metavar="'Option value'",
        action="append",
        default=[],
        help="ssh option, as ssh -o: before any ssh_config value (repeatable; e.g. "
        "'ProxyJump gw', 'UserKnownHostsFile FILE', 'StrictHostKeyChecking accept-new')",
    )


def add_hosts_options(parser: argparse.ArgumentParser) -> None:
    """``-w HOSTS`` and ``-l USER``: what commands that only name nodes take of the targets."""
    parser.add_argument(
        "-w",
        "--hosts",
        metavar="HOSTS",
        default=None,
        help="these hosts, in the inventory or not (node-set syntax, items may be "
        "user@host:port or @group as clush -w: 'root@web[1-4],db1:2222,@gpu'); -s then "
        "narrows them",
    )
    parser.add_argument(
        "-l", "--login", metavar="USER", default=None, help="user for nodes that name none"
    )


def adhoc_of(args: argparse.Namespace) -> Any:
    """The :class:`~shoal.nodes.select.AdHoc` targets of ``-w``/``-l`` (none when not given)."""
    from shoal.nodes.select import AdHoc

    return AdHoc(hosts=getattr(args, "hosts", None), user=getattr(args, "login", None))


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``-s``, ad-hoc targets, ``-p``, ``--connect-timeout``, ``--host-keys``, ``--json``:
    every fan-out."""
    add_select_option(parser)
    add_target_options(parser)
    parser.add_argument(
        "-p",
        "--parallel",
        type=int,
        metavar="N",
        help="connections open at once (default: sized from the open-file limit)",
    )
    add_link_options(parser)
    parser.add_argument("--json", action="store_true", help="one JSON record per node")


def add_link_options(parser: argparse.ArgumentParser, connect_timeout: float = 10.0) -> None:
    """``--connect-timeout`` and ``--host-keys``: every command that connects to nodes."""
    parser.add_argument(
        "--connect-timeout",
        type=number,
        default=connect_timeout,
        metavar="SECONDS",
        help=f"give up connecting to a node after this long (default {connect_timeout:g})",
    )
    parser.add_argument(
        "--host-keys",
        choices=("verify", "accept-new"),
        default="verify",
        help="verify (default): refuse unknown hosts; accept-new: trust and record "
        "first-seen keys. A changed key is always refused.",
    )


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The FanoutOptions fields that :func:`add_connection_options` parsed (and the
    keepalive setting, which has no flag: ``args.settings`` from main.py)."""
    settings = getattr(args, "settings", None)
    return {
        "parallel": args.parallel,
        "connect_timeout": args.connect_timeout,
        "host_keys": args.host_keys,
        **({"keepalive": settings.keepalive} if settings is not None else {}),
    }


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    """:func:`add_connection_options` plus ``--home`` and ``--python``: every agent command."""
    add_connection_options(parser)
    parser.add_argument(
        "--home",
        default=".shoal",
        metavar="DIR",
        help="the agent's working area on the nodes (default .shoal in the remote home)",
    )
    parser.add_argument(
        "--python", default="python3", help="python3 on the nodes (default python3)"
    )


def agent_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The AgentOptions fields that :func:`add_agent_options` parsed."""
    return {"home": args.home, "python": args.python, **connection_settings(args)}


def selected_nodes(args: argparse.Namespace) -> list[Node]:
    """The nodes ``-s EXPR`` (and ``-w``) name, with ``-l``/``-i``/``-o`` applied.

    All nodes when neither is given; EmptySelectionError if none; UsageError for an
    ``-o`` Shoal cannot honour. Warns on stderr when MQ_NODES is set but ignored
    (the ``use_mq_nodes`` setting, ``args.settings``, or ``-s mq`` use it).
    """
    import dataclasses
    import sys

    from shoal.nodes.select import mq_ignored, resolve

    options = [f"IdentityFile {key}" for key in getattr(args, "identity", None) or []]
    options += getattr(args, "ssh_option", None) or []
    if options:  # the ssh_config reader costs ~15 ms of start-up: only when needed
        from shoal.transport.sshconfig import parse_option

        for text in options:
            parse_option(text)  # refused here, once, before any node is touched
    use_mq = bool(getattr(getattr(args, "settings", None), "use_mq_nodes", False))
    hosts = getattr(args, "hosts", None)
    nodes = resolve(args.select, adhoc=adhoc_of(args), use_mq=use_mq)
    if hosts is None:
        warning = mq_ignored(args.select, use_mq=use_mq)
        if warning:
            print(warning, file=sys.stderr)
    if options:
        extra = tuple(options)
        nodes = [dataclasses.replace(n, ssh_options=extra + n.ssh_options) for n in nodes]
    return nodes
