"""Unit tests of the lab's rendered configuration: sshd, ssh_config, known_hosts, tc, nft."""

from __future__ import annotations

from pathlib import Path

from shoal.lab.labspec import Shaping
from shoal.lab.labstate import LabNode, LabState
from shoal.lab.shaping import NFT_TABLE, nft_ruleset, tbf_params, tc_lines
from shoal.lab.sshd import (
    Endpoint,
    render_inventory,
    render_known_hosts,
    render_node_script_netns,
    render_ssh_config,
    render_sshd_config_netns,
    render_sshd_config_rootless,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAVmC6Pd7HrlbTGqy18J4ZSK8jcUhXvu0MdkCeRtpo4R"


def _options(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.setdefault(key, value)
    return out


def test_sshd_config_netns_is_key_only_and_fast() -> None:
    opts = _options(render_sshd_config_netns())
    assert opts["PasswordAuthentication"] == "no"
    assert opts["KbdInteractiveAuthentication"] == "no"
    assert opts["PermitRootLogin"] == "prohibit-password"
    assert opts["UsePAM"] == "no"
    assert opts["UseDNS"] == "no"
    assert opts["PrintMotd"] == "no"
    assert opts["PrintLastLog"] == "no"
    assert opts["AllowTcpForwarding"] == "yes"
    assert opts["AllowStreamLocalForwarding"] == "yes"
    assert opts["Subsystem"] == "sftp /usr/lib/openssh/sftp-server"
    assert opts["HostKeyAlgorithms"] == "ssh-ed25519"
    assert opts["KexAlgorithms"].startswith("curve25519-sha256")
    assert opts["HostKey"] == "/etc/ssh/ssh_host_ed25519_key"


def test_sshd_config_rootless_gives_each_node_its_home() -> None:
    home = Path("/labs/x/nodes/n2/home")
    text = render_sshd_config_rootless(
        port=40022, host_key=Path("/labs/x/etc/k"), home=home, lab="x.1234", node="n2"
    )
    opts = _options(text)
    assert opts["ListenAddress"] == "127.0.0.1:40022"
    assert opts["AuthorizedKeysFile"] == f"{home}/.ssh/authorized_keys"
    assert opts["SetEnv"] == f"HOME={home} SHOAL_LAB_NODE=x.1234/n2"
    assert opts["ForceCommand"].startswith('cd "$HOME"')
    assert opts["PasswordAuthentication"] == "no"


def test_ssh_config_matches_name_and_address_and_verifies_keys() -> None:
    eps = [Endpoint("n1", "10.213.0.2", 22), Endpoint("n2", "10.213.0.3", 22)]
    text = render_ssh_config(eps, Path("/labs/x"), "root")
    assert "Host n1 10.213.0.2\n" in text and "Host n2 10.213.0.3\n" in text
    assert "Host *" not in text
    assert "  StrictHostKeyChecking yes" in text
    assert "  UserKnownHostsFile /labs/x/known_hosts" in text
    assert "  IdentityFile /labs/x/id_ed25519" in text
    assert "  IdentitiesOnly yes" in text
    assert "  KexAlgorithms curve25519-sha256" in text
    assert "  HostKeyAlgorithms ssh-ed25519" in text
    assert text.count("Host ") == 2


def test_ssh_config_rootless_uses_ports() -> None:
    eps = [Endpoint("n1", "127.0.0.1", 40001), Endpoint("n2", "127.0.0.1", 40002)]
    text = render_ssh_config(eps, Path("/l"), "alice")
    assert "Host n1\n  HostName 127.0.0.1\n  Port 40001\n  User alice" in text
    assert "Host 127.0.0.1\n" in text


def test_known_hosts() -> None:
    eps = [Endpoint("n1", "10.213.0.2", 22), Endpoint("n2", "127.0.0.1", 40002)]
    lines = render_known_hosts(eps, KEY).splitlines()
    assert lines == [f"n1,10.213.0.2 {KEY}", f"[n2]:40002,[127.0.0.1]:40002 {KEY}"]


def test_inventory_is_one_name_per_line() -> None:
    assert render_inventory(["n1", "n2", "n3"]) == "n1\nn2\nn3\n"


def test_node_script_binds_relatively_and_hides_the_lab() -> None:
    script = render_node_script_netns(
        node="n3",
        addr="10.213.0.4",
        prefixlen=22,
        labdir=Path("/root/lab dir"),
        neighbors=[("10.213.0.1", "02:73:0a:d5:00:01")],
    )
    assert "neigh replace 10.213.0.1 lladdr 02:73:0a:d5:00:01 dev eth0 nud permanent\n" in script
    assert "hostname n3" in script
    assert "addr replace 10.213.0.4/22 dev eth0" in script
    for bind in ("./home /root", "./tmp /tmp", "../../etc /etc/ssh"):
        assert f"mount --bind {bind}" in script
    assert "mount -t tmpfs -o size=4k,mode=0700 shoal-hidden '/root/lab dir'" in script
    assert "/usr/sbin/sshd -D -f /etc/ssh/sshd_config" in script
    assert script.rstrip().endswith("echo $!")


def test_tc_lines() -> None:
    none = Shaping()
    rate = Shaping(rate_bps=100_000_000)
    assert tc_lines("eth0", none, none) == []
    assert tc_lines("eth0", none, rate) == [
        f"qdisc add dev eth0 root handle 1: tbf {tbf_params(10**8)}"
    ]
    assert tc_lines("eth0", rate, none) == ["qdisc del dev eth0 root"]
    both = Shaping(rate_bps=10**8, delay_us=20_000)
    lines = tc_lines("n1", rate, both)
    assert lines[0] == "qdisc del dev n1 root"
    assert lines[1] == "qdisc add dev n1 root handle 1: netem delay 20000us limit 100000"
    assert lines[2].startswith("qdisc add dev n1 parent 1:1 handle 10: tbf rate 100000000bit")
    # loss alone is not a tc matter
    assert tc_lines("eth0", none, Shaping(loss_bp=100)) == []


def test_tbf_params_scale_with_rate() -> None:
    def field(text: str, key: str) -> int:
        parts = text.split()
        return int(parts[parts.index(key) + 1])

    slow, fast = tbf_params(64_000), tbf_params(10**9)
    assert field(slow, "burst") >= 2 * 1514  # at least two full frames
    assert field(fast, "burst") == 10**9 * 12 // 8 // 1000  # 12 ms worth
    assert field(fast, "limit") > field(fast, "burst")


def test_nft_ruleset_groups_ports_by_loss() -> None:
    text = nft_ruleset({"n1": 100, "n2": 100, "n3": 0, "ctl": 50})
    assert text.startswith(f"table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n")
    assert (
        'iifname { "n1", "n2" } ether type { ip, ip6 } numgen random mod 10000 < 100 drop' in text
    )
    assert 'oifname { "ctl" } ether type { ip, ip6 } numgen random mod 10000 < 50 drop' in text
    assert '"n3"' not in text
    assert nft_ruleset({"n1": 0}) == f"table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n"


def test_state_round_trip(tmp_path: Path) -> None:
    from shoal.lab.labstate import load, save

    st = LabState(
        name="x",
        mode="netns",
        dir=str(tmp_path),
        subnet="10.213.0.0/22",
        controller_addr="10.213.0.1",
        controller=Shaping(rate_bps=10**9),
        nodes=[LabNode("n1", "10.213.0.2", 22, "shl-x-n1", 42, "cut", Shaping(loss_bp=5))],
    )
    save(st)
    back = load(tmp_path)
    assert back == st
    assert load(tmp_path / "missing") is None
