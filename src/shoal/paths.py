"""Where Shoal keeps its files: the state directory and the paths under it.

The state directory is ``$SHOAL_HOME`` when set, else ``~/.local/state/shoal``.
It holds the SQLite state (``state.db``), the labs (``labs/NAME/``) and the
agent builds shipped to the nodes (``agent/``). Settings are not kept here:
each layer's options are typed dataclasses beside the code that reads them
(:class:`~shoal.fanout.options.FanoutOptions`, ``AgentOptions``, ``PushOptions``).
"""

from __future__ import annotations

import os
from pathlib import Path


def shoal_home() -> Path:
    """The state directory, created on first use (mode 0700)."""
    env = os.environ.get("SHOAL_HOME")
    home = Path(env) if env else Path.home() / ".local" / "state" / "shoal"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def state_path() -> Path:
    return shoal_home() / "state.db"


def labs_dir() -> Path:
    d = shoal_home() / "labs"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d
