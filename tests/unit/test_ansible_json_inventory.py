"""Ansible inventories as ``ansible-inventory --list`` prints them (issue 19 item 6).

The fixtures under tests/fixtures/inventories/ansible/ were made by ansible-core
2.19 from inventory.yml (see its header): vault values of no known password,
and every ansible_* connection variable Shoal uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import InventoryError
from shoal.nodes import importers, inventory
from shoal.nodes.model import Node
from shoal.state import State

ANSIBLE = Path(__file__).resolve().parent.parent / "fixtures" / "inventories" / "ansible"


def by_name(inv: importers.Inventory) -> dict[str, Node]:
    return {n.name: n for n in inv.nodes}


@pytest.mark.parametrize("fixture", ["list.json", "list-export.json", "inventory.yml"])
def test_connection_variables_become_node_fields(fixture: str) -> None:
    """The same hosts whichever form: ansible-inventory --list, --export, or the YAML."""
    nodes = by_name(importers.read_inventory(str(ANSIBLE / fixture)))
    assert sorted(nodes) == ["db01", "db02", "localhost", "web01", "web02"]
    web01 = nodes["web01"]
    assert (web01.host, web01.port, web01.user) == ("192.0.2.11", 2201, "deploy")
    assert web01.identity_file == "~/.ssh/web_ed25519"
    assert web01.become is True
    assert web01.python is None  # auto_silent: the default interpreter
    assert web01.groups == ("web",)
    assert web01.attrs == {"http_port": 8080}  # the used variables are not attrs too
    web02 = nodes["web02"]
    assert (web02.user, web02.python, web02.become) == ("admin", "/opt/py3/bin/python3", True)
    db01 = nodes["db01"]
    assert (db01.host, db01.become, db01.identity_file, db01.groups) == (
        "192.0.2.21",
        False,
        None,
        ("db",),
    )
    assert nodes["localhost"].groups == ()


@pytest.mark.parametrize("fixture", ["list.json", "list-export.json", "inventory.yml"])
def test_vault_values_are_skipped_with_a_warning(fixture: str) -> None:
    inv = importers.read_inventory(str(ANSIBLE / fixture))
    nodes = by_name(inv)
    assert "db_password" not in nodes["web01"].attrs
    assert "api_token" not in nodes["db01"].attrs
    vault = [w for w in inv.warnings if "vault" in w]
    assert any("db_password" in w and "web01" in w for w in vault), inv.warnings
    # a group's vault value is named with the group (--export, YAML) or its hosts (--list)
    assert any("api_token" in w and ("group db" in w or "host db[01-02]" in w) for w in vault)
    assert all(w.startswith(str(ANSIBLE / fixture) + ": ") for w in inv.warnings)


def test_unusable_connection_settings_are_warned_about() -> None:
    inv = importers.read_inventory(str(ANSIBLE / "list.json"))
    text = "\n".join(inv.warnings)
    assert "ansible_become_user=postgres of host db01 is not used" in text
    assert "ansible_connection=local of host localhost is not used" in text
    assert by_name(inv)["db01"].attrs["ansible_become_user"] == "postgres"


def test_vault_inside_a_structured_value_skips_the_variable() -> None:
    text = (
        '{"_meta": {"hostvars": {"h1": {"creds": {"user": "x", "pw": {"__ansible_vault": "$A"}},'
        ' "ok": [1, 2]}}}, "all": {"children": ["g"]}, "g": {"hosts": ["h1"]}}'
    )
    inv = importers.parse_ansible_json(text, "dyn.json")
    h1 = by_name(inv)["h1"]
    assert "creds" not in h1.attrs and h1.attrs["ok"] == "[1, 2]"
    assert inv.warnings == [
        "dyn.json: vault-encrypted variable creds of host h1 skipped"
        " (Shoal does not decrypt vault values)"
    ]


def test_json_is_detected_whatever_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "inventory"  # a dynamic inventory's output saved without a suffix
    path.write_text((ANSIBLE / "list.json").read_text())
    assert len(importers.read_inventory(str(path)).nodes) == 5
    assert importers.detect_format("x.json", "") == "json"


def test_old_script_form_a_group_as_a_list() -> None:
    inv = importers.parse_ansible_json('{"web": ["a", "b"], "db": {"hosts": ["c"]}}', "s")
    assert {n.name: n.groups for n in inv.nodes} == {"a": ("web",), "b": ("web",), "c": ("db",)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "s: an Ansible JSON inventory is an object of groups"),
        ('{"_meta": {"hostvars": []}}', "s: _meta.hostvars must be an object"),
        ('{"g": {"hosts": "a"}}', "s: g.hosts must be a list"),
        ('{"g": 3}', "s: group g must be an object"),
        ('{"g": {"hosts": ["a"]}, "_meta": {"hostvars": {"a": {"ansible_become": "x"}}}}',
         "s: host a: ansible_become is not a boolean: 'x'"),
        pytest.param("{" * 5000, "s: ", id="deep"),
    ],
)  # fmt: skip
def test_bad_json_inventories_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        importers.parse_ansible_json(text, "s")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_login_fields_survive_the_store(tmp_path: Path) -> None:
    inv = importers.read_inventory(str(ANSIBLE / "list.json"))
    with State(tmp_path / "state.db") as st:
        inventory.import_nodes(inv.nodes, state=st)
        stored = {n.name: n for n in inventory.load_nodes(st)}
        assert stored == by_name(inv)
        assert inventory.load_nodes(st, ["web02"])[0].python == "/opt/py3/bin/python3"
        # re-imported without them: the login settings go, as the rest of the record does
        plain = [Node(name="web01", host="192.0.2.11")]
        inventory.import_nodes(plain, state=st)
        again = inventory.load_nodes(st, ["web01"])[0]
        assert (again.identity_file, again.become, again.python) == (None, False, None)


SSH_ARGS_INI = """\
[web]
web01 ansible_ssh_common_args='-o ProxyJump=gw1 -o "UserKnownHostsFile /etc/k h"'
web02 ansible_ssh_extra_args="-J gw2 -C -oServerAliveInterval=7 -i ~/.ssh/w2 -L 80:h:80"

[web:vars]
ansible_ssh_extra_args='-o ConnectTimeout=4 -q'
"""


def test_ssh_args_become_ssh_options_and_other_flags_warn(tmp_path: Path) -> None:
    """ansible_ssh_common_args then _extra_args, read as ssh's command line: -o options
    as written, -J/-i as ProxyJump/IdentityFile; other flags dropped with a warning
    naming the flag, the variable and the hosts; stored and read back."""
    inv = importers.parse_ansible_ini(SSH_ARGS_INI, "hosts.ini")
    nodes = by_name(inv)
    assert nodes["web01"].ssh_options == (
        "ProxyJump=gw1",
        "UserKnownHostsFile /etc/k h",
        "ConnectTimeout=4",  # the group's extra args, after the host's common ones
    )
    assert nodes["web02"].ssh_options == (
        "ProxyJump gw2",
        "ServerAliveInterval=7",
        "IdentityFile ~/.ssh/w2",
    )
    assert not any(k.startswith("ansible_ssh") for n in nodes.values() for k in n.attrs)
    text = "\n".join(inv.warnings)
    assert "ansible_ssh_extra_args of host web02: ssh flag -C not used" in text
    assert "ansible_ssh_extra_args of host web02: ssh flag -L 80:h:80 not used" in text
    assert "ansible_ssh_extra_args of host web01: ssh flag -q not used" in text
    with State(tmp_path / "state.db") as st:
        inventory.import_nodes(inv.nodes, state=st)
        assert {n.name: n for n in inventory.load_nodes(st)} == nodes
        inventory.import_nodes([Node(name="web01")], state=st)  # replaced whole: they go
        assert inventory.load_nodes(st, ["web01"])[0].ssh_options == ()
    with pytest.raises(InventoryError, match="web03: ansible_ssh_common_args"):
        importers.parse_ansible_ini('web03 ansible_ssh_common_args="-o \'X"\n', "bad.ini")
