"""How long to wait on a link, from the loss and round-trip time it shows (issue 17).

Fixed worst-case waits make a clean link slow (a dead peer, a firewalled port or
a stalled flow costs the whole wait before the swarm turns elsewhere) and a
lossy one fail (a sound connection is given up while TCP is still
retransmitting). So every wait here is a function of ``loss`` (the share of
segments lost on the path, 0..1, as the controller measures its own SSH link to
the node: :mod:`shoal.transport.tcpinfo`) and ``rto`` (the path's retransmission
timeout in seconds), and on a clean link (``loss`` 0) each is the constant that
held before lossy links were considered:

* a TCP connect waits for :func:`syn_seconds`: Linux sends SYNs at 0, 1, 3, 7,
  15 s; one attempt fails when the SYN or its answer is lost, so we wait for as
  many attempts as make a live peer answer with probability :data:`CONNECT_SURE`
  (2 attempts, 3 s, on a clean link; at most 4, 15 s);
* a silence of a live TCP flow (no byte arrives) lasts while one segment is lost
  again and again, each retransmission after a doubled timeout: :func:`silence_seconds`
  is the silence that ``n`` losses in a row cause, ``n`` such that ``loss ** n``
  is below a given chance, between a floor (the clean link's wait) and a cap.

Stdlib only (the agent imports it; the controller computes the waits with it
and sends them along with each request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Linux's first SYN retransmission timeout (TCP_TIMEOUT_INIT), doubled at each retry.
SYN_RTO = 1.0
#: The least retransmission timeout of a connected flow (Linux's TCP_RTO_MIN).
RTO_MIN = 0.2
#: A live peer answers a connect within :func:`syn_seconds` this often.
CONNECT_SURE = 0.95


def syn_seconds(loss: float, least: int = 2, most: int = 4) -> float:
    """Seconds for enough SYN attempts (``least``..``most``) that a live peer on a
    path losing ``loss`` of its segments answers with probability :data:`CONNECT_SURE`."""
    fail = 1.0 - (1.0 - _share(loss)) ** 2  # the SYN or the SYN-ACK lost
    tries = least
    while tries < most and fail**tries > 1.0 - CONNECT_SURE:
        tries += 1
    return SYN_RTO * (2.0**tries - 1.0)


def silence_seconds(loss: float, rto: float, chance: float, floor: float, cap: float) -> float:
    """The longest silence of a live flow, but for ``chance``: ``n`` losses in a row of
    one segment (``loss ** n <= chance``), each retransmitted after a doubled ``rto``;
    between ``floor`` and ``cap``."""
    loss = _share(loss)
    if loss <= 0.0:
        return floor
    if loss >= 1.0:
        return cap
    losses = math.ceil(math.log(chance) / math.log(loss))
    spell = max(rto, RTO_MIN) * (2.0 ** min(losses, 30) - 1.0)
    return min(cap, max(floor, spell))


def _share(loss: float) -> float:
    return min(1.0, max(0.0, loss)) if math.isfinite(loss) else 1.0


@dataclass(frozen=True)
class FetchWaits:
    """The waits of one chunk fetch: TCP connect, TLS handshake, bytes stopping."""

    connect: float
    handshake: float
    stall: float

    def wire(self) -> dict[str, float]:
        return {"connect": self.connect, "handshake": self.handshake, "stall": self.stall}


#: A clean link's waits (the constants these replace): connect 5 s, TLS 5 s, stall 10 s.
CLEAN_MARGIN = 2.0
STALL_FLOOR = 10.0
STALL_CAP = 30.0
#: The chance of a live flow's stall outlasting :attr:`FetchWaits.stall`.
STALL_CHANCE = 1e-3


def fetch_waits(loss: float, rto: float = RTO_MIN) -> FetchWaits:
    """The waits of a fetch over a path that loses ``loss`` (two nodes' links: combine
    them with :func:`path_loss`)."""
    connect = syn_seconds(loss) + CLEAN_MARGIN
    stall = silence_seconds(loss, rto, STALL_CHANCE, STALL_FLOOR, STALL_CAP)
    return FetchWaits(connect, connect, stall)


def probe_seconds(loss: float) -> float:
    """How long ``content.begin`` tries to connect to the controller before the push
    tunnels through SSH instead (3 s on a clean link, 7 s at most: a tunnel works)."""
    return syn_seconds(loss, most=3)


def path_loss(*links: float) -> float:
    """The loss of a path crossing each of ``links`` (their losses)."""
    kept = 1.0
    for loss in links:
        kept *= 1.0 - _share(loss)
    return 1.0 - kept


def seconds(value: object, default: float) -> float:
    """A wait sent by the controller, bounded to 1..120 s; ``default`` when it is
    missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return min(120.0, max(1.0, float(value)))


def from_wire(value: object, default: FetchWaits) -> FetchWaits:
    """Waits sent by the controller ({connect, handshake, stall}: :func:`seconds` each),
    ``default``'s for what is missing or malformed."""
    if not isinstance(value, dict):
        return default
    return FetchWaits(
        seconds(value.get("connect"), default.connect),
        seconds(value.get("handshake"), default.handshake),
        seconds(value.get("stall"), default.stall),
    )


#: The chance of a live SSH link's silence outlasting its keepalives' tolerance (it
#: is tested again every keepalive interval for as long as the connection lives).
KEEPALIVE_CHANCE = 1e-4
#: The longest silence tolerated however lossy the link (OpenSSH's LoginGraceTime).
KEEPALIVE_CAP = 120.0


def keepalive_count(loss: float, rto: float, interval: float, count: int) -> int:
    """Unanswered keepalives (every ``interval`` s) after which a link that loses ``loss``
    is dead: ``count`` on a clean link (a dead node noticed as fast as before), more as
    the link's own retransmission spells grow (up to :data:`KEEPALIVE_CAP` of silence)."""
    if interval <= 0 or loss <= 0:
        return count
    floor = interval * (count + 1)
    tolerate = silence_seconds(loss, rto, KEEPALIVE_CHANCE, floor, max(floor, KEEPALIVE_CAP))
    return max(count, math.ceil(tolerate / interval) - 1)
