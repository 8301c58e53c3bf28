"""Ansible's connection variables, imported and then used on real nodes (issue 19 item 6).

An ``ansible-inventory --list`` document names two lab nodes by their address,
port and user, with the lab's key as ``ansible_ssh_private_key_file`` (the
ssh_config the nodes get has no IdentityFile: the inventory's key is the only
one), ``ansible_become`` on one, and ``ansible_python_interpreter`` pointing at
a wrapper that records that it ran the agent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from shoal.agentlink import fleet
from shoal.errors import AuthError, HostKeyError
from shoal.fanout import RunOptions, run
from shoal.lab import Lab
from shoal.lab.sshd import HOSTKEY_ALGS, KEX
from shoal.nodes import importers, inventory
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab


def _trust_only_config(lab: Lab, path: Path) -> str:
    """The lab's known_hosts and algorithms, but no key: ssh_config without IdentityFile."""
    path.write_text(
        "Host *\n"
        f"  UserKnownHostsFile {lab.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  HostKeyAlgorithms {HOSTKEY_ALGS}\n"
        f"  KexAlgorithms {KEX}\n"
        "  PubkeyAcceptedAlgorithms ssh-ed25519\n"
        "  PasswordAuthentication no\n"
        "  KbdInteractiveAuthentication no\n"
    )
    return str(path)


def test_ansible_connection_variables_are_used(lab: Lab, tmp_path: Path) -> None:
    n1, n2 = lab.nodes()[:2]
    prefix = unique_lab_name("ans")
    work = f"/tmp/{prefix}"  # on the node (its /tmp is its own)
    wrapper, marker = f"{work}/python-wrapper", f"{work}/wrapper-ran"
    remote(
        n2,
        f'mkdir -p {work} && printf \'#!/bin/sh\\necho "$*" >> {marker}\\n'
        f'exec python3 "$@"\\n\' > {wrapper} && chmod 755 {wrapper}',
    )
    hostvars = {
        f"{prefix}-a": {
            "ansible_host": n1.host,
            "ansible_port": n1.port,
            "ansible_user": n1.user,
            "ansible_ssh_private_key_file": str(lab.identity),
            "ansible_become": True,
            "secret": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n6162\n"},
        },
        f"{prefix}-b": {
            "ansible_host": n2.host,
            "ansible_port": n2.port,
            "ansible_user": n2.user,
            "ansible_ssh_private_key_file": str(lab.identity),
            "ansible_python_interpreter": wrapper,
        },
    }
    listing = {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["ungrouped", prefix]},
        prefix: {"hosts": sorted(hostvars)},
    }
    inv = importers.parse_ansible_json(json.dumps(listing), "listing.json")
    assert any("secret" in w for w in inv.warnings)
    config = _trust_only_config(lab, tmp_path / "ssh_config")
    with State() as st:
        inventory.import_nodes([replace(n, ssh_config=config) for n in inv.nodes], state=st)
        try:
            a, b = inventory.load_nodes(st, sorted(hostvars))
            # become: the command runs under sudo -n (SUDO_USER set; or sudo is missing there)
            results = run([a, b], "echo user=${SUDO_USER:-none}", RunOptions(timeout=30, retries=0))
            out_a, out_b = results[a.name], results[b.name]
            assert out_b.ok and out_b.value is not None
            assert out_b.value.stdout.strip() == "user=none"
            assert out_a.value is not None, out_a.error
            has_sudo = remote(n1, "command -v sudo >/dev/null && echo yes || echo no").strip()
            if has_sudo == "yes":
                assert out_a.value.stdout.strip() == f"user={n1.user}"
            else:
                assert out_a.value.exit_status == 127 and "sudo" in out_a.value.stderr
            # the inventory's key is what let them in: without it, refused
            keyless = run([replace(b, identity_file=None)], "true", RunOptions(retries=0))
            assert isinstance(keyless[b.name].error, AuthError)
            # python: the agent started by the inventory's interpreter
            opts = fleet.AgentOptions(home=f"{work}/agent", retries=0)
            try:
                installed = asyncio.run(fleet.install_async([b], opts, state=st))
                assert installed.ok, installed[b.name].error
                assert "agent.pyz serve" in remote(n2, f"cat {marker}")
            finally:
                asyncio.run(fleet.stop_async([b], opts, state=st))
        finally:
            inventory.remove_nodes(sorted(hostvars), state=st)
            remote(n2, f"rm -rf {work}")


def test_ansible_ssh_args_reach_the_connection(lab: Lab, tmp_path: Path) -> None:
    """``ansible_ssh_common_args``/``_extra_args`` are ssh's command line: here the only
    known_hosts file (-o) and the only key (-i) come from them; without them, refused."""
    n1 = lab.nodes()[2]
    name = unique_lab_name("args")
    config = tmp_path / "ssh_config"
    _trust_only_config(lab, config)
    config.write_text(config.read_text().replace(str(lab.known_hosts), "/dev/null"))
    hostvars = {
        name: {
            "ansible_host": n1.host,
            "ansible_port": n1.port,
            "ansible_user": n1.user,
            "ansible_ssh_common_args": f"-o 'UserKnownHostsFile {lab.known_hosts}' -C",
            "ansible_ssh_extra_args": f"-i {lab.identity} -o ConnectTimeout=7",
        }
    }
    listing = {"_meta": {"hostvars": hostvars}, "all": {"hosts": [name]}}
    inv = importers.parse_ansible_json(json.dumps(listing), "listing.json")
    assert any("ssh flag -C not used" in w and name in w for w in inv.warnings)
    with State() as st:
        inventory.import_nodes([replace(n, ssh_config=str(config)) for n in inv.nodes], state=st)
        try:
            (node,) = inventory.load_nodes(st, [name])
            results = run([node], "echo reached", RunOptions(timeout=30, retries=0))
            assert results[name].value is not None, results[name].error
            assert results[name].value.stdout.strip() == "reached"
            bare = run([replace(node, ssh_options=())], "true", RunOptions(retries=0))
            assert isinstance(bare[name].error, HostKeyError)
        finally:
            inventory.remove_nodes([name], state=st)
