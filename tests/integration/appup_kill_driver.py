"""``shoal app up SPEC`` as a library call that SIGKILLs itself at a named checkpoint
of the pass (``--die-at POINT``: ``software staged``, the new version beside the
running one on every member, nothing switched; ``rollout switched``, the first
node's software switched, its services stopped, not restarted): the killed-rollout
tests' controller, a separate process so that the kill is a real SIGKILL."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.app.runtime import UpOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-at", required=True)
    parser.add_argument("spec")
    args = parser.parse_args()

    def checkpoint(point: str) -> None:
        if point == args.die_at:
            print(f"dying at {point}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    options = UpOptions(checkpoint=checkpoint, say=lambda text: print(text, flush=True))
    asyncio.run(lifecycle.up_async(load(args.spec), options))
    print("finished without reaching the checkpoint", flush=True)


if __name__ == "__main__":
    main()
