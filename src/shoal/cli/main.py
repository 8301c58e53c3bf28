"""Entry point of the ``shoal`` command.

Start-up time counts (``shoal run true`` on 32 nodes is benchmarked against
pssh and pdsh), so only the module that owns the chosen subcommand is imported.
Each command module exposes ``register(subparsers)``, which adds its parsers and
sets ``handler`` (a function ``args -> exit code``) as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# subcommand -> module under shoal.cli that registers it
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "lab": "lab",
    "nodes": "nodes",
    "select": "nodes",
    "plan": "nodes",
    "facts": "nodes",
    "run": "fanout",
    "cp": "fanout",
    "agent": "agent",
    "proc": "agent",
    "events": "agent",
    "sweep": "agent",
    "app": "app",
    "push": "content",
    "rollback": "content",
    "versions": "content",
}

#: Commands whose process ends right after the handler: everything they write is
#: flushed and every state change committed, so interpreter teardown (~50 ms of
#: garbage collection and module finalisation after 32 SSH connections) is skipped.
FAST_EXIT = frozenset({"run", "cp"})

DESCRIPTION = "Shoal: deploy and run distributed applications on many machines."


def _build_parser(modules: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    seen: set[str] = set()
    for name in modules:
        if name in seen:
            continue
        seen.add(name)
        try:
            module = importlib.import_module(f"shoal.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"shoal.cli.{name}":
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


def _version() -> str:
    from shoal import __version__

    return f"shoal {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    modules = [COMMANDS[first]] if first in COMMANDS else list(COMMANDS.values())
    parser = _build_parser(modules)
    args = parser.parse_args(args_list)
    from shoal.errors import SelectionSyntaxError, ShoalError

    try:
        code = args.handler(args)
    except SelectionSyntaxError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        print(exc.pointer(), file=sys.stderr)
        return 2
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2 if exc.kind in ("usage", "selection", "config") else 1
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
    if argv is None and first in FAST_EXIT:  # the process entry point only
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass  # a reader that went away: nothing more to deliver
        os._exit(int(code or 0))
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
