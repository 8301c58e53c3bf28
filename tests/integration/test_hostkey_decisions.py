"""Host-key decisions on real nodes: a key known in the global file counts, and each
decision is logged (issue 19 items 2, 4).

Every lab node shares one host key; each test builds its own ssh_config with its own
user and global known_hosts files, so what is trusted is exactly what it wrote.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.fanout import RunOptions, run
from shoal.lab.sshd import HOSTKEY_ALGS, KEX
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def _node(lab: Any, tmp_path: Path, index: int, user_kh: Path, global_kh: Path) -> Node:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        "Host *\n"
        f"  IdentityFile {lab.identity}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {user_kh}\n"
        f"  GlobalKnownHostsFile {global_kh}\n"
        f"  HostKeyAlgorithms {HOSTKEY_ALGS}\n"
        f"  KexAlgorithms {KEX}\n"
    )
    n = lab.nodes()[index]
    return Node(n.name, n.host, n.user, n.port, ssh_config=str(cfg))


def _line(lab: Any, node: Node, key: str | None = None) -> str:
    """The lab's known_hosts line of ``node`` (with another key if given)."""
    line = next(
        x for x in Path(lab.known_hosts).read_text().splitlines() if node.name in x.split()[0]
    )
    return f"{line.split()[0]} {key}\n" if key else line + "\n"


def test_a_changed_key_in_the_global_file_is_refused_under_accept_new(
    lab: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ssh refuses a key that differs from any known_hosts file's: accept-new must not
    record it into the (empty) user file because only the global file knows the host."""
    user_kh, global_kh = tmp_path / "user_kh", tmp_path / "global_kh"
    user_kh.write_text("")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)  # fmt: skip
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    node = _node(lab, tmp_path, 3, user_kh, global_kh)
    global_kh.write_text(_line(lab, node, other))
    caplog.set_level(logging.INFO, logger="shoal.transport")
    r = run([node], "true", RunOptions(host_keys="accept-new", retries=0))
    assert r[node.name].kind == "hostkey" and "CHANGED" in r[node.name].reason, r[node.name]
    assert str(global_kh) in r[node.name].reason  # the advice names the file that knows it
    assert user_kh.read_text() == ""
    assert f"{node.name}: refused host key ssh-ed25519 SHA256:" in caplog.text
    assert f"{global_kh} has another key for it" in caplog.text
    global_kh.write_text(_line(lab, node))  # the right key there: trusted, nothing recorded
    assert run([node], "true", RunOptions(host_keys="accept-new", retries=0)).ok
    assert user_kh.read_text() == ""


def test_host_key_decisions_are_logged(
    lab: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user_kh, global_kh = tmp_path / "user_kh", tmp_path / "global_kh"
    node = _node(lab, tmp_path, 4, user_kh, global_kh)
    caplog.set_level(logging.INFO, logger="shoal.transport")
    refused = run([node], "true", RunOptions(retries=0))
    assert refused[node.name].kind == "hostkey"
    assert f"{node.name}: refused unknown host key ssh-ed25519 SHA256:" in caplog.text
    assert f"(not in {user_kh}, {global_kh})" in caplog.text
    caplog.clear()
    assert run([node], "true", RunOptions(host_keys="accept-new", retries=0)).ok
    assert f"{node.name}: accepted new host key ssh-ed25519 SHA256:" in caplog.text
    assert f"recorded in {user_kh}" in caplog.text
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="shoal.transport")
    assert run([node], "true", RunOptions(retries=0)).ok
    assert f"{node.name}: host key ssh-ed25519 SHA256:" in caplog.text
    assert f"trusted by {user_kh}" in caplog.text
