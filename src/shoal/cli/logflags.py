"""The CLI's logging: ``-v`` (INFO), ``-vv`` (DEBUG, asyncssh's too), ``--debug``, ``--log-file``.

The library logs through per-subsystem loggers under ``shoal`` (``shoal.transport``,
``shoal.fanout``, ...) and installs only a NullHandler (:mod:`shoal.logsetup`);
this adapter decides where records go. Without a flag, warnings and errors reach
stderr as ``shoal: warning: ...``; ``-v`` adds INFO (connect retries, host-key
decisions, agent installs, push sources, reconcile actions), ``-vv`` DEBUG and
asyncssh's own log at its debug level 2 (which keys and methods were tried),
``--debug`` is ``-vv`` plus full tracebacks for unexpected errors. ``--log-file
PATH`` appends every record (DEBUG, timestamped) to PATH whatever ``-v`` says.
The flags are taken after the command word too (``shoal run -v ...``, as
``pssh -v``/``clush -v`` users type them): :func:`accept_after_command`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from shoal.errors import UsageError

_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time of the record
    (main.py wraps stderr in an escaping stream after logging is set up)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Short(logging.Formatter):
    """``shoal: warning: text``; verbose: ``shoal.transport.ssh: debug: text``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        who = record.name if self.verbose else "shoal"
        text = f"{who}: {record.levelname.lower()}: {record.message}"
        if record.exc_info and self.verbose:
            text += "\n" + self.formatException(record.exc_info)
        return text


def accept_after_command(parser: argparse.ArgumentParser) -> None:
    """``-v``, ``--debug``, ``--log-file`` in every subcommand's parser too (where it
    uses none of them itself); given there, they set what the global flags set."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
            taken = sub._option_string_actions
            if "-v" not in taken and "--verbose" not in taken:
                sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                                 help="as shoal -v (before the command)")  # fmt: skip
            if "--debug" not in taken:
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="as shoal --debug")  # fmt: skip
            if "--log-file" not in taken:
                sub.add_argument("--log-file", metavar="PATH", default=argparse.SUPPRESS,
                                 help="as shoal --log-file")  # fmt: skip
            accept_after_command(sub)


def configure(verbosity: int, debug: bool, log_file: str | None) -> list[logging.Handler]:
    """Send the ``shoal`` loggers' records where the flags say; the handlers added.

    UsageError when the log file cannot be opened (before anything ran).
    """
    if debug:
        verbosity = max(verbosity, 2)
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity else logging.WARNING
    stderr = _Stderr()
    stderr.setLevel(level)
    stderr.setFormatter(_Short(verbose=verbosity > 0))
    handlers: list[logging.Handler] = [stderr]
    if log_file:
        try:
            file = logging.FileHandler(log_file, encoding="utf-8", delay=False)
        except OSError as exc:
            raise UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from None
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter(_FILE_FORMAT))
        handlers.append(file)
    shoal = logging.getLogger("shoal")
    shoal.setLevel(logging.DEBUG if log_file else level)
    for handler in handlers:
        shoal.addHandler(handler)
    if verbosity >= 2:
        _asyncssh_debug(handlers)
    return handlers


def _asyncssh_debug(handlers: list[logging.Handler]) -> None:
    """asyncssh's logger at DEBUG with its debug level 2 (auth methods, keys, channels)."""
    import asyncssh

    asyncssh.set_debug_level(2)
    log = logging.getLogger("asyncssh")
    log.setLevel(logging.DEBUG)
    log.propagate = False  # the root logger's last-resort handler would print it twice
    for handler in handlers:
        log.addHandler(handler)


def remove(handlers: list[logging.Handler]) -> None:
    """Undo :func:`configure` (``main()`` is called more than once in one process by tests)."""
    for name in ("shoal", "asyncssh"):
        log = logging.getLogger(name)
        for handler in handlers:
            log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
    logging.getLogger("asyncssh").propagate = True
    if "asyncssh" in sys.modules:
        sys.modules["asyncssh"].set_debug_level(1)  # its default
    for handler in handlers:
        handler.close()
