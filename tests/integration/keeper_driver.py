"""The keeper alone over this SHOAL_HOME's state, until SIGTERM: the app keeper
tests' stand-in for ``shoal serve`` (a separate process, so a test can SIGKILL
it). ``--die-at POINT`` SIGKILLs it at that checkpoint of an ``up`` pass
(``replacement recorded``: the new member is in SQLite, no node changed yet)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from shoal.app.reconcile import Backoff
from shoal.control.journal import Journal
from shoal.control.keeper import Keeper, KeeperConfig
from shoal.state import State


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--cooldown", type=float, default=30.0)
    parser.add_argument("--die-at", default=None)
    args = parser.parse_args()

    def checkpoint(point: str) -> None:
        if point == args.die_at:
            print(f"dying at {point}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    async def go() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        with State() as st:
            config = KeeperConfig(
                interval=args.interval,
                backoff=Backoff(first=args.cooldown, reset_after=60.0),
                connect_timeout=3.0,
            )
            say = lambda text: print(text, flush=True)  # noqa: E731
            keeper = Keeper(st, Journal(st), config, say=say, checkpoint=checkpoint)
            print("keeper ready", flush=True)
            await keeper.run(stop)

    asyncio.run(go())


if __name__ == "__main__":
    main()
