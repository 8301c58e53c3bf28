"""Rendering of link conditions into ``tc`` and ``nft`` commands (pure).

Owns how a :class:`~shoal.lab.labspec.Shaping` becomes kernel configuration:

* **rate** — a ``tbf`` qdisc on the egress of each end of a veth pair, so the
  node's end limits its upload and the switch's end its download;
* **delay** — a ``netem`` root qdisc (with the ``tbf`` as its child when a rate
  is set) on both ends; kernels without netem are detected, not guessed, by
  :func:`shoal.lab.netns.check_netem`;
* **loss** — one nftables table in the lab's switch namespace, bridge family,
  that drops IP packets entering and leaving a port at random
  (``numgen random mod 10000 < BASIS_POINTS``). Ports with the same loss share
  one rule over an anonymous set, so a 1000-node lab costs a few rules, and the
  controller's port is shaped the same way without touching the root
  namespace's firewall.
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal.lab.labspec import LOSS_SCALE, Shaping

NFT_TABLE = "shoal_lab"
#: Bytes of one full Ethernet frame on the veth (MTU 1500 + header).
FRAME = 1514


#: Seconds of traffic one tbf burst holds. A tbf whose tokens run out sleeps on a
#: watchdog timer, and on a virtual machine every timer is a trip to the hypervisor:
#: with 33 shaped links busy (a 16-node push) a 4 ms burst made the push 16 % slower
#: than 12 ms (22.6-24.8 s against 26.9-29.6 s; 25 ms gained nothing more). Average
#: rates are the same either way (a single flow measures 95.6 Mbit/s of 100, idle or
#: loaded); only bursts shorter than 12 ms go through at the veth's own speed.
BURST_SECONDS = 0.012


def tbf_params(rate_bps: int) -> str:
    """``rate R burst B limit L`` for tbf: 12 ms of burst, ~50 ms of queue."""
    bytes_per_s = rate_bps / 8
    burst = max(int(bytes_per_s * BURST_SECONDS), 2 * FRAME + 200)
    limit = max(int(bytes_per_s * 0.05), 20 * FRAME) + burst
    return f"rate {rate_bps}bit burst {burst} limit {limit}"


def tc_lines(dev: str, old: Shaping, new: Shaping) -> list[str]:
    """``tc -batch`` lines that take ``dev``'s egress from ``old`` to ``new``."""
    if (old.rate_bps, old.delay_us) == (new.rate_bps, new.delay_us):
        return []
    lines = []
    if not old.tc_empty:
        lines.append(f"qdisc del dev {dev} root")
    if new.tc_empty:
        return lines
    if new.delay_us:
        lines.append(
            f"qdisc add dev {dev} root handle 1: netem delay {new.delay_us}us limit 100000"
        )
        if new.rate_bps is not None:
            lines.append(
                f"qdisc add dev {dev} parent 1:1 handle 10: tbf {tbf_params(new.rate_bps)}"
            )
    else:
        assert new.rate_bps is not None
        lines.append(f"qdisc add dev {dev} root handle 1: tbf {tbf_params(new.rate_bps)}")
    return lines


def nft_ruleset(loss_by_port: Mapping[str, int]) -> str:
    """An atomic nft script that (re)defines the lab's loss table.

    ``loss_by_port`` maps a switch port (``n3``, ``ctl``) to basis points;
    ports with 0 are left alone. With no loss anywhere the table is removed.
    """
    head = f"table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n"
    groups: dict[int, list[str]] = {}
    for port, bp in sorted(loss_by_port.items()):
        if bp > 0:
            groups.setdefault(bp, []).append(port)
    if not groups:
        return head
    rules = []
    for bp, ports in sorted(groups.items()):
        names = ", ".join(f'"{p}"' for p in ports)
        for direction in ("iifname", "oifname"):
            rules.append(
                f"    {direction} {{ {names} }} ether type {{ ip, ip6 }} "
                f"numgen random mod {LOSS_SCALE} < {bp} drop"
            )
    body = "\n".join(rules)
    return (
        head + f"table bridge {NFT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"{body}\n"
        "  }\n"
        "}\n"
    )
