"""ssh_config resolution done once per file (transport/sshconfig.py): OpenSSH's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import UsageError
from shoal.transport import sshconfig


def write(tmp_path: Path, text: str, name: str = "config") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_first_value_wins_and_identity_files_accumulate(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
Host *.eu
  User euro
  IdentityFile ~/.ssh/eu
  IdentitiesOnly yes
Host web1.eu web2.eu
  HostName 10.0.0.%h
  User ignored
  Port 2222
  IdentityFile /keys/%r-%h
Host *
  Port 22
  UserKnownHostsFile /kh/one /kh/two
""",
    )
    r = sshconfig.resolve([cfg], "web1.eu")
    assert r is not None
    assert (r.user, r.port) == ("euro", 2222)
    assert r.hostname == "10.0.0.web1.eu"
    assert r.identity_files == [str(Path.home() / ".ssh/eu"), "/keys/euro-10.0.0.web1.eu"]
    assert r.known_hosts == ["/kh/one", "/kh/two"]
    other = sshconfig.resolve([cfg], "db.us")
    assert other is not None and other.port == 22 and other.hostname == "db.us"
    assert other.known_hosts == ["/kh/one", "/kh/two"]  # Host * applies to it too
    plain = sshconfig.resolve([write(tmp_path, "Host x\n  Port 1\n", "plain")], "db.us")
    assert plain is not None
    assert plain.known_hosts == [
        str(Path.home() / ".ssh/known_hosts"),
        str(Path.home() / ".ssh/known_hosts2"),
    ]


def test_inventory_user_and_port_override_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "Host n1\n  User cfguser\n  Port 2200\n")
    r = sshconfig.resolve([cfg], "n1", user="inv", port=2300)
    assert r is not None and (r.user, r.port) == ("inv", 2300)


def test_negated_patterns_and_file_order_across_literal_and_wildcard_blocks(
    tmp_path: Path,
) -> None:
    cfg = write(
        tmp_path,
        "Host * !n2\n  Port 1111\nHost n1\n  Port 2222\nHost n2\n  Port 3333\n",
    )
    one, two = sshconfig.resolve([cfg], "n1"), sshconfig.resolve([cfg], "n2")
    assert one is not None and one.port == 1111  # the wildcard block comes first
    assert two is not None and two.port == 3333  # excluded from the wildcard block


def test_earlier_files_win(tmp_path: Path) -> None:
    first = write(tmp_path, "Host n1\n  Port 1000\n", "a")
    second = write(tmp_path, "Host *\n  Port 2000\n  User second\n", "b")
    r = sshconfig.resolve([first, second], "n1")
    assert r is not None and (r.port, r.user) == (1000, "second")


def test_anything_not_reproduced_exactly_falls_back_to_asyncssh(tmp_path: Path) -> None:
    for text in (
        "Host n1\n  ProxyCommand nc %h %p\n",
        "Match exec true\n  User x\n",
        "Match canonical host n1\n  User x\n",
        "Host n1\n  HostKeyAlias other\n",
        "Host n1\n  HostName %n.example\n",  # a token we do not expand
    ):
        assert sshconfig.resolve([write(tmp_path, text)], "n1") is None, text
    # a fallback block that does not concern this host does not matter
    assert sshconfig.resolve([write(tmp_path, "Host other\n  ProxyCommand x\n")], "n1")


def test_dev_null_known_hosts_means_none_and_the_file_is_reread_when_changed(
    tmp_path: Path,
) -> None:
    cfg = write(tmp_path, "Host n1\n  UserKnownHostsFile /dev/null\n")
    r = sshconfig.resolve([cfg], "n1")
    assert r is not None and r.known_hosts == []
    Path(cfg).write_text("Host n1\n  UserKnownHostsFile /kh/changed\n  Port 23\n")
    r = sshconfig.resolve([cfg], "n1")
    assert r is not None and r.known_hosts == ["/kh/changed"] and r.port == 23


def test_an_included_file_that_changes_or_appears_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.conf").write_text("Host n1\n  Port 1001\n")
    top = write(tmp_path, f"Include {tmp_path}/d/*.conf\n")
    r = sshconfig.resolve([top], "n1")
    assert r is not None and r.port == 1001
    (tmp_path / "d" / "a.conf").write_text("Host n1\n  Port 1002\n  User changed\n")
    r = sshconfig.resolve([top], "n1")
    assert r is not None and (r.port, r.user) == (1002, "changed")
    (tmp_path / "d" / "0-new.conf").write_text("Host n1\n  Port 1000\n")  # sorts first
    r = sshconfig.resolve([top], "n1")
    assert r is not None and r.port == 1000


def test_system_file_comes_after_the_user_files_and_includes_from_its_directory(
    tmp_path: Path,
) -> None:
    etc = tmp_path / "etc"
    (etc / "ssh_config.d").mkdir(parents=True)
    (etc / "ssh_config").write_text(
        "Include ssh_config.d/*.conf\nHost *\n  SendEnv LANG LC_*\n  HashKnownHosts yes\n"
        "  GSSAPIAuthentication yes\n"
    )
    (etc / "ssh_config.d" / "site.conf").write_text("Host *\n  User site\n  Port 2200\n")
    user = write(tmp_path, "Host n1\n  Port 1000\n")
    r = sshconfig.resolve([user], "n1", system=str(etc))
    assert r is not None and (r.port, r.user) == (1000, "site")
    assert r.global_known_hosts == [f"{etc}/ssh_known_hosts", f"{etc}/ssh_known_hosts2"]
    assert sshconfig.resolve([user], "n1") is not None  # no system dir: not read


def test_command_line_options_come_first_and_unsupported_ones_are_refused(
    tmp_path: Path,
) -> None:
    cfg = write(tmp_path, "Host n1\n  User cfg\n  Port 1000\n  IdentityFile /k/cfg\n")
    opts = [sshconfig.parse_option(o) for o in ("User=cli", "Port 2000", "IdentityFile /k/cli")]
    r = sshconfig.resolve([cfg], "n1", options=opts)
    assert r is not None and (r.user, r.port) == ("cli", 2000)
    assert r.identity_files == ["/k/cli", "/k/cfg"]
    assert sshconfig.parse_option("StrictHostKeyChecking=accept-new") == (
        "stricthostkeychecking",
        ("accept-new",),
    )
    for bad, words in (
        ("ProxyCommand nc %h %p", "cannot honour ProxyCommand"),
        ("StrictHostKeyChecking no", "never accepts"),
        ("Port twenty", "whole number"),
        ("User", "expected 'Keyword value'"),
    ):
        with pytest.raises(UsageError, match=words) as info:
            sshconfig.parse_option(bad)
        assert "\n" not in str(info.value)


def test_an_inventory_option_shoal_cannot_honour_is_one_line_about_its_node() -> None:
    """A node's stored ssh option (ansible_ssh_common_args) refused at connect: the
    message is the option's refusal, the node its field (it printed as a tuple)."""
    from shoal.errors import UsageError
    from shoal.nodes.model import Node
    from shoal.transport.ssh import node_options

    node = Node("w2", ssh_options=("ConnectTimeout 3", "StrictHostKeyChecking=no"))
    with pytest.raises(UsageError) as info:
        node_options(node)
    assert info.value.node == "w2"
    assert str(info.value).startswith("-o 'StrictHostKeyChecking=no': Shoal never accepts")
    assert info.value.located().startswith("w2: -o ")
