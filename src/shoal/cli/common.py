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


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``-s``, ``-p``, ``--connect-timeout``, ``--host-keys`` and ``--json``: every fan-out."""
    add_select_option(parser)
    parser.add_argument(
        "-p",
        "--parallel",
        type=int,
        metavar="N",
        help="connections open at once (default: sized from the open-file limit)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="give up connecting to a node after this long (default 10)",
    )
    parser.add_argument(
        "--host-keys",
        choices=("verify", "accept-new"),
        default="verify",
        help="verify (default): refuse unknown hosts; accept-new: trust and record "
        "first-seen keys. A changed key is always refused.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON record per node")


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
    """The nodes ``-s EXPR`` names (all when absent); EmptySelectionError if none."""
    from shoal.nodes.select import resolve

    return resolve(args.select)
