"""Pieces every command adapter shares: the ``-s EXPR`` option and node resolution."""

from __future__ import annotations

import argparse

from shoal.nodes.model import Node


def add_select_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--select",
        metavar="EXPR",
        default=None,
        help="selection expression (default: all nodes; see README 'Selecting nodes')",
    )


def selected_nodes(args: argparse.Namespace) -> list[Node]:
    """The nodes ``-s EXPR`` names (all when absent); EmptySelectionError if none."""
    from shoal.nodes.select import resolve

    return resolve(args.select)
