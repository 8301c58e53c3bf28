"""``python3 -m shoal.agent`` and the zipapp's entry point: see :mod:`.daemon`."""

from __future__ import annotations

import sys

from .daemon import main

if __name__ == "__main__":
    sys.exit(main())
