"""Settings and logging on real nodes: a config file's defaults, variables over it, flags over
both; ``-vv --log-file`` shows the connects and asyncssh's authentication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def shoal(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOAL, *argv], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture()
def config_env(tmp_path: Path, lab: Any) -> tuple[dict[str, str], Path]:
    """The environment of a ``shoal`` whose user config file is ``config.toml`` here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_HOME"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    path = tmp_path / "xdg" / "shoal" / "config.toml"
    path.parent.mkdir(parents=True)
    return env, path


def _nodes(p: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["node"]: r for r in map(json.loads, p.stdout.splitlines())}


def test_file_defaults_env_over_file_flags_over_both(
    lab: Any, config_env: tuple[dict[str, str], Path]
) -> None:
    env, path = config_env
    names = [n.name for n in lab.nodes()]
    path.write_text(f'select = "{names[0]},{names[1]}"\nconnect_timeout = 5\ntimeout = 30\n')
    p = shoal(env, "run", "--json", "hostname")
    assert p.returncode == 0, p.stderr
    assert sorted(_nodes(p)) == sorted(names[:2])  # the file's default selection
    p = shoal(env, "run", "--json", "-s", names[2], "hostname")
    assert list(_nodes(p)) == [names[2]], p.stderr  # the flag wins
    p = shoal({**env, "SHOAL_TIMEOUT": "1"}, "run", "--json", "sleep 10")
    assert p.returncode == 3, p.stderr  # the variable's timeout killed it on both nodes
    assert {r["status"] for r in _nodes(p).values()} == {"timeout"}
    p = shoal({**env, "SHOAL_TIMEOUT": "1"}, "run", "--json", "-t", "20", "sleep 2")
    assert p.returncode == 0, p.stderr  # the flag wins over the variable


def test_verbose_log_file_shows_connects_and_authentication(
    lab: Any, config_env: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, _ = config_env
    node = lab.nodes()[0].name
    quiet = shoal(env, "run", "-s", node, "--no-progress", "true")
    assert quiet.returncode == 0 and "connecting" not in quiet.stderr, quiet.stderr
    log_file = tmp_path / "shoal.log"
    p = shoal(env, "-vv", "--log-file", str(log_file), "run", "-s", node, "--no-progress", "true")
    assert p.returncode == 0, p.stderr
    assert f"shoal.fanout.scheduler: debug: {node}: connecting (attempt 1)" in p.stderr
    text = log_file.read_text()
    assert f"DEBUG shoal.fanout.scheduler: {node}: connecting (attempt 1)" in text
    assert " asyncssh: " in text and "Auth for user" in text  # asyncssh's own log, at -vv
