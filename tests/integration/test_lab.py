"""The lab against the real system: namespaces, sshd, tc, nftables, processes."""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import LabError, UsageError
from shoal.lab import Lab, LabSpec, ShapeChange, Shaping
from shoal.lab import system as labsys
from shoal.lab.labspec import Naming

pytestmark = pytest.mark.lab


def unique_lab_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def ssh(
    lab: Lab, node: str, command: str, timeout: float = 20, **opts: str
) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-F", str(lab.ssh_config), "-o", "BatchMode=yes"]
    for k, v in opts.items():
        argv += ["-o", f"{k}={v}"]
    return subprocess.run(
        [*argv, node, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def shoal_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def kernel_leftovers(name: str) -> dict[str, list[str]]:
    """Everything of lab ``name`` the kernel still has: namespaces, links, processes."""
    naming = Naming(name)
    pattern = naming.ns_pattern()
    namespaces = [ns for ns in labsys.list_netns() if pattern.match(ns)]
    links = [ln for ln in labsys.link_names() if ln == naming.root_link]
    procs = [
        str(p)
        for p in labsys.pids_matching(cmdline=f"/labs/{name}/")
        + labsys.pids_matching(cmdline=f"shl-{name}-")
    ]
    return {"netns": namespaces, "links": links, "procs": procs}


def nothing_left(name: str) -> bool:
    return not any(kernel_leftovers(name).values())


# ------------------------------------------------------------------ reachability


def test_every_node_answers_ssh_with_a_verified_host_key(lab: Lab) -> None:
    for node in lab.nodes():
        out = ssh(lab, node.name, "hostname")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == node.name
    # by address too, as a transport that connects to Node.host does
    first = lab.nodes()[0]
    assert ssh(lab, first.host or "", "hostname").stdout.strip() == first.name


def test_host_key_is_checked_not_accepted(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    out = ssh(lab, "n1", "true", UserKnownHostsFile=str(empty))
    assert out.returncode == 255
    assert "Host key verification failed" in out.stderr
    # and a wrong key is refused
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    addr = lab.nodes()[0].host
    empty.write_text(f"n1,{addr} {pub}\n")
    out = ssh(lab, "n1", "true", UserKnownHostsFile=str(empty))
    assert out.returncode == 255 and "verification failed" in out.stderr


def test_lab_files_and_node_records(lab: Lab) -> None:
    names = [f"n{i}" for i in range(1, 9)]
    assert lab.inventory.read_text().split() == names
    nodes = lab.nodes()
    assert [n.name for n in nodes] == names
    assert all(n.user == "root" and n.port == 22 and n.groups == ("lab",) for n in nodes)
    assert all(n.ssh_config == str(lab.ssh_config) for n in nodes)
    assert len({n.host for n in nodes}) == 8
    known = lab.known_hosts.read_text().splitlines()
    assert len(known) == 8 and all(line.split()[1] == "ssh-ed25519" for line in known)
    st = lab.status()
    assert st.mode == "netns" and all(n.state == "up" and n.running for n in st.nodes)


# ------------------------------------------------------------------ isolation


def test_each_node_has_its_own_hostname_home_and_tmp(lab: Lab) -> None:
    token = f"only-n1-{os.getpid()}"
    out = ssh(lab, "n1", f"echo {token} > ~/{token} && echo {token} > /tmp/{token} && hostname")
    assert out.returncode == 0 and out.stdout.strip() == "n1", out.stderr
    try:
        for node in ("n2", "n3"):
            seen = ssh(lab, node, "hostname; ls -a ~ /tmp; cat ~/.bashrc | wc -c; echo $HOME")
            assert seen.returncode == 0, seen.stderr
            assert seen.stdout.splitlines()[0] == node
            assert token not in seen.stdout
        back = ssh(lab, "n1", f"cat ~/{token} /tmp/{token}")
        assert back.stdout.split() == [token, token]
        # the node's home is the lab's per-node directory, persistent on disk
        assert (lab.node_dir("n1") / "home" / token).read_text().strip() == token
        # nodes cannot see the lab directory (keys, other nodes' homes)
        hidden = ssh(lab, "n2", f"ls {lab.dir}/nodes 2>/dev/null | wc -l")
        assert hidden.stdout.strip() == "0"
        # the node's shell does not start the machine's pyenv .bashrc
        assert ssh(lab, "n2", "cat ~/.bashrc | wc -c").stdout.strip() == "0"
    finally:
        ssh(lab, "n1", f"rm -f ~/{token} /tmp/{token}")


# ------------------------------------------------------------------ shaping


def _measure_rate(lab: Lab, src: str, dst: str, seconds: float = 3.0) -> float:
    from shoal.lab.measure import transfer_rate

    return transfer_rate(lab, src, dst, seconds)


def test_rate_shaping_is_measurably_applied(lab: Lab) -> None:
    rate = 100_000_000
    unshaped = _measure_rate(lab, "n5", "n6", seconds=1.5)
    try:
        for node in ("n5", "n6"):
            lab.shape(node, ShapeChange(rate_bps=rate))
        measured = _measure_rate(lab, "n5", "n6")
        assert abs(measured - rate) <= 0.15 * rate, f"measured {measured / 1e6:.1f} Mbit/s"
        # a live change takes effect too: 20 Mbit/s on the sender's upload
        lab.shape("n5", ShapeChange(rate_bps=20_000_000))
        slower = _measure_rate(lab, "n5", "n6", seconds=2.5)
        assert abs(slower - 20e6) <= 0.15 * 20e6, f"measured {slower / 1e6:.1f} Mbit/s"
    finally:
        for node in ("n5", "n6"):
            lab.shape(node, ShapeChange(clear_rate=True))
    assert unshaped > 3 * rate, f"unshaped only {unshaped / 1e6:.0f} Mbit/s"
    assert all(n.shaping == Shaping() for n in lab.status().nodes if n.name in ("n5", "n6"))


def test_controller_link_is_shaped_too(lab: Lab) -> None:
    rate = 40_000_000
    try:
        lab.shape("controller", ShapeChange(rate_bps=rate))
        measured = _measure_rate(lab, "controller", "n6", seconds=2.5)
        assert abs(measured - rate) <= 0.15 * rate, f"measured {measured / 1e6:.1f} Mbit/s"
        assert lab.status().controller.rate_bps == rate
    finally:
        lab.shape("controller", ShapeChange(clear_rate=True))
    assert lab.status().controller == Shaping()


def _udp_delivery(lab: Lab, src: str, dst: str, count: int = 3000) -> float:
    dst_addr = next(n.host for n in lab.nodes() if n.name == dst)
    server = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5202)); s.settimeout(1.0)
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(2048); n += 1
except socket.timeout:
    pass
print(n)
"""
    client = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({count}):
    s.sendto(b"x" * 100, ("{dst_addr}", 5202))
    if i % 100 == 0: time.sleep(0.002)
"""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns_of(dst), PY, "-u", "-c", server],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        subprocess.run(
            ["ip", "netns", "exec", lab.netns_of(src), PY, "-c", client], check=True, timeout=30
        )
        out, _ = srv.communicate(timeout=20)
        return int(out.strip()) / count
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def test_loss_is_measurably_applied(lab: Lab) -> None:
    assert _udp_delivery(lab, "n7", "n8") > 0.99
    try:
        lab.shape("n7", ShapeChange(loss_bp=2000))  # 20% each way on n7's link
        delivered = _udp_delivery(lab, "n7", "n8")
        assert 0.74 <= delivered <= 0.86, delivered
    finally:
        lab.shape("n7", ShapeChange(loss_bp=0))
    assert _udp_delivery(lab, "n7", "n8") > 0.99


def test_bridged_frames_skip_the_ip_firewall_hooks(lab: Lab) -> None:
    """br_netfilter would run every bridged packet through the switch's IP hooks."""
    switch = lab.switch_netns
    for table in ("iptables", "ip6tables", "arptables"):
        path = f"/proc/sys/net/bridge/bridge-nf-call-{table}"
        if not os.path.exists(path):
            continue  # br_netfilter not loaded on this host: nothing to turn off
        out = subprocess.run(
            ["ip", "netns", "exec", switch, "cat", path], capture_output=True, text=True
        )
        assert out.stdout.strip() == "0", (table, out.stdout, out.stderr)


def test_delay_works_or_says_netem_is_missing(lab: Lab) -> None:
    has_netem = (
        subprocess.run(
            [
                "unshare",
                "--net",
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    before = lab.status()
    if not has_netem:
        with pytest.raises(LabError) as err:
            lab.shape("n4", ShapeChange(delay_us=20_000))
        assert "netem" in str(err.value) and "\n" not in str(err.value)
        assert lab.status() == before
        name = unique_lab_name("n")
        out = shoal_cli("lab", "up", "2", "--delay", "20ms", "--name", name)
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "netem" in out.stderr
        assert nothing_left(name) and not (lab.dir.parent / name).exists()
        return
    try:
        lab.shape("n4", ShapeChange(delay_us=50_000))
        t0 = time.monotonic()
        with socket.create_connection((next(n.host for n in lab.nodes() if n.name == "n4"), 22)):
            rtt = time.monotonic() - t0
        assert rtt >= 0.09  # 50 ms each way on the node's link
    finally:
        lab.shape("n4", ShapeChange(clear_delay=True))


# ------------------------------------------------------------------ failures


def test_kill_makes_node_unreachable_and_revive_brings_it_back(lab: Lab) -> None:
    node = "n3"
    out = ssh(lab, node, "echo kept > ~/kept; nohup sleep 600 >/dev/null 2>&1 & echo $!")
    assert out.returncode == 0, out.stderr
    sleeper = int(out.stdout.strip())
    try:
        lab.kill(node)
        assert not labsys.alive(sleeper)
        inode = labsys.netns_inode(lab.netns_of(node))
        assert inode is not None and labsys.pids_by_netns({inode})[inode] == []
        down = ssh(lab, node, "true", ConnectTimeout="2")
        assert down.returncode == 255 and "timed out" in down.stderr
        st = {n.name: n for n in lab.status().nodes}
        assert st[node].state == "killed" and not st[node].running
        assert ssh(lab, "n2", "true").returncode == 0  # the others are untouched
    finally:
        lab.revive(node)
    back = ssh(lab, node, "hostname; cat ~/kept")
    assert back.returncode == 0, back.stderr
    assert back.stdout.split() == [node, "kept"]
    assert {n.name: n.state for n in lab.status().nodes}[node] == "up"


def test_cut_stops_traffic_but_not_processes(lab: Lab) -> None:
    node = "n4"
    out = ssh(lab, node, "nohup sleep 600 >/dev/null 2>&1 & echo $!")
    sleeper = int(out.stdout.strip())
    try:
        lab.cut(node)
        assert ssh(lab, node, "true", ConnectTimeout="2").returncode == 255
        assert labsys.alive(sleeper)
        with pytest.raises(LabError, match="revive"):
            lab.kill(node)
            lab.heal(node)
    finally:
        lab.revive(node)
        labsys.kill_and_wait([sleeper], "test cleanup")
    assert ssh(lab, node, "true").returncode == 0


# ------------------------------------------------------------------ bad input


def _snapshot(lab: Lab, argv: list[str]) -> tuple[object, ...]:
    """What the command could have touched: this lab, and the lab it names or
    ``default`` (other engineers' labs come and go on this machine meanwhile)."""
    names = {lab.name, "default"} | {b for a, b in itertools.pairwise(argv) if a == "--name"}
    patterns = [Naming(n).ns_pattern() for n in names]
    links = {Naming(n).root_link for n in names}
    labs = sorted(p.name for p in lab.dir.parent.iterdir())
    return (
        [ns for ns in labsys.list_netns() if any(p.match(ns) for p in patterns)],
        sorted(ln for ln in labsys.link_names() if ln in links),
        labs,
        (lab.dir / "state.json").read_text(),
        lab.ssh_config.read_text(),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["lab", "up", "0"],
        ["lab", "up", "100000"],
        ["lab", "up", "2", "--rate", "10furlongs"],
        ["lab", "up", "2", "--loss", "150%"],
        ["lab", "up", "2", "--name", "Bad_Name"],
        ["lab", "kill", "n99", "--name", "{lab}"],
        ["lab", "kill", "bogus", "--name", "{lab}"],
        ["lab", "shape", "n1", "--rate", "10furlongs", "--name", "{lab}"],
        ["lab", "shape", "n1", "--loss=-1%", "--name", "{lab}"],
        ["lab", "shape", "n99", "--rate", "1mbit", "--name", "{lab}"],
        ["lab", "up", "2", "--name", "{lab}"],
        ["lab", "status", "--name", "nosuchlab"],
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(lab: Lab, args: list[str]) -> None:
    argv = [a.replace("{lab}", lab.name) for a in args]
    before = _snapshot(lab, argv)
    assert before[0], "the snapshot must see the session lab's namespaces"
    out = shoal_cli(*argv)
    assert out.returncode in (1, 2), out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal: error: "), out.stderr
    assert _snapshot(lab, argv) == before


def test_up_on_existing_lab_says_how_to_recover(lab: Lab) -> None:
    with pytest.raises(LabError) as err:
        Lab.up(LabSpec(n=2, name=lab.name))
    assert f"shoal lab down --name {lab.name}" in str(err.value)


# ------------------------------------------------------------------ down


def test_second_lab_side_by_side_and_down_leaves_nothing(lab: Lab) -> None:
    name = unique_lab_name("d")
    other = Lab.up(LabSpec(n=3, name=name, shaping=Shaping(rate_bps=50_000_000, loss_bp=10)))
    try:
        assert other.status().subnet != lab.status().subnet
        assert ssh(other, "n1", "hostname").stdout.strip() == "n1"
        assert ssh(lab, "n1", "hostname").stdout.strip() == "n1"
        assert not nothing_left(name)
    finally:
        report = other.down()
    assert report.namespaces == 4 and report.links == (Naming(name).root_link,)
    assert nothing_left(name), kernel_leftovers(name)
    assert not other.dir.exists()
    # the session lab is untouched
    assert ssh(lab, "n1", "true").returncode == 0


def test_down_cleans_up_after_a_killed_up(lab: Lab) -> None:
    name = unique_lab_name("k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli.main", "lab", "up", "48", "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 20
        target = Naming(name).node_ns("n1")
        while time.monotonic() < deadline and target not in labsys.list_netns():
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not nothing_left(name), "the interrupted up left nothing to clean"
        out = shoal_cli("lab", "down", "--name", name)
        assert out.returncode == 0, out.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Lab.teardown(name)
    assert nothing_left(name), kernel_leftovers(name)
    assert not (lab.dir.parent / name).exists()


def test_down_finds_leftovers_without_any_state(lab: Lab) -> None:
    """Simulate a crash before the first state write: only kernel objects remain."""
    name = unique_lab_name("s")
    naming = Naming(name)
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        for ns in (naming.switch_ns, naming.node_ns("n1"), naming.node_ns("n2")):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(
            ["ip", "link", "add", naming.root_link, "type", "veth", "peer", "name", "ctl",
             "netns", naming.switch_ns],
            check=True,
        )  # fmt: skip
        sleeper = subprocess.Popen(
            ["ip", "netns", "exec", naming.node_ns("n2"), "sleep", "600"], start_new_session=True
        )
        time.sleep(0.2)
        assert not nothing_left(name)
        report = Lab.teardown(name)
        assert report.namespaces == 3 and report.links == (naming.root_link,)
        assert report.processes >= 1
        sleeper.wait(timeout=5)
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        Lab.teardown(name)
    assert nothing_left(name), kernel_leftovers(name)


# ------------------------------------------------------------------ rootless


@pytest.fixture
def rootless_lab(shoal_home: Path) -> Iterator[Lab]:
    if not os.access("/usr/sbin/sshd", os.X_OK):
        pytest.skip("rootless lab tests need /usr/sbin/sshd (apt-get install openssh-server)")
    the_lab = Lab.up(LabSpec(n=3, name=unique_lab_name("r"), rootless=True))
    try:
        yield the_lab
    finally:
        the_lab.down()


def test_rootless_lab_serves_ssh_with_own_homes(rootless_lab: Lab) -> None:
    lab = rootless_lab
    nodes = lab.nodes()
    assert all(n.host == "127.0.0.1" for n in nodes) and len({n.port for n in nodes}) == 3
    out = ssh(lab, "n1", "echo mine > f; pwd; echo $HOME; cat ~/.bashrc | wc -c")
    assert out.returncode == 0, out.stderr
    home = str(lab.node_dir("n1") / "home")
    assert out.stdout.split() == [home, home, "0"]
    assert ssh(lab, "n2", "ls").stdout.strip() == ""
    assert ssh(lab, "n1", "cat f").stdout.strip() == "mine"
    # sftp works and lands in the node's home
    sftp = subprocess.run(
        ["sftp", "-F", str(lab.ssh_config), "-b", "-", "n2"],
        input="put /etc/hostname copied\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert (lab.node_dir("n2") / "home" / "copied").exists()


def test_rootless_says_what_needs_root_and_emulates_kill(rootless_lab: Lab) -> None:
    lab = rootless_lab
    for action in (lab.cut, lab.heal):
        with pytest.raises(LabError, match="needs root"):
            action("n1")
    with pytest.raises(LabError, match="needs root"):
        lab.shape("n1", ShapeChange(rate_bps=10**6))
    sleeper = int(ssh(lab, "n2", "nohup sleep 600 >/dev/null 2>&1 & echo $!").stdout)
    try:
        lab.kill("n2")
        assert not labsys.alive(sleeper)
        out = ssh(lab, "n2", "true", ConnectTimeout="2", timeout=8)
        assert out.returncode == 255
    finally:
        lab.revive("n2")
    assert ssh(lab, "n2", "cat ~/.bashrc | wc -c").stdout.strip() == "0"


def test_rootless_down_leaves_no_process(rootless_lab: Lab, shoal_home: Path) -> None:
    lab = Lab.up(LabSpec(n=2, name=unique_lab_name("r"), rootless=True))
    pids = [n.pid for n in lab.status().nodes]
    lab.down()
    assert all(p is not None and not labsys.alive(p) for p in pids)
    assert not lab.dir.exists()


def test_unknown_node_is_an_error(lab: Lab) -> None:
    with pytest.raises((LabError, UsageError)):
        lab.kill("n99")


def test_up_registers_nodes_in_the_inventory_and_down_removes_them(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.nodes import inventory
    from shoal.state import State

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))

    def members() -> dict[str, str | None]:
        with State() as st:
            inventory.ensure(st)
            return {n.name: n.ssh_config for n in inventory.load_nodes(st) if "lab" in n.groups}

    first = Lab.up(LabSpec(n=2, name=unique_lab_name("i")))
    second: Lab | None = None
    try:
        assert members() == {"n1": str(first.ssh_config), "n2": str(first.ssh_config)}
        second = Lab.up(LabSpec(n=3, name=unique_lab_name("i")))
        # the second lab does not take over names a live lab owns
        assert members() == {"n1": str(first.ssh_config), "n2": str(first.ssh_config)}
        first.down()
        assert members() == {}
    finally:
        first.down()
        if second is not None:
            second.down()
