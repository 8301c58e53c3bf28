"""What a TCP connection shows of its path: loss and retransmission timeout (issue 17).

Linux keeps, per socket, the segments it sent and retransmitted and its smoothed
round-trip time (``getsockopt(TCP_INFO)``, ``struct tcp_info`` of
``linux/tcp.h``). The controller reads them from its SSH connection to a node:
the loss of that node's link as our own traffic met it, which
:mod:`shoal.agent.linkwaits` turns into waits (keepalive tolerance, fetch
timeouts). None where it cannot be read (not Linux, not a TCP socket, a
connection through a jump host's channel): callers then wait as on a clean link.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

# offsets in struct tcp_info (stable ABI: fields are only ever appended)
_RETRANSMITS = 2  # tcpi_retransmits: timeouts in a row on the oldest unacknowledged data
_RTT = 68  # tcpi_rtt, µs (after 8 bytes of u8 fields and 15 u32 fields)
_RTTVAR = 72
_TOTAL_RETRANS = 100
_DATA_SEGS_OUT = 156  # since Linux 4.6
_SIZE = 160
#: Segments sent before a share of retransmitted ones is taken as the link's loss
#: (fewer count as this many: one retransmission early on is not a lossy link).
MIN_SEGMENTS = 20


@dataclass(frozen=True)
class LinkState:
    """One connection's path as TCP measured it so far."""

    loss: float  # retransmitted (but the current streak) / data segments sent (0..1)
    rto: float  # seconds: srtt + 4 rttvar, as TCP would time out a segment
    retransmitted: int
    sent: int
    streak: int = 0  # retransmission timeouts in a row right now: the peer answers nothing


def link_state(sock: Any) -> LinkState | None:
    """The path ``sock`` (a TCP socket, or asyncio's wrapper of one) shows; None when
    TCP_INFO cannot be read."""
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, _SIZE)
    except (OSError, AttributeError, TypeError):
        return None
    if len(raw) < _SIZE:
        return None
    return parse(raw)


def parse(raw: bytes) -> LinkState:
    """A LinkState from the bytes of a ``struct tcp_info``."""
    (rtt,) = struct.unpack_from("=I", raw, _RTT)
    (rttvar,) = struct.unpack_from("=I", raw, _RTTVAR)
    (retrans,) = struct.unpack_from("=I", raw, _TOTAL_RETRANS)
    (sent,) = struct.unpack_from("=I", raw, _DATA_SEGS_OUT)
    streak = raw[_RETRANSMITS]
    # the timeouts going on now are left out: a peer that died shows those alone
    loss = min(1.0, max(0, retrans - streak) / max(sent, MIN_SEGMENTS))
    return LinkState(loss, (rtt + 4 * rttvar) / 1e6, retrans, sent, streak)
