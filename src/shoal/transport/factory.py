"""The default transport: SSH, with the host-key policy and keepalive a caller chose.

Every library entry point that is given no transport (a fan-out, ``app up``,
the CLI's commands) builds this one. It takes any settings object with
``host_keys`` and ``keepalive`` (:class:`shoal.fanout.FanoutOptions` is one),
so this layer knows nothing of the layers above. asyncssh is imported only when
a transport is built, never when this module is imported (the CLI starts its
TCP connects before that; see :mod:`.preconnect`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .base import Transport

if TYPE_CHECKING:
    import socket


class TransportSettings(Protocol):
    #: ``verify`` (known_hosts only) or ``accept-new``
    host_keys: str
    #: seconds between SSH keepalives
    keepalive: float


def make_transport(
    settings: TransportSettings, preconnected: dict[str, socket.socket] | None = None
) -> Transport:
    """An :class:`~shoal.transport.ssh.SSHTransport`; ``preconnected`` sockets are used first."""
    from .ssh import HostKeyPolicy, SSHTransport

    return SSHTransport(
        host_keys=HostKeyPolicy(settings.host_keys),
        preconnected=preconnected,
        keepalive=settings.keepalive,
    )
