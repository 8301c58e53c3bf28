"""The ``shoal`` command's exit statuses, named once.

0 every node (or the one thing asked) succeeded; 1 a node or step failed;
2 the command was refused before it touched a node (usage, selection or
configuration error); 128 + N when signal N ended it, as the shell reports
it: 130 Ctrl-C, 141 the output's reader went away, 143 SIGTERM. Handlers
return ``0 if results.ok else 1`` as plain numbers; every other status is
named here and used from here.

(The node agent's own ``serve`` status, "already running", is
:data:`shoal.agent.protocol.EXIT_RUNNING`: the agent and the controller share it.)
"""

from __future__ import annotations

import signal

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 128 + signal.SIGINT
BROKEN_PIPE = 128 + signal.SIGPIPE
TERMINATED = 128 + signal.SIGTERM
