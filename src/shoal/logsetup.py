"""The library's loggers: one per subsystem under ``shoal``, silent until an adapter says.

Every module that logs takes ``log = logger(__name__)`` (``shoal.transport.ssh``
is a child of ``shoal.transport``, so an adapter can tune a whole subsystem).
Importing this module puts a NullHandler on ``shoal``, so that a program using
the library without configuring logging sees nothing on stderr from it (the
standard library's last-resort handler would print warnings): the library
never prints. The CLI's ``-v``/``--debug``/``--log-file`` are in
:mod:`shoal.cli.logflags`.
"""

from __future__ import annotations

import logging

logging.getLogger("shoal").addHandler(logging.NullHandler())


def logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (pass ``__name__``)."""
    return logging.getLogger(name)
