"""``shoal depot put|list|show|rm|gc``: parse, call :mod:`shoal.content.depot`, render.

The depot lives in the state directory; ``shoal push depot:NAME@VERSION DIR``
and app specs (``software: {web: {source: depot:web@1.2}}``) use its entries.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from .render import ago, print_object, print_records, print_table, size


def register(sub: Any) -> None:
    depot = sub.add_parser(
        "depot",
        help="versioned packages kept on the controller (push and apps use them)",
        description="A content-addressed store of named package versions in the state "
        "directory: a new version stores only its new chunks. Push one with "
        "'shoal push depot:NAME@VERSION REMOTE_DIR', or name it in an app spec.",
    )
    dsub = depot.add_subparsers(dest="depot_command", metavar="ACTION")
    dsub.required = True
    put = dsub.add_parser(
        "put",
        help="store a directory, a tarball or an http(s) URL of a tarball",
        description="Store SOURCE as NAME@VERSION: a directory, a .tar/.tar.gz/.tar.xz/"
        ".tar.zst file (read without extracting; unsafe members refused by name) or an "
        "http(s):// URL of one, fetched once by the controller.",
    )
    put.add_argument("source", metavar="PATH|TARBALL|URL", help="what to store")
    put.add_argument("--name", required=True, help="the package's name")
    put.add_argument("--version", dest="label", metavar="V", help="label (default: its id)")
    put.add_argument("--sha256", metavar="HEX", help="a URL's expected SHA-256 (refused else)")
    put.set_defaults(handler=cmd_put)
    listing = dsub.add_parser("list", help="every package version, oldest first")
    listing.set_defaults(handler=cmd_list)
    show = dsub.add_parser("show", help="a package's versions and where each is deployed")
    show.add_argument("name", metavar="NAME", help="the package")
    show.set_defaults(handler=cmd_show)
    rm = dsub.add_parser(
        "rm",
        help="drop NAME@VERSION (refused while a node or an app uses it)",
        description="Remove a version from the depot's index; 'depot gc' frees its chunks.",
    )
    rm.add_argument("ref", metavar="NAME@VERSION", help="the version to drop")
    rm.set_defaults(handler=cmd_rm)
    gc = dsub.add_parser("gc", help="delete chunks no version references")
    gc.set_defaults(handler=cmd_gc)
    for parser in (put, listing, show, rm, gc):
        parser.add_argument("--json", action="store_true", help="JSON lines")


def _depot() -> Any:
    from shoal.content.depot import Depot
    from shoal.state import State

    return Depot(State())


def _record(entry: Any) -> dict[str, Any]:
    return {**dataclasses.asdict(entry), "ref": entry.ref}


def _rows(entries: list[Any]) -> list[list[str]]:
    now = time.time()
    return [
        [e.ref, e.version, size(e.bytes), str(e.files), size(e.stored), ago(now - e.created)]
        for e in entries
    ]


_HEADER = ["PACKAGE", "ID", "SIZE", "FILES", "STORED", "PUT"]


def cmd_put(args: argparse.Namespace) -> int:
    got = _depot().put(args.source, args.name, args.label, sha256=args.sha256)
    if args.json:
        print_object(
            {**_record(got.entry), "new_chunks": got.new_chunks, "new_bytes": got.new_bytes}
        )
        return 0
    e = got.entry
    if got.existed:
        print(f"{e.ref}: already stored ({e.version})")
    else:
        print(
            f"{e.ref}: {e.version}, {size(e.bytes)} in {e.files} files; "
            f"stored {got.new_chunks} new chunks, {size(got.new_bytes)}"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    entries = _depot().entries()
    if args.json:
        print_records(map(_record, entries))
    else:
        print_table(_rows(entries), _HEADER)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from shoal.errors import ContentError

    depot = _depot()
    entries = depot.entries(args.name)
    if not entries:
        raise ContentError(f"depot has no package {args.name!r}")
    where = {e.version: depot.deployments(e.version) for e in entries}
    if args.json:
        print_records(
            {**_record(e), "deployed": [dataclasses.asdict(d) for d in where[e.version]]}
            for e in entries
        )
        return 0
    print_table(_rows(entries), _HEADER)
    deployed = [[e.ref, d.node, d.dir] for e in entries for d in where[e.version]]
    if deployed:
        print()
        print_table(deployed, ["PACKAGE", "NODE", "DIR"])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from shoal.app.software import depot_users

    depot = _depot()
    entry = depot.remove(args.ref, depot_users(depot.state))
    if args.json:
        print_object(_record(entry))
    else:
        print(f"removed {entry.ref} ({entry.version}); 'shoal depot gc' frees its chunks")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    done = _depot().gc()
    if args.json:
        print_object(dataclasses.asdict(done))
    else:
        print(f"deleted {done.chunks} unreferenced chunks, {size(done.bytes)}")
    return 0
