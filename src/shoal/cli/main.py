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
status is named in :mod:`.exitcodes`), wherever the interrupt or the closed
pipe meets the command (parsing, imports, the handler, the exit flush). An
error that stops a command is one ``shoal: error:`` line (with ``--json`` one
JSON object, :mod:`.render`'s convention), its status
:func:`.exitcodes.for_error`.

Settings (:mod:`shoal.settings`: config files, ``SHOAL_*`` variables) become the
defaults of the flags they name before the command line is parsed, so a flag
always wins; ``args.settings`` carries them to handlers. ``-v``/``--debug``/
``--log-file`` set up logging (:mod:`.logflags`); an unexpected exception is one
line (its traceback with ``--debug``).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # the module is on every start-up path: no typing, no argparse here
if TYPE_CHECKING:
    import argparse
    import threading
    from collections.abc import Sequence
    from typing import Any

    from shoal.errors import ShoalError

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
    "depot": "depotcmds",
    "logs": "logscmds",
    "push": "pushcmds",
    "rollback": "pushcmds",
    "versions": "pushcmds",
    "rollout": "rolloutcmds",
    "audit": "auditcmds",
    "serve": "servecmds",
    "config": "configcmds",
    "completion": "completion",
    "man": "completion",
}

#: Global options that take a value (skipped when finding the command word).
_VALUED_GLOBALS = frozenset({"--log-file"})

#: Commands whose process ends right after the handler: everything they write is
#: flushed and every state change committed, so interpreter teardown (~50 ms of
#: garbage collection and module finalisation after 32 SSH connections) is skipped.
FAST_EXIT = frozenset({"run", "cp"})

DESCRIPTION = "Shoal: deploy and run distributed applications on many machines."


def _build_parser(modules: Sequence[str]) -> argparse.ArgumentParser:
    import argparse
    import importlib

    from . import logflags

    parser = argparse.ArgumentParser(prog="shoal", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--raw",
        action="store_true",
        help="print what nodes send as it is, terminal escapes included (default on a "
        "terminal: control characters are shown escaped, e.g. \\x1b)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what happens: -v connects, retries, host keys, agents, push sources; "
        "-vv debug, asyncssh's too (keys and methods tried)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="debug log, and tracebacks of unexpected errors"
    )
    parser.add_argument("--log-file", metavar="PATH", help="append the full debug log to PATH")
    parser.add_argument(
        "--no-service",
        action="store_true",
        help="go to the nodes directly even when shoal serve runs (also SHOAL_NO_SERVICE=1)",
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
    _describe(parser)
    logflags.accept_after_command(parser)
    from .render import add_no_json

    add_no_json(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every command's ``--help`` opens with a description: its one-line help when it has none."""
    import argparse

    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            if not sub.description and helps.get(name):
                text = str(helps[name]).replace("%%", "%")  # help is %-formatted, this not
                sub.description = text[:1].upper() + text[1:] + "."
            _describe(sub)


def _version() -> str:
    from shoal import __version__

    return f"shoal {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process entry point: shoal run through the service, if it can
        from .fastpath import answer

        if (code := answer(sys.argv[1:])) is not None:
            return code
    from . import exitcodes

    try:
        return _main(argv)
    except KeyboardInterrupt:  # before or after the handler: parsing, imports, exit flush
        try:
            print("shoal: interrupted", file=sys.stderr)
        except OSError:
            pass  # no terminal left to tell
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        _discard_output()
        return exitcodes.BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = _command_word(args_list)
    modules = [COMMANDS[first]] if first in COMMANDS else list(COMMANDS.values())
    parser = _build_parser(modules)
    args = _parse_with_settings(parser, args_list)
    if args is None:
        from . import exitcodes

        return exitcodes.USAGE  # the settings or the log file refused
    try:
        return _main_parsed(args, argv, first)
    finally:
        from . import logflags

        logflags.remove(args.log_handlers)


def _command_word(args_list: Sequence[str]) -> str | None:
    """The first word that is neither an option nor a global option's value."""
    skip = False
    for arg in args_list:
        if skip:
            skip = False
        elif arg in _VALUED_GLOBALS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _parse_with_settings(
    parser: argparse.ArgumentParser, args_list: list[str]
) -> argparse.Namespace | None:
    """Parse with the settings as flag defaults, logging set up; None (told) if refused."""
    from shoal.errors import ShoalError

    from . import configcmds, logflags

    try:
        settings = configcmds.apply_settings(parser)
        args = _parse(parser, args_list)
        args.settings = settings
        args.log_handlers = logflags.configure(args.verbose, args.debug, args.log_file)
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return None
    return args


def _parse(parser: argparse.ArgumentParser, args_list: list[str]) -> argparse.Namespace:
    """``parse_args``; under ``--json`` a refusal is one error object on stderr (status 2)."""
    if "--json" not in args_list:
        return parser.parse_args(args_list)
    import contextlib
    import io

    told = io.StringIO()
    try:
        with contextlib.redirect_stderr(told):
            return parser.parse_args(args_list)
    except SystemExit as exc:
        text = told.getvalue()
        if exc.code == 2 and "error: " in text:  # usage line, then "PROG: error: MESSAGE"
            from shoal.errors import UsageError

            from .render import print_error

            print_error(UsageError(text.rsplit("error: ", 1)[1].strip()))
        else:
            sys.stderr.write(text)
        raise


def _main_parsed(args: argparse.Namespace, argv: Sequence[str] | None, first: str | None) -> int:
    import signal
    import threading

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
    from shoal.errors import ShoalError

    from . import exitcodes

    try:
        try:
            code = int(args.handler(args) or 0)
            sys.stdout.flush()
            return code
        except ShoalError as exc:
            return report(exc, as_json=getattr(args, "json", False))
        except KeyboardInterrupt:
            if terminated.is_set():
                print("shoal: terminated", file=sys.stderr)
                return exitcodes.TERMINATED
            print("shoal: interrupted", file=sys.stderr)
            return exitcodes.INTERRUPTED
        except BrokenPipeError:
            raise
        except Exception as exc:  # a bug: one line; the traceback with --debug, in the log
            if args.debug:
                raise
            return report_unexpected(exc)
    except BrokenPipeError:
        _discard_output()
        return exitcodes.BROKEN_PIPE


def report(exc: ShoalError, *, as_json: bool) -> int:
    """The one ``shoal: error:`` line (a selection's caret under it; with ``--json`` one
    JSON object) of an error that stopped a command, on stderr; its exit status. The
    service's fast path (:mod:`shoal.service.fastpathroute`) reports with this too."""
    from shoal.errors import SelectionSyntaxError
    from shoal.logsetup import logger

    from . import exitcodes

    logger("shoal.cli").debug("%s", type(exc).__name__, exc_info=True)
    if as_json:
        from .render import print_error

        print_error(exc)  # the JSON convention: one object on stderr
    elif isinstance(exc, SelectionSyntaxError):
        print(f"shoal: error: {exc}", file=sys.stderr)
        print(exc.pointer(), file=sys.stderr)
    else:
        print(f"shoal: error: {exc.located()}", file=sys.stderr)
    return exitcodes.for_error(exc)


def report_unexpected(exc: BaseException) -> int:
    """A bug's one line on stderr (the traceback in the debug log); FAILED."""
    from shoal.logsetup import logger

    from . import exitcodes

    logger("shoal.cli").debug("unexpected error", exc_info=True)
    print(
        f"shoal: internal error: {type(exc).__name__}: {exc} "
        "(rerun with --debug for the traceback)",
        file=sys.stderr,
    )
    return exitcodes.FAILED


def _handle_sigterm(terminated: threading.Event) -> Any:
    """Deliver SIGTERM as SIGINT (asyncio turns that into a clean cancel); the old handler."""
    import signal
    import threading

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
