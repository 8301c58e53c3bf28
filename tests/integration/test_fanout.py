"""shoal run / cp against a real lab of SSH nodes (issue 4's required tests)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.fanout import FanoutOptions, RunOptions, copy, run
from shoal.fanout.output import group_outputs
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def opts(**kw: object) -> RunOptions:
    return RunOptions(**kw)  # type: ignore[arg-type]


def test_identical_outputs_merge_and_differing_ones_group(lab: Any) -> None:
    nodes = lab.nodes()
    r = run(nodes, "echo same; hostname", opts())
    assert r.ok, [x.reason for x in r.failed]
    assert {x.stdout for x in r} == {f"same\n{n.name}\n" for n in nodes}
    r = run(nodes, 'echo same; [ "$SHOAL_INDEX" = 1 ] && echo odd-one; true', opts())
    groups = group_outputs(r)
    assert len(groups) == 2
    assert len(groups[0].nodes) == len(nodes) - 1 and groups[0].stdout == "same\n"
    assert groups[1].nodes == (nodes[1].name,)


def test_node_killed_mid_run_is_unreachable_and_others_succeed(lab: Any) -> None:
    nodes = lab.nodes()
    victim = nodes[2].name
    timer = threading.Timer(1.0, lab.kill, args=(victim,))
    timer.start()
    try:
        t0 = time.monotonic()
        r = run(nodes, "sleep 3; echo done", opts(keepalive=1.0))
        elapsed = time.monotonic() - t0
    finally:
        timer.join()
        lab.revive(victim)
    assert r[victim].kind in ("unreachable", "timeout"), r[victim]
    others = [x for x in r if x.node != victim]
    assert all(x.ok and x.stdout == "done\n" for x in others)
    assert elapsed < 15


def test_timeout_kills_the_remote_command_and_its_children(lab: Any) -> None:
    nodes = lab.nodes()[:3]
    marker = f"sleep 10{os.getpid() % 1000}"
    r = run(nodes, f"sh -c '{marker} & {marker}; wait'", opts(timeout=1))
    assert all(x.kind == "timeout" for x in r), [x.reason for x in r]
    deadline = time.monotonic() + 20  # TERM at 1 s; KILL after the grace period
    while True:
        left = run(nodes, f"pgrep -f '[{marker[0]}]{marker[1:]}' || echo none", opts())
        if all(x.stdout.strip() == "none" for x in left) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(x.stdout.strip() == "none" for x in left), [x.stdout for x in left]


def test_background_process_does_not_hang_the_run(lab: Any) -> None:
    nodes = lab.nodes()[:4]
    t0 = time.monotonic()
    r = run(nodes, "mkdir -p results; sleep 30 & echo launched", opts(timeout=20))
    elapsed = time.monotonic() - t0
    run(nodes, "pkill -f '[s]leep 30'; rm -rf results", opts())
    assert r.ok and all(x.stdout == "launched\n" for x in r)
    assert elapsed < 10, elapsed  # it would hang until the 20 s timeout


def _lab_setting(lab: Any, key: str) -> str:
    """The first value of an ssh_config keyword in the lab's ssh_config."""
    text = Path(lab.nodes()[0].ssh_config).read_text()
    return next(
        line.split(None, 1)[1].strip()
        for line in text.splitlines()
        if line.strip().lower().startswith(key.lower() + " ")
    )


def _alias_config(lab: Any, real: Node, tmp_path: Path) -> Path:
    """An ssh_config under which any node name reaches ``real`` with the lab's keys."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host *\n  HostKeyAlias {real.name}\n  User root\n"
        f"  IdentityFile {_lab_setting(lab, 'IdentityFile')}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {_lab_setting(lab, 'UserKnownHostsFile')}\n"
    )
    return cfg


def _known_hosts_with_changed_key(lab: Any, tmp_path: Path, changed: str) -> Path:
    """An ssh_config that uses a known_hosts where one node's key is a different key."""
    src = Path(lab.nodes()[0].ssh_config)
    kh_src = _lab_setting(lab, "UserKnownHostsFile")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()[:2]
    node = next(n for n in lab.nodes() if n.name == changed)
    lines = []
    for line in Path(kh_src).read_text().splitlines():
        names = line.split()[0].split(",") if line.strip() else []
        if changed in names or node.host in names:
            line = f"{line.split()[0]} {' '.join(other)}"
        lines.append(line)
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host *\n  UserKnownHostsFile {kh}\n\nInclude {src}\n")
    return cfg


def test_changed_host_key_refuses_only_that_node(lab: Any, tmp_path: Path) -> None:
    victim = lab.nodes()[1].name
    cfg = _known_hosts_with_changed_key(lab, tmp_path, victim)
    nodes = [
        Node(n.name, n.host, n.user, n.port, n.groups, n.attrs, str(cfg)) for n in lab.nodes()[:4]
    ]
    for policy in ("verify", "accept-new"):
        r = run(nodes, "true", opts(host_keys=policy))
        assert r[victim].kind == "hostkey" and "CHANGED" in r[victim].reason
        assert all(x.ok for x in r if x.node != victim)


def test_accept_new_records_unknown_hosts_and_verify_refuses_them(lab: Any, tmp_path: Path) -> None:
    src = Path(lab.nodes()[0].ssh_config)
    kh = tmp_path / "empty_known_hosts"
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host *\n  UserKnownHostsFile {kh}\n\nInclude {src}\n")
    nodes = [
        Node(n.name, n.host, n.user, n.port, n.groups, n.attrs, str(cfg)) for n in lab.nodes()[:2]
    ]
    r = run(nodes, "true", opts())
    assert all(x.kind == "hostkey" and "not in known_hosts" in x.reason for x in r)
    r = run(nodes, "true", opts(host_keys="accept-new"))
    assert r.ok
    assert all(n.name in kh.read_text() for n in nodes)
    assert run(nodes, "true", opts()).ok  # now known


def test_delay_staggers_launches(lab: Any) -> None:
    nodes = lab.nodes()[:4]
    r = run(nodes, "date +%s.%N", opts(delay=0.5, parallel=4))
    starts = sorted(float(x.stdout) for x in r)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # launches are 0.5 s apart; connection set-up time jitters on a loaded machine
    assert starts[-1] - starts[0] > 3 * 0.5 - 0.3, gaps
    assert min(gaps) > 0.2, gaps
    unstaggered = run(nodes, "date +%s.%N", opts(parallel=4))
    spread = [float(x.stdout) for x in unstaggered]
    assert max(spread) - min(spread) < starts[-1] - starts[0]


def test_push_and_pull_with_at_expansion_and_directories(lab: Any, tmp_path: Path) -> None:
    nodes = lab.nodes()[:3]
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("alpha\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o750)
    os.utime(src / "sub" / "a.txt", (1_600_000_000, 1_600_000_000))
    r = copy(nodes, [str(src), "@:deploy/"], FanoutOptions())
    assert r.ok, [x.reason for x in r.failed]
    check = run(
        nodes,
        "stat -c '%a %Y' deploy/tree/run.sh deploy/tree/sub/a.txt; "
        "ls -a deploy/tree | grep -c shoal- || true",
        opts(),
    )
    for x in check:
        mode_line, time_line, tmp_count = x.stdout.split("\n")[:3]
        assert mode_line.split()[0] == "750"
        assert time_line.split()[1] == "1600000000"
        assert tmp_count == "0"
    run(nodes, 'echo "from $SHOAL_NODE" > deploy/tree/sub/who.txt', opts())
    out = tmp_path / "out"
    r = copy(nodes, ["@:deploy/tree/*", f"{out}/@/"], FanoutOptions())
    assert r.ok, [x.reason for x in r.failed]
    for n in nodes:
        assert (out / n.name / "sub" / "who.txt").read_text() == f"from {n.name}\n"
        assert (out / n.name / "run.sh").stat().st_mode & 0o777 == 0o750
    fan = tmp_path / "fan"
    r = copy(nodes, [str(src), f"{fan}/@"], FanoutOptions())
    assert r.ok and sorted(p.name for p in fan.iterdir()) == sorted(n.name for n in nodes)
    run(nodes, "rm -rf deploy", opts())


def test_node_name_with_shell_metacharacters_runs_nothing(lab: Any, tmp_path: Path) -> None:
    real = lab.nodes()[0]
    cfg = _alias_config(lab, real, tmp_path)

    def node(name: str) -> Node:
        return Node(name, real.host, real.user, real.port, (), {}, str(cfg))

    evil = "n1;touch${IFS}/tmp/shoal-pwned;$(touch${IFS}/tmp/shoal-pwned2)`id>/tmp/shoal-pwned3`"
    r = run([node(evil)], 'echo "$SHOAL_NODE"; ls /tmp/shoal-pwned* 2>/dev/null | wc -l', opts())
    assert r[evil].ok, r[evil].reason
    assert r[evil].stdout == f"{evil}\n0\n"
    # a name that is not a single path component is refused for local paths, not mangled
    r = copy([node(evil)], ["@:.bashrc", f"{tmp_path}/@/"], FanoutOptions())
    assert r[evil].kind == "failed" and "cannot be used in a local path" in r[evil].reason
    sneaky = "n1;touch${IFS}pwned;$(touch${IFS}pwned2)"
    os.chdir(tmp_path)
    r = copy([node(sneaky)], ["@:.bashrc", f"{tmp_path}/@/"], FanoutOptions())
    assert r[sneaky].ok, r[sneaky].reason
    assert (tmp_path / sneaky / ".bashrc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([sneaky, "ssh_config"])
    for leftover in ("/tmp/shoal-pwned", "/tmp/shoal-pwned2", "/tmp/shoal-pwned3"):
        assert not Path(leftover).exists()
    check = run([real], "ls /tmp/shoal-pwned* pwned pwned2 2>/dev/null | wc -l", opts())
    assert check[real.name].stdout == "0\n"


def test_disk_full_during_cp_reports_the_node_and_no_partial_file(lab, tmp_path: Path) -> None:
    nodes = lab.nodes()[:3]
    full = nodes[1].name
    prep = run(
        nodes,
        f'mkdir -p small && if [ "$SHOAL_NODE" = {full} ]; then '
        "mount -t tmpfs -o size=1m tmpfs small; fi",
        opts(),
    )
    assert prep.ok, [x.reason for x in prep.failed]
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(4 * 1024 * 1024))
        r = copy(nodes, [str(big), "@:small/"], FanoutOptions())
        assert r[full].kind != "ok" and "no space left" in r[full].reason, r[full].reason
        assert all(x.ok for x in r if x.node != full)
        left = run([n for n in nodes if n.name == full], "ls -A small | wc -l", opts())
        assert left[full].stdout.strip() == "0"
    finally:
        run(nodes, "umount small 2>/dev/null; rm -rf small", opts())


def test_cli_run_summary_exit_code_and_failed_set(lab: Any) -> None:
    shoal = [sys.executable, "-m", "shoal.cli.main"]
    victim = lab.nodes()[-1].name
    lab.kill(victim)
    try:
        p = subprocess.run(
            [*shoal, "run", "-s", "@lab", "--connect-timeout", "2", "--retries", "0", "echo ok"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 3  # exitcodes.UNREACHABLE: some node was not reached
        assert f"unreachable: {victim}" in p.stderr, p.stderr
        assert "ok\n" in p.stdout
        p = subprocess.run([*shoal, "select", "failed"], capture_output=True, text=True, timeout=30)
        assert victim in p.stdout, p.stdout
    finally:
        lab.revive(victim)
    p = subprocess.run(
        [*shoal, "run", "-s", "failed", "hostname"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith(victim)
    assert "1 node in" in p.stderr


def test_cli_json_stream_and_out_dir(lab: Any, tmp_path: Path) -> None:
    import json

    shoal = [sys.executable, "-m", "shoal.cli.main", "run", "-s", "@lab"]
    p = subprocess.run(
        [*shoal, "--json", "echo hi; echo oops >&2; exit 3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 1 and len(records) == len(lab.nodes())
    first = records[0]
    assert (first["status"], first["exit_code"], first["stdout"], first["stderr"]) == (
        "failed",
        3,
        "hi\n",
        "oops\n",
    )
    assert first["node"] == "n1" and first["duration"] > 0
    p = subprocess.run(
        [*shoal, "--stream", "echo line-$SHOAL_NODE"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0
    assert sorted(p.stdout.splitlines()) == sorted(f"{n.name}: line-{n.name}" for n in lab.nodes())
    out = tmp_path / "out"
    p = subprocess.run(
        [*shoal, "--out-dir", str(out), "hostname"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0
    assert {f.name: f.read_text() for f in out.iterdir()} == {
        n.name: f"{n.name}\n" for n in lab.nodes()
    }


def test_retries_ride_out_maxstartups_drops(lab: Any, tmp_path: Path) -> None:
    """sshd drops connections beyond MaxStartups during the banner; retries recover them."""
    import secrets

    from shoal.lab import Lab, LabSpec

    small = Lab.up(LabSpec(n=1, name=f"ms{secrets.token_hex(3)}"))
    try:
        cfg_path = small.dir / "etc" / "sshd_config"
        text = cfg_path.read_text()
        assert "MaxStartups 100:30:200" in text
        cfg_path.write_text(text.replace("MaxStartups 100:30:200", "MaxStartups 2:100:2"))
        small.kill("n1")
        small.revive("n1")  # sshd restarts with the new limit
        real = small.nodes()[0]
        cfg = _alias_config(small, real, tmp_path)
        aliases = [
            Node(f"a{i}", real.host, real.user, real.port, (), {}, str(cfg)) for i in range(12)
        ]
        dropped = run(aliases, "true", opts(retries=0))
        lost = [x for x in dropped if not x.ok]
        assert lost, "MaxStartups 2 let 12 simultaneous handshakes through"
        assert all(x.kind == "unreachable" for x in lost), [(x.node, x.reason) for x in dropped]
        recovered = run(aliases, "true", opts(retries=8, retry_backoff=0.2))
        assert recovered.ok, [x.reason for x in recovered.failed]
        assert max(x.attempts for x in recovered) > 1
    finally:
        small.down()


def test_input_to_a_command_that_exits_without_reading_it_is_no_error(lab: Any) -> None:
    """The remote may close the channel before the input is written: its exit status
    is the answer, not a broken pipe (agent probes on fresh nodes hit this race)."""
    import asyncio

    from shoal.fanout.results import CommandOutcome, CommandOutput
    from shoal.fanout.scheduler import fanout

    async def op(conn: Any, node: Node, index: int) -> CommandOutcome:
        codes = []
        for _ in range(10):
            res = await conn.run("exit 3", input=b"x" * 65536)
            codes.append(res.exit_status)
        return CommandOutcome(node.name, CommandOutput(exit_status=0 if codes == [3] * 10 else 1))

    r = asyncio.run(fanout(lab.nodes(), op, FanoutOptions()))
    assert r.ok, [(x.node, x.reason) for x in r.failed]


def test_a_library_run_writes_no_state_and_the_cli_records_health(
    lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shoal.fanout.run`` records nothing (the scheduler has no side effects): with
    SHOAL_HOME an empty directory, a run that fails on every node creates no state file;
    recording is the caller's, through ``health.record``."""
    from shoal.nodes import health
    from shoal.state import State

    empty = tmp_path / "home"
    empty.mkdir()
    monkeypatch.setenv("SHOAL_HOME", str(empty))
    nodes = lab.nodes()[:3]
    r = run(nodes, "exit 3", opts())
    assert not r.ok and {x.kind for x in r} == {"failed"}
    assert list(empty.iterdir()) == []  # no state.db, nothing else
    health.record(r, health.Policy.OUTCOME)
    with State() as st:
        assert health.failed_names(st) == {n.name for n in nodes}


def test_cli_run_keeps_max_output_per_node_and_names_the_nodes_it_cut(lab: Any) -> None:
    import json

    pair = [n.name for n in lab.nodes()[:2]]
    shoal = [sys.executable, "-m", "shoal.cli.main", "run", "-s", ",".join(pair)]
    big = "head -c 3000000 /dev/zero | tr '\\0' x; echo err >&2"
    p = subprocess.run(
        [*shoal, "--max-output", "1M", "--json", big], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["node"] for r in records] == pair
    for r in records:
        assert r["stdout"] == "x" * (1 << 20) and r["stderr"] == "err\n"
        assert r["dropped"] == 3_000_000 - (1 << 20)
    p = subprocess.run([*shoal, "--max-output", "64K", big], capture_output=True, timeout=60)
    assert p.returncode == 0
    assert p.stdout.count(b"x") == 65536, len(p.stdout)  # one group: the same output
    cut = f"  cut: n[1-2] — output beyond --max-output not kept ({2 * (3_000_000 - 65536):,} bytes)"
    assert cut in p.stderr.decode(), p.stderr
    p = subprocess.run([*shoal, "--max-output", "1.5M", "true"], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"--max-output" in p.stderr
