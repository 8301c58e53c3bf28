"""A changed host key's message names the known_hosts file in use (issue 11).

``ssh-keygen -R ADDR`` edits ~/.ssh/known_hosts; when ssh_config names another
``UserKnownHostsFile`` the advice must name that file, and running the advice
as printed must remove exactly the stale entry.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.fanout import RunOptions, run
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def _known_hosts_with_changed_key(lab: Any, tmp_path: Path, changed: str) -> tuple[Path, Path]:
    """(ssh_config, known_hosts): a private known_hosts where ``changed`` has another key."""
    src = Path(lab.nodes()[0].ssh_config)
    kh_src = next(
        line.split(None, 1)[1].strip()
        for line in src.read_text().splitlines()
        if line.strip().lower().startswith("userknownhostsfile ")
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()[:2]
    node = next(n for n in lab.nodes() if n.name == changed)
    lines = []
    for line in Path(kh_src).read_text().splitlines():
        names = line.split()[0].split(",") if line.strip() else []
        if changed in names or node.host in names or any(node.host in n for n in names):
            line = f"{line.split()[0]} {' '.join(other)}"
        lines.append(line)
    kh = tmp_path / "known hosts"  # a space: the advice must quote it
    kh.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f'Host *\n  UserKnownHostsFile "{kh}"\n\nInclude {src}\n')
    return cfg, kh


def test_changed_key_advice_names_the_file_in_use_and_works(lab: Any, tmp_path: Path) -> None:
    victim = lab.nodes()[1]
    cfg, kh = _known_hosts_with_changed_key(lab, tmp_path, victim.name)
    node = Node(victim.name, victim.host, victim.user, victim.port, (), {}, str(cfg))
    opts = RunOptions()
    r = run([node], "true", opts)
    reason = r[victim.name].reason
    assert r[victim.name].kind == "hostkey" and "CHANGED" in reason, reason
    advice = reason.split("if the change is expected: ", 1)[1].rstrip(")")
    argv = shlex.split(advice)
    assert argv[:3] == ["ssh-keygen", "-f", str(kh)], advice
    before = kh.read_text()
    subprocess.run(argv, check=True, capture_output=True)
    assert kh.read_text() != before  # the stale entry is gone from that file
    r = run([node], "true", opts)
    assert r[victim.name].kind == "hostkey" and "not in known_hosts" in r[victim.name].reason
