"""Where Shoal keeps its files: the state directory and the paths under it.

The state directory is ``$SHOAL_HOME`` when set, else ``~/.local/state/shoal``.
It holds the SQLite state (``state.db``), the labs (``labs/NAME/``) and the
agent builds shipped to the nodes (``agent/``). Settings are not kept here:
each layer's options are typed dataclasses beside the code that reads them
(:class:`~shoal.fanout.options.FanoutOptions`, ``AgentOptions``, ``PushOptions``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the state directory is (``environ`` defaults to ``os.environ``); not created."""
    env = (os.environ if environ is None else environ).get("SHOAL_HOME")
    return Path(env) if env else Path.home() / ".local" / "state" / "shoal"


def shoal_home() -> Path:
    """The state directory, created on first use (mode 0700)."""
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def state_path() -> Path:
    return shoal_home() / "state.db"


def labs_dir() -> Path:
    d = shoal_home() / "labs"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d
