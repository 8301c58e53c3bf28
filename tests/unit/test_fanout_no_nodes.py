"""A fan-out over no nodes is an empty result, not asyncio's "Set of Tasks/Futures is
empty" (a push whose every node failed its agent install fanned out over none)."""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.fanout.scheduler import fanout


async def _never(conn: Any, node: Any, index: int) -> Any:
    raise AssertionError("no node, no call")


def test_a_fanout_over_no_nodes_is_empty() -> None:
    results = asyncio.run(fanout([], _never))
    assert len(results) == 0 and results.ok
