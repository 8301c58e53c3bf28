"""The ``shoal`` command's exit statuses, named and decided once.

====  =================================================================
0     every node (or the one thing asked) succeeded
1     a node's command or operation failed there (it ran and said no:
      non-zero exit, refused, disk full), a step or an application failed
2     refused before touching a node: usage, selection or configuration
3     some node could not be reached or did not finish in time
      (``unreachable``, ``timeout``, ``hostkey``, ``auth``): what was asked
      did not run there, or its end is unknown; ``-s failed`` reruns them
130   interrupted (Ctrl-C); 141 the output's reader went away (``| head``);
      143 SIGTERM: 128 + the signal, as the shell reports it
====  =================================================================

3 wins over 1 when both happened (pssh puts timeouts and SSH failures before
failed commands the same way): a script that sees 1 knows every node
answered. A follow that Ctrl-C is the way to end (``events --follow``,
``proc logs -f``, ``sweep --every``, ``app monitor``) ends with the status of
what it saw, not 130. ``--json`` changes no status. Handlers return
:func:`for_results` of their per-node results; :func:`for_error` maps an
error that stopped a command. These numbers are kept stable.

(The node agent's own ``serve`` status, "already running", is
:data:`shoal.agent.protocol.EXIT_RUNNING`: the agent and the controller share it.)
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
INTERRUPTED = 128 + signal.SIGINT
BROKEN_PIPE = 128 + signal.SIGPIPE
TERMINATED = 128 + signal.SIGTERM

#: Outcome kinds (``NodeOutcome.kind``) for which the node did not run or finish the work.
NOT_REACHED = frozenset({"unreachable", "timeout", "hostkey", "auth"})

#: Error kinds that refuse a command before it touches a node.
REFUSED = frozenset({"usage", "selection", "config", "inventory"})


def for_results(results: Iterable[Any]) -> int:
    """0, 1 or 3 for per-node outcomes (anything with ``ok`` and ``kind``)."""
    status = OK
    for r in results:
        if r.ok:
            continue
        if r.kind in NOT_REACHED:
            return UNREACHABLE
        status = FAILED
    return status


def for_error(error: Any) -> int:
    """The status for an error (a ShoalError) that stopped the whole command."""
    kind = getattr(error, "kind", "error")
    if kind in REFUSED:
        return USAGE
    if kind in NOT_REACHED or kind == "transport":
        return UNREACHABLE
    return FAILED
