"""Typed lab configuration, input validation and the names a lab gives to things.

Owns everything about a lab that is pure: parsing ``--rate``/``--delay``/``--loss``
values into typed :class:`Shaping` records, validating node counts and lab
names, and :class:`Naming`, which derives every kernel object name (network
namespace, veth, bridge port, nft table) and every address of a lab from its
name and address slot. Nothing here touches the system, so all of it is unit
tested.

Naming scheme (kernel interface names must fit Linux's 15-character limit):

* ``shl-NAME``        the controller's veth in the root namespace (NAME ≤ 11 chars);
* ``shl-NAME-sw``     the switch namespace: bridge ``br0``, one port ``nK`` per
                      node and ``ctl`` for the controller's link;
* ``shl-NAME-nK``     node K's namespace; its end of the link is ``eth0``.

Leftovers are discovered by matching these exact patterns, so lab ``a`` never
claims lab ``a-n1``'s namespaces, and nothing outside the ``shl-`` prefix is
ever touched.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace

from shoal.errors import UsageError

#: The largest lab: one /22 per lab holds the controller (.1) and 1000 nodes.
MAX_NODES = 1000
#: Every lab takes one /22 block of this private /16 (64 labs side by side).
DEFAULT_NET = "10.213.0.0/16"
BLOCK_PREFIX = 22
PREFIX = "shl-"
MAX_NAME = 15 - len(PREFIX)  # the root-namespace veth is PREFIX + name
DEFAULT_NAME = "default"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_NODE_RE = re.compile(r"^n([1-9][0-9]{0,8})$")  # digits bounded: int() of 5,000 of them raises

# tc's rate units, with tc's meaning: "bit" units are bits/s, "bps" units bytes/s.
_RATE_UNITS: dict[str, int] = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "tbps": 8 * 10**12,
}
_TIME_UNITS: dict[str, int] = {"us": 1, "ms": 1000, "s": 1_000_000}
_NUM_UNIT_RE = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,15})?)\s*([a-zA-Z]*)\s*$")  # finite

MIN_RATE = 8_000  # 8 kbit/s: below this tbf cannot hold one full packet sensibly
MAX_RATE = 100 * 10**9
MAX_DELAY_US = 60_000_000
#: Up to this many nodes every node gets a permanent neighbour (ARP) entry for
#: every other node. The kernel's dynamic neighbour table is global to all
#: namespaces (``gc_thresh3``, 1024 by default), so a full mesh of dynamic
#: entries would overflow it at ~32 nodes talking all-to-all; permanent entries
#: are exempt. Controller⇄node entries are always permanent.
MESH_MAX = 256
#: Loss is kept in basis points (1/100 of a percent): nft draws from 0..9999.
LOSS_SCALE = 10_000


@dataclass(frozen=True)
class Shaping:
    """Link conditions of one node's link (or the controller's), per direction.

    ``rate_bps`` limits each direction (upload and download) to that many
    bits/s; ``delay_us`` adds that one-way latency in each direction (needs
    the netem qdisc); ``loss_bp`` drops that many packets per 10,000 in each
    direction. ``None`` (or 0 loss) means unshaped.
    """

    rate_bps: int | None = None
    delay_us: int | None = None
    loss_bp: int = 0

    @property
    def empty(self) -> bool:
        return self.rate_bps is None and not self.delay_us and not self.loss_bp

    @property
    def tc_empty(self) -> bool:
        return self.rate_bps is None and not self.delay_us

    def describe(self) -> str:
        """Human summary such as ``rate 100mbit, loss 1%`` (``-`` when unshaped)."""
        parts = []
        if self.rate_bps is not None:
            parts.append(f"rate {format_rate(self.rate_bps)}")
        if self.delay_us:
            parts.append(f"delay {format_delay(self.delay_us)}")
        if self.loss_bp:
            parts.append(f"loss {format_loss(self.loss_bp)}")
        return ", ".join(parts) or "-"

    def to_json(self) -> dict[str, int | None]:
        return {"rate_bps": self.rate_bps, "delay_us": self.delay_us, "loss_bp": self.loss_bp}

    @classmethod
    def from_json(cls, data: dict[str, int | None] | None) -> Shaping:
        data = data or {}
        return cls(
            rate_bps=data.get("rate_bps"),
            delay_us=data.get("delay_us"),
            loss_bp=int(data.get("loss_bp") or 0),
        )


@dataclass(frozen=True)
class ShapeChange:
    """A live change: fields left ``None`` keep their current value.

    ``clear_*`` removes that condition (from ``--rate none`` and the like).
    """

    rate_bps: int | None = None
    delay_us: int | None = None
    loss_bp: int | None = None
    clear_rate: bool = False
    clear_delay: bool = False

    @property
    def empty(self) -> bool:
        return (
            self.rate_bps is None
            and self.delay_us is None
            and self.loss_bp is None
            and not self.clear_rate
            and not self.clear_delay
        )

    def apply(self, current: Shaping) -> Shaping:
        new = current
        if self.clear_rate:
            new = replace(new, rate_bps=None)
        elif self.rate_bps is not None:
            new = replace(new, rate_bps=self.rate_bps)
        if self.clear_delay:
            new = replace(new, delay_us=None)
        elif self.delay_us is not None:
            new = replace(new, delay_us=self.delay_us)
        if self.loss_bp is not None:
            new = replace(new, loss_bp=self.loss_bp)
        return new


@dataclass(frozen=True)
class LabSpec:
    """What ``shoal lab up`` was asked for, validated."""

    n: int
    name: str = DEFAULT_NAME
    shaping: Shaping = Shaping()
    controller: Shaping = Shaping()
    rootless: bool = False
    net: str = DEFAULT_NET
    #: A directory under each node's home that sessions get as ``$HOME`` and start
    #: in (e.g. ``"it's home"``: a home with odd characters, for tests); "" = none.
    home: str = ""
    #: The last ``site`` nodes sit behind a gateway, unreachable from the
    #: controller except through it (:mod:`shoal.lab.site`); 0 = no site.
    site: int = 0

    def __post_init__(self) -> None:
        validate_count(self.n)
        validate_name(self.name)
        parse_net(self.net)
        validate_home(self.home)
        validate_site(self.n, self.site, self.rootless)


_NONE_WORDS = frozenset({"none", "off", "no"})


def is_none_word(text: str) -> bool:
    return text.strip().lower() in _NONE_WORDS


def validate_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise UsageError(f"lab size must be a whole number, got {n!r}")
    if n < 1 or n > MAX_NODES:
        raise UsageError(f"lab size must be between 1 and {MAX_NODES} nodes, got {n}")
    return n


#: Site nodes fit in the last /24 of the lab's /22; the others in the first three.
MAX_SITE = 250
MAX_NODES_WITH_SITE = 3 * 256 - 2


def validate_site(n: int, site: int, rootless: bool = False) -> int:
    """``site`` if a lab of ``n`` nodes can put that many behind a gateway."""
    if isinstance(site, bool) or not isinstance(site, int) or site < 0:
        raise UsageError(f"--site must be a whole number of nodes, got {site!r}")
    if not site:
        return site
    if rootless:
        raise UsageError("--site needs a root lab (network namespaces), not --rootless")
    if site >= n:
        raise UsageError(f"--site {site} leaves no gateway: a lab of {n} needs --site < {n}")
    if site > MAX_SITE or n > MAX_NODES_WITH_SITE:
        raise UsageError(
            f"--site: at most {MAX_SITE} site nodes in a lab of at most "
            f"{MAX_NODES_WITH_SITE}, got {site} of {n}"
        )
    return site


def parse_count(text: str) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        raise UsageError(f"lab size must be a whole number, got {text!r}") from None
    return validate_count(n)


def validate_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not _NAME_RE.match(name):
        raise UsageError(
            f"bad lab name {name!r}: use 1-{MAX_NAME} characters a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return name


def validate_home(home: str) -> str:
    """``home`` if it is "" or a relative directory of printable characters other
    than ``"``, ``\\`` and ``%`` (which sshd_config does not carry plainly)."""
    bad = any(p in ("", ".", "..") for p in home.split("/")) or any(
        c in '"\\%' or not c.isprintable() for c in home
    )
    if home and bad:
        raise UsageError(
            f"bad lab home {home!r}: use a relative directory without '.' or '..' parts "
            "and without '\"', '\\', '%' or control characters"
        )
    return home


def node_index(node: str) -> int:
    """``'n12'`` → 12; UsageError for anything that is not a node name."""
    m = _NODE_RE.match(node)
    if not m:
        raise UsageError(f"bad node name {node!r}: lab nodes are named n1, n2, ...")
    return int(m.group(1))


def parse_rate(text: str) -> int:
    """``'100mbit'`` → 100_000_000 bits/s, with tc's units (``mbps`` = megabytes/s)."""
    m = _NUM_UNIT_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or not unit:
        raise UsageError(f"bad rate {text!r}: expected a number and a unit such as 100mbit")
    if unit not in _RATE_UNITS:
        known = ", ".join(_RATE_UNITS)
        raise UsageError(f"bad rate {text!r}: unknown unit {unit!r} (known: {known})")
    bits = round(float(m.group(1)) * _RATE_UNITS[unit])
    if bits < MIN_RATE or bits > MAX_RATE:
        raise UsageError(
            f"bad rate {text!r}: must be between {format_rate(MIN_RATE)} "
            f"and {format_rate(MAX_RATE)}"
        )
    return bits


def format_rate(bps: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale and bps % scale == 0:
            return f"{bps // scale}{unit}"
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def parse_delay(text: str) -> int:
    """``'20ms'`` → 20000 microseconds (units us, ms, s)."""
    m = _NUM_UNIT_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or not unit:
        raise UsageError(f"bad delay {text!r}: expected a number and a unit such as 20ms")
    if unit not in _TIME_UNITS:
        raise UsageError(f"bad delay {text!r}: unknown unit {unit!r} (known: us, ms, s)")
    us = round(float(m.group(1)) * _TIME_UNITS[unit])
    if us < 1 or us > MAX_DELAY_US:
        raise UsageError(f"bad delay {text!r}: must be between 1us and 60s")
    return us


def format_delay(us: int) -> str:
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    if us >= 1000:
        return f"{us / 1000:g}ms"
    return f"{us}us"


def parse_loss(text: str) -> int:
    """``'1%'`` or ``'1'`` → 100 basis points; percent from 0 to 100, step 0.01."""
    raw = text.strip()
    num = raw[:-1].strip() if raw.endswith("%") else raw
    try:
        pct = float(num)
    except ValueError:
        raise UsageError(f"bad loss {text!r}: expected a percentage such as 1% or 0.5%") from None
    if not 0 <= pct <= 100 or pct != pct:
        raise UsageError(f"bad loss {text!r}: must be between 0% and 100%")
    bp = round(pct * 100)
    if pct > 0 and bp == 0:
        raise UsageError(f"bad loss {text!r}: the smallest loss is 0.01%")
    return bp


def format_loss(bp: int) -> str:
    return f"{bp / 100:g}%"


def parse_net(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"bad lab network {text!r}: {exc}") from None
    if net.prefixlen > BLOCK_PREFIX:
        raise UsageError(f"bad lab network {text!r}: needs at least a /{BLOCK_PREFIX}")
    return net


def lab_net() -> str:
    """The /16 labs are carved from: ``$SHOAL_LAB_NET`` or :data:`DEFAULT_NET`."""
    return os.environ.get("SHOAL_LAB_NET") or DEFAULT_NET


def block(net: str, slot: int) -> ipaddress.IPv4Network:
    """The /22 a lab in ``slot`` uses."""
    blocks = list(parse_net(net).subnets(new_prefix=BLOCK_PREFIX))
    if not 0 <= slot < len(blocks):
        raise UsageError(f"lab address slot {slot} is outside {net}")
    return blocks[slot]


@dataclass(frozen=True)
class Naming:
    """Every name and address of one lab, derived from its name (and slot)."""

    name: str

    @property
    def root_link(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def switch_ns(self) -> str:
        return f"{PREFIX}{self.name}-sw"

    def node_ns(self, node: str) -> str:
        return f"{PREFIX}{self.name}-{node}"

    def ns_pattern(self) -> re.Pattern[str]:
        """Matches exactly the namespaces this lab makes (and no other lab's)."""
        return re.compile(rf"^{re.escape(PREFIX + self.name)}-(sw|n[1-9][0-9]*)$")

    @staticmethod
    def node_names(n: int) -> list[str]:
        return [f"n{i}" for i in range(1, n + 1)]

    @staticmethod
    def controller_addr(blk: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
        return blk.network_address + 1

    @staticmethod
    def node_addr(blk: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
        if not 1 <= index <= MAX_NODES:
            raise UsageError(f"node index {index} outside 1..{MAX_NODES}")
        return blk.network_address + 1 + index


def mac_of(addr: str) -> str:
    """The lab's fixed MAC for an IPv4 address: ``02:73`` + the address bytes.

    Locally administered and unique per address, so neighbour entries can be
    written before a node exists and stay right across kill/revive.
    """
    b = ipaddress.IPv4Address(addr).packed
    return "02:73:" + ":".join(f"{x:02x}" for x in b)


def lab_name_of_link(link: str) -> str | None:
    """The lab a root-namespace link belongs to (``shl-NAME``), else None."""
    if link.startswith(PREFIX):
        rest = link[len(PREFIX) :]
        if _NAME_RE.match(rest) and len(rest) <= MAX_NAME:
            return rest
    return None
