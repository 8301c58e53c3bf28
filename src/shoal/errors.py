"""The one exception root of Shoal and its tree.

Every error the library raises derives from :class:`ShoalError`; third-party
errors (asyncssh, OSError from sockets, sqlite3) are translated at the layer
that meets them, so adapters catch one type and print ``str(error)``, which is
always a single line that says what went wrong and where.

    ShoalError
    ├── UsageError              bad input from the user (arguments, values)
    │   └── RequestError            a request the service will not read (XML-RPC body, parameter)
    ├── ConfigError             a configuration file or setting is invalid
    ├── StateError              the controller's SQLite state cannot be used
    ├── InventoryError          an inventory cannot be read or imported
    ├── SelectionError          a selection expression cannot be evaluated
    │   ├── SelectionSyntaxError    parse error, with the column and a caret
    │   ├── NodeSetParseError       a node-set pattern is malformed (column within it)
    │   ├── UnknownNameError        unknown group, plan or node
    │   ├── PlanCycleError          plans that refer to each other in a loop
    │   └── EmptySelectionError     a command needs nodes and none matched
    ├── LabError                the local lab cannot be brought up or changed
    ├── TransportError          one node could not be reached or commanded
    │   ├── ConnectError            unreachable: refused, no route, timed out (retryable)
    │   ├── HostKeyError            host key unknown or changed: refused
    │   ├── AuthError               authentication failed
    │   ├── CommandTimeout          the remote command overran its timeout
    │   └── OperationError          the node answered, the operation failed (disk full...)
    ├── LocalError              the controller's own side failed (closed output pipe,
    │                           unwritable or unsafe local destination): never a node's
    │                           fault, so it never marks a node failed
    ├── ServiceError            the local service (shoal serve) cannot be used: already
    │                           running, not answering, gone in the middle of a request
    ├── AgentError              the node agent failed or refused a request
    │   ├── AgentNotInstalled       the working area holds no agent
    │   ├── AgentNotRunning         nothing listens on the agent's socket
    │   ├── AgentLinkBroken         the stream to the agent broke mid-request (retryable)
    │   ├── AgentTimeout            the agent did not answer a request in time (retryable)
    │   └── VersionMismatch         controller and agent protocol versions differ
    ├── ContentError            a push, manifest or chunk is invalid
    │   └── ChunkFetchError         a node got its chunks from no source (retryable)
    └── AppError                an application could not be brought up or kept up
        ├── AcquireError            too few nodes qualify for a component (nothing changed)
        ├── AppAborted              a component with policy abort lost a node: stopped
        └── MemberFailed            one member node failed its configuration or its block

``retryable`` (a class attribute, False unless the tree says so) tells whoever
decides on a retry that the same operation, tried again, may succeed: the
failure was a link that could not be made or broke, not a refusal, a fault of
the input or of the node. The scheduler retries a connection on it
(``--retries``); a push gives such nodes another round. Nothing decides a
retry by reading a message.

The node agent (``shoal.agent``) imports nothing of the controller's, so its
own exceptions (``ProtocolError``, ``ManifestError``, ``ChunkError``,
``AreaError``) stay there; the controller translates them where it meets them
(:mod:`shoal.agentlink.agentclient`, :mod:`shoal.content.scan`,
:mod:`shoal.transport.sftp`), and the agent's refusals reach the controller as
text in a reply, raised as :class:`AgentError`.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Root of every error Shoal raises. ``str()`` is one line.

    ``node`` names the node the error concerns, when it concerns one; it is
    never part of the message, so a per-node result shows the message beside
    the node and an adapter that shows the error alone writes
    :meth:`located` (``node: message``).
    """

    #: Short machine-readable kind used in per-node results and JSON output.
    kind: str = "error"
    #: Trying the same operation again may succeed (see the module docstring).
    retryable: bool = False
    #: The node the error concerns (None: none, or not known).
    node: str | None = None

    def __init__(self, *args: object, node: str | None = None) -> None:
        super().__init__(*args)
        if node is not None:
            self.node = node

    def located(self) -> str:
        """``node: message`` when the error concerns a node, else the message."""
        return f"{self.node}: {self}" if self.node else str(self)


class UsageError(ShoalError):
    kind = "usage"


class RequestError(UsageError):
    """A request the service will not read: an XML-RPC body that is not a call or holds a
    DTD, a parameter of the wrong type, an unknown method."""


class ConfigError(ShoalError):
    kind = "config"


class StateError(ShoalError):
    kind = "state"


class InventoryError(ShoalError):
    kind = "inventory"


class SelectionError(ShoalError):
    kind = "selection"


class SelectionSyntaxError(SelectionError):
    """A selection expression does not parse.

    ``str()`` stays one line; :meth:`pointer` renders the expression with a
    caret under the offending column for adapters that can show two lines.
    """

    def __init__(self, expression: str, column: int, expected: str) -> None:
        self.expression = expression
        self.column = column
        self.expected = expected
        super().__init__(
            f"selection syntax error at column {column + 1}: expected {expected} in {expression!r}"
        )

    def pointer(self) -> str:
        return f"  {self.expression}\n  {' ' * self.column}^"


class NodeSetParseError(SelectionError):
    """A node-set string is malformed; ``column`` is relative to the string."""

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        super().__init__(message)


class UnknownNameError(SelectionError):
    pass


class PlanCycleError(SelectionError):
    pass


class EmptySelectionError(SelectionError):
    pass


class LabError(ShoalError):
    kind = "lab"


class TransportError(ShoalError):
    """A failure that concerns one node; ``node`` names it when known."""

    kind = "transport"

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message, node=node)


class ConnectError(TransportError):
    kind = "unreachable"
    retryable = True


class HostKeyError(TransportError):
    kind = "hostkey"


class AuthError(TransportError):
    kind = "auth"


class CommandTimeout(TransportError):
    kind = "timeout"


class OperationError(TransportError):
    """The node was reached but the operation failed there: disk full, missing file."""

    kind = "failed"


class LocalError(ShoalError):
    """A failure on the controller's side of a per-node operation.

    A closed output pipe, a local destination that cannot be written or would
    escape the directory the user named: the node did nothing wrong, so health
    recording never counts it against the node. ``node`` names the node whose
    operation it interrupted, when known; the message is about the local side.
    """

    kind = "local"

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message, node=node)


class ServiceError(ShoalError):
    """The local service cannot be used (already running, not answering, gone mid-request)."""

    kind = "service"


class AgentError(ShoalError):
    kind = "agent"


class AgentNotInstalled(AgentError):
    """The working area holds no agent."""


class AgentNotRunning(AgentError):
    """Nothing listens on the agent's socket (not started, or it died)."""


class AgentLinkBroken(AgentError):
    """The stream to a running agent broke or closed in the middle of a request."""

    retryable = True


class AgentTimeout(AgentError):
    """A request got no answer within its limit: a lossy or stalled link, or a hung agent.

    Retryable: on a new connection the same request may be answered (a push gives the
    node another round); a hung agent fails that round too, and the node is reported.
    """

    retryable = True


class VersionMismatch(AgentError):
    kind = "version"


class ContentError(ShoalError):
    kind = "content"


class ChunkFetchError(ContentError):
    """A node could not fetch its chunks from any source the swarm offered it.

    The links between nodes failed (closed, timed out, a source that lied), not the
    node's own disk: a new round, with the nodes that finished as sources, may succeed.
    """

    retryable = True


class AppError(ShoalError):
    kind = "app"


class AcquireError(AppError):
    """Not enough nodes qualify for a component (nothing was changed)."""


class AppAborted(AppError):
    """A component with policy ``abort`` lost a node: the application was stopped."""


class MemberFailed(AppError):
    """A member node failed: a step, a service, an install step, its connection.

    The runner applies the component's failure policy to it; the message
    starts with the node's name.
    """
