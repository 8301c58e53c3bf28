"""``shoal nodes import`` warns about stored ssh options Shoal refuses at connect
(issue 19 item 7): Ansible inventories often carry ``-o StrictHostKeyChecking=no``
or a ProxyCommand; imported silently, every connection to those hosts failed later.
One warning per option, its hosts folded; the options are still stored as read."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli import main as cli_main
from shoal.nodes import inventory
from shoal.state import State

INI = """\
[web]
web01 ansible_ssh_common_args='-o StrictHostKeyChecking=no'
web02 ansible_ssh_common_args='-o StrictHostKeyChecking=no -o ProxyCommand="ssh -W %h:%p gw"'
web03 ansible_ssh_common_args='-o StrictHostKeyChecking=no'
db1 ansible_ssh_common_args='-o ProxyJump=gw -o StrictHostKeyChecking=accept-new'
"""


def test_import_warns_once_per_refused_option_with_hosts_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(INI)
    assert cli_main.main(["nodes", "import", str(hosts)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2, warnings
    strict, proxy = warnings
    assert strict.startswith(f"warning: {hosts}: web[01-03]: -o 'StrictHostKeyChecking=no': ")
    assert "accept-new" in strict and "connecting there fails" in strict
    assert proxy.startswith(f"warning: {hosts}: web02: -o 'ProxyCommand=ssh -W %h:%p gw': ")
    assert "cannot honour ProxyCommand" in proxy
    assert "db1" not in "\n".join(warnings)  # ProxyJump and accept-new are honoured
    with State() as st:
        stored = {n.name: n.ssh_options for n in inventory.load_nodes(st)}
    assert stored["web01"] == ("StrictHostKeyChecking=no",)  # kept as read
    assert len(stored) == 4
