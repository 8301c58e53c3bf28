"""Entry point of the ``shoal`` command.

Start-up time counts (``shoal run true`` on 32 nodes is benchmarked against
pssh and pdsh), so only the module that owns the chosen subcommand is imported.
Each command module exposes ``register(subparsers)``, which adds its parsers and
sets ``handler`` (a function ``args -> exit code``) as the parser default.

What every command shares is done here once: on a terminal, stdout and stderr
escape control characters (:mod:`.terminal`, ``--raw`` keeps them); a reader
that goes away (``| head``) ends the command quietly with status 141, as
SIGPIPE ends other tools (state already committed stays committed); SIGTERM
is handled as Ctrl-C is, so either one stops what the command started on the
nodes before the command exits (130 for an interrupt, 143 for SIGTERM; every
status is named in :mod:`.exitcodes`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

# subcommand -> module under shoal.cli that registers it
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "lab": "labcmds",
    "nodes": "nodecmds",
    "select": "nodecmds",
    "plan": "nodecmds",
    "facts": "nodecmds",
    "run": "runcmds",
    "cp": "runcmds",
    "agent": "agentcmds",
    "proc": "agentcmds",
    "events": "agentcmds",
    "sweep": "agentcmds",
    "app": "appcmds",
    "push": "pushcmds",
    "rollback": "pushcmds",
    "versions": "pushcmds",
}

#: Commands whose process ends right after the handler: everything they write is
#: flushed and every state change committed, so interpreter teardown (~50 ms of
#: garbage collection and module finalisation after 32 SSH connections) is skipped.
FAST_EXIT = frozenset({"run", "cp"})

DESCRIPTION = "Shoal: deploy and run distributed applications on many machines."


def _build_parser(modules: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--raw",
        action="store_true",
        help="print what nodes send as it is, terminal escapes included (default on a "
        "terminal: control characters are shown escaped, e.g. \\x1b)",
    )
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
    streams = sys.stdout, sys.stderr
    if not args.raw:
        from .terminal import EscapingStream

        sys.stdout, sys.stderr = (EscapingStream(s) if _isatty(s) else s for s in streams)
    terminated = threading.Event()
    restore = _handle_sigterm(terminated)
    try:
        code = _run_handler(args, terminated)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        sys.stdout, sys.stderr = streams
    if argv is None and first in FAST_EXIT:  # the process entry point only
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass  # a reader that went away: nothing more to deliver
        os._exit(code)
    return code


def _run_handler(args: argparse.Namespace, terminated: threading.Event) -> int:
    """The command's exit status, with the errors every command shares handled."""
    from shoal.errors import SelectionSyntaxError, ShoalError

    from . import exitcodes

    try:
        try:
            code = int(args.handler(args) or 0)
            sys.stdout.flush()
            return code
        except SelectionSyntaxError as exc:
            print(f"shoal: error: {exc}", file=sys.stderr)
            print(exc.pointer(), file=sys.stderr)
            return exitcodes.USAGE
        except ShoalError as exc:
            print(f"shoal: error: {exc.located()}", file=sys.stderr)
            usage = exc.kind in ("usage", "selection", "config")
            return exitcodes.USAGE if usage else exitcodes.FAILED
        except KeyboardInterrupt:
            if terminated.is_set():
                print("shoal: terminated", file=sys.stderr)
                return exitcodes.TERMINATED
            print("shoal: interrupted", file=sys.stderr)
            return exitcodes.INTERRUPTED
    except BrokenPipeError:
        _discard_output()
        return exitcodes.BROKEN_PIPE


def _handle_sigterm(terminated: threading.Event) -> Any:
    """Deliver SIGTERM as SIGINT (asyncio turns that into a clean cancel); the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: object) -> None:
        terminated.set()
        signal.raise_signal(signal.SIGINT)

    return signal.signal(signal.SIGTERM, on_term)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _discard_output() -> None:
    """Point a closed stdout/stderr at /dev/null so that the exit flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass  # not a real file (a test's capture): nothing to protect
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
