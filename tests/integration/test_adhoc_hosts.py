"""Ad-hoc targets and the system's SSH files, on the lab (issue 19 items 1, 2, 4).

Every command runs ``shoal`` as a subprocess with an empty state directory, an
empty home (no ~/.ssh) and a private system directory (``SHOAL_SSH_SYSTEM_DIR``)
unless a test says otherwise, so the lab's nodes are reached only through what
the test gives: ``-w user@addr:port``, ``-i``, ``-o``, or the system files.
"""

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


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home, state, etc = tmp_path / "home", tmp_path / "state", tmp_path / "etc"
    for d in (home, state, etc):
        d.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "MQ_NODES")}
    env.update(HOME=str(home), SHOAL_HOME=str(state), SHOAL_SSH_SYSTEM_DIR=str(etc), **extra)
    return env


def _shoal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _records(out: str) -> dict[str, dict[str, Any]]:
    return {r["node"]: r for r in map(json.loads, filter(None, out.splitlines()))}


def _trust(lab: Any) -> list[str]:
    """``-i`` and ``-o`` that reach the lab's nodes with nothing else configured."""
    return [
        "-i", str(lab.identity), "-o", "IdentitiesOnly yes", "-o", "IdentityAgent none",
        "-o", f"UserKnownHostsFile {lab.known_hosts}",
    ]  # fmt: skip


def test_w_reaches_hosts_not_in_the_inventory_with_user_at_host_port(
    lab: Any, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    a, b, c = lab.nodes()[:3]
    hosts = f"{a.user}@{a.host}:{a.port},{b.user}@{b.host},{c.host}"
    r = _shoal(env, "run", "-w", hosts, "-l", c.user, *_trust(lab), "--json", "echo $USER")
    assert r.returncode == 0, r.stdout + r.stderr
    got = _records(r.stdout)
    assert set(got) == {a.host, b.host, c.host}
    assert all(rec["stdout"].strip() == a.user for rec in got.values()), got
    # -s narrows -w's hosts; nothing was added to the (empty) inventory
    r = _shoal(env, "run", "-w", hosts, "-l", c.user, "-s", f"limit(all, 2) - {a.host}",
               *_trust(lab), "--json", "true")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(_records(r.stdout)) == {b.host}
    listed = _shoal(env, "nodes", "list", "--json")
    assert a.host not in listed.stdout and b.host not in listed.stdout


def test_system_ssh_config_include_and_ssh_known_hosts_are_honoured(
    lab: Any, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    node = lab.nodes()[0]
    etc = Path(env["SHOAL_SSH_SYSTEM_DIR"])
    (etc / "ssh_config.d").mkdir()
    (etc / "ssh_config").write_text(  # Debian's own file, plus a site drop-in
        "Include /nonexistent/*.conf ssh_config.d/*.conf\nHost *\n    SendEnv LANG LC_*\n"
        "    HashKnownHosts yes\n    GSSAPIAuthentication yes\n"
    )
    (etc / "ssh_config.d" / "lab.conf").write_text(
        f"Host {node.host}\n  User {node.user}\n  IdentityFile {lab.identity}\n"
        "  IdentitiesOnly yes\n"
    )
    r = _shoal(env, "run", "-w", node.host, "--json", "true")
    assert r.returncode != 0 and "not in known_hosts" in r.stdout + r.stderr  # nothing trusted
    (etc / "ssh_known_hosts").write_text(lab.known_hosts.read_text())
    r = _shoal(env, "run", "-w", node.host, "--json", "echo $USER")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(r.stdout)[node.host]["stdout"].strip() == node.user


def test_o_accept_new_records_into_the_user_file_and_unsupported_options_are_refused(
    lab: Any, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    node = lab.nodes()[1]
    kh = tmp_path / "new_known_hosts"
    base = ["-w", f"{node.user}@{node.host}", "-i", str(lab.identity),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={kh}"]  # fmt: skip
    r = _shoal(env, "run", *base, "--json", "true")
    assert r.returncode != 0 and "not in known_hosts" in r.stdout + r.stderr
    r = _shoal(env, "run", *base, "-o", "StrictHostKeyChecking accept-new", "--json", "true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert node.host in kh.read_text()
    r = _shoal(env, "run", *base, "-o", "ProxyCommand nc %h %p", "true")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot honour ProxyCommand" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_auth_failure_names_the_keys_and_methods_tried(lab: Any, tmp_path: Path) -> None:
    env = _env(tmp_path)
    node = lab.nodes()[2]
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    r = _shoal(env, "run", "-w", f"{node.user}@{node.host}", "-i", str(wrong),
               "-o", "IdentitiesOnly yes", "-o", f"UserKnownHostsFile {lab.known_hosts}",
               "--json", "true")  # fmt: skip
    assert r.returncode != 0
    reason = _records(r.stdout)[node.host]["error"]
    assert reason.startswith(f"auth failed for {node.user}@{node.host}:22: tried publickey ("), (
        reason
    )
    assert str(wrong) in reason and "server allows publickey" in reason, reason
    assert "\n" not in reason


def test_mq_nodes_is_used_with_s_mq_and_a_warning_says_when_it_is_ignored(
    lab: Any, tmp_path: Path
) -> None:
    node = lab.nodes()[3]
    listing = tmp_path / "mq_nodes.txt"
    listing.write_text(f"{node.host}\n")
    env = _env(tmp_path, MQ_NODES=str(listing), MQ_SLICE=node.user)
    env["SHOAL_HOME"] = os.environ["SHOAL_HOME"]  # the session's state: the lab's inventory
    r = _shoal(env, "run", "-s", node.name, "--json", "true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MQ_NODES is set but ignored" in r.stderr and "-s mq" in r.stderr
    r = _shoal(env, "run", "-s", "mq", *_trust(lab), "--json", "echo $USER")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(r.stdout)[node.host]["stdout"].strip() == node.user
    assert "ignored" not in r.stderr
