"""Every command the controller builds works on nodes whose home is ``/root/it's [home]``.

A separate 2-node lab (``LabSpec.home``: sessions get ``/root/it's [home]`` as
``$HOME`` and start there) with its own ``SHOAL_HOME`` (named ``state it's``),
so its nodes own group ``lab`` there and the shared 8-node lab is left alone.
Local files also have a space and a quote in their names. Each test drives the
CLI (or the library where the CLI has no switch) and then checks on the node
that things landed in the odd home and nowhere else (no ``/root/it's`` or
``[home]`` split off)."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.app.runtime import UpOptions
from shoal.lab import Lab, LabSpec
from shoal.nodes.model import Node

from .conftest import lab_skip_reason, unique_lab_name
from .conftest import remote as _remote

pytestmark = pytest.mark.lab

ODD = "it's [home]"  # a space, a quote, and glob characters for the SFTP patterns
HOME = f"/root/{ODD}"
SHOAL = [sys.executable, "-m", "shoal.cli.main"]


@pytest.fixture(scope="module")
def odd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-node lab whose nodes' home is ``/root/it's home``, under its own SHOAL_HOME."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    old = os.environ.get("SHOAL_HOME")
    os.environ["SHOAL_HOME"] = str(tmp_path_factory.mktemp("state it's"))
    try:
        the_lab = Lab.up(LabSpec(n=2, name=unique_lab_name("q"), home=ODD))
        try:
            yield the_lab
        finally:
            the_lab.down()
    finally:
        if old is None:
            os.environ.pop("SHOAL_HOME", None)
        else:
            os.environ["SHOAL_HOME"] = old


def shoal(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def remote(node: Node, command: str) -> str:
    return _remote(node, command, check=False)


def no_split_paths(lab: Lab) -> None:
    """Nothing was made at the words an unquoted ``/root/it's [home]/...`` splits into."""
    tail = shlex.quote(f"{HOME}/{ODD.split()[-1]}")
    for node in lab.nodes():
        assert set(remote(node, "ls -A /root").splitlines()) == {ODD, ".ssh"}
        assert remote(node, f"ls -d {tail} 2>/dev/null; true") == ""


def test_run_starts_in_the_odd_home_with_and_without_a_timeout(odd_lab: Lab) -> None:
    for extra in ([], ["--timeout", "20"]):
        p = shoal("run", "-s", "@lab", *extra, 'pwd; printf "%s\\n" "$HOME"; cd ~ && pwd')
        assert p.returncode == 0, p.stderr
        assert f"{HOME}\n{HOME}\n{HOME}\n" in p.stdout, p.stdout


def test_cp_to_and_from_the_odd_home(odd_lab: Lab, tmp_path: Path) -> None:
    local = tmp_path / "loc dir's"
    local.mkdir()
    (local / "f it's.txt").write_text("hello\n")
    p = shoal("cp", str(local / "f it's.txt"), "@:sub dir's/")
    assert p.returncode == 0, p.stderr
    for node in odd_lab.nodes():
        assert remote(node, "cat " + shlex.quote(f"{HOME}/sub dir's/f it's.txt")) == "hello\n"
    out = tmp_path / "out it's"
    p = shoal("cp", "@:sub dir's/f it's.txt", f"{out}/@/")
    assert p.returncode == 0, p.stderr
    for node in odd_lab.nodes():
        assert (out / node.name / "f it's.txt").read_text() == "hello\n"
    no_split_paths(odd_lab)


@pytest.mark.parametrize("area", [None, "~/ag it's"])
def test_agent_install_and_status_in_the_odd_home(odd_lab: Lab, area: str | None) -> None:
    opt = ["--home", area] if area else []
    where = f"{HOME}/{area[2:]}" if area else f"{HOME}/.shoal"
    p = shoal("agent", "install", "-s", "@lab", *opt)
    assert p.returncode == 0, p.stdout + p.stderr
    p = shoal("agent", "status", "-s", "@lab", *opt)
    assert p.returncode == 0, p.stdout + p.stderr
    assert all(f"{n.name} " in p.stdout for n in odd_lab.nodes()), p.stdout
    quoted = shlex.quote(where)
    for node in odd_lab.nodes():
        assert remote(node, f"test -S {quoted}/agent.sock && cat {quoted}/agent.build")
    no_split_paths(odd_lab)


def test_push_into_the_odd_home(odd_lab: Lab, tmp_path: Path) -> None:
    site = tmp_path / "site it's"
    site.mkdir()
    (site / "index it's.html").write_text("v1\n")
    for dest in ("sites/it's v", "~/sites2/a b"):
        p = shoal("push", "--no-progress", str(site), dest)
        assert p.returncode == 0, p.stdout + p.stderr
    for node in odd_lab.nodes():
        assert remote(node, "cat \"sites/it's v/index it's.html\"") == "v1\n"
        assert remote(node, f'cat "{HOME}/sites2/a b/index it\'s.html"') == "v1\n"
    no_split_paths(odd_lab)


APP = """\
app: {name}
software:
  tool:
    source: tool
    install: ["test -f mark.py"]
components:
  svc:
    select: "@lab"
    count: 2
    software: [tool]
    processes:
      - {{name: mark, run: "python3 ${{sw.tool}}/mark.py ${{dir}}/marked ${{node}}"}}
      - {{name: server, service: "exec sleep 600", ready: "test -f ${{dir}}/marked"}}
"""


def app_spec(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "app it's"
    (root / "tool").mkdir(parents=True)
    (root / "tool" / "mark.py").write_text(
        "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text(sys.argv[2] + '\\n')\n"
    )
    path = root / "app.yaml"
    path.write_text(textwrap.dedent(APP.format(name=name)))
    return path


def assert_app_runs(lab: Lab, name: str, up: Any) -> None:
    """Its run step wrote ``${dir}/marked`` in the odd home, its services run."""
    for node in lab.nodes():
        assert (
            remote(node, "cat " + shlex.quote(f"{HOME}/.shoal/apps/{name}/marked"))
            == f"{node.name}\n"
        ), up
    status = asyncio.run(lifecycle.status_async(name))
    states = [p["state"] for n in status.nodes for p in n.programs]
    assert states == ["RUNNING", "RUNNING"] and status.healthy, status


def test_app_up_and_down_in_the_odd_home(odd_lab: Lab, tmp_path: Path) -> None:
    path = app_spec(tmp_path, "oddapp")
    try:
        p = shoal("app", "up", "--detach", str(path))
        assert p.returncode == 0, p.stdout + p.stderr
        assert_app_runs(odd_lab, "oddapp", p.stdout + p.stderr)
        p = shoal("app", "logs", "oddapp")
        assert p.returncode == 0 and "oddapp.svc.mark.log" in p.stdout, p.stdout + p.stderr
    finally:
        p = shoal("app", "down", "oddapp", "--collect", str(tmp_path / "logs it's"))
    assert p.returncode == 0, p.stdout + p.stderr
    for node in odd_lab.nodes():  # logs collected from the odd home (SFTP glob patterns)
        assert (tmp_path / "logs it's" / node.name / "steps" / "oddapp.svc.mark.log").is_file()
    for node in odd_lab.nodes():
        assert remote(node, f"ls -A {shlex.quote(HOME)}/.shoal/apps 2>/dev/null; true") == ""
    no_split_paths(odd_lab)


def test_app_without_software_gets_its_directory_in_the_odd_home(
    odd_lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "bare it's.yaml"
    path.write_text(
        "app: oddbare\ncomponents:\n  svc:\n    select: '@lab'\n    count: 2\n    processes:\n"
        '      - {name: mark, run: "pwd > marked"}\n'
    )
    try:
        p = shoal("app", "up", "--detach", str(path))
        assert p.returncode == 0, p.stdout + p.stderr
        for node in odd_lab.nodes():
            marked = shlex.quote(f"{HOME}/.shoal/apps/oddbare/marked")
            assert remote(node, f"cat {marked}") == f"{HOME}/.shoal/apps/oddbare\n"
            # the controller's own mkdir step ran cleanly (it used to die on the quote)
            assert remote(node, "cat .shoal/logs/steps/oddbare.mkdir.log") == ""
    finally:
        p = shoal("app", "down", "oddbare")
    assert p.returncode == 0, p.stdout + p.stderr
    no_split_paths(odd_lab)


def test_app_software_by_sftp_copy_in_the_odd_home(odd_lab: Lab, tmp_path: Path) -> None:
    spec = load(app_spec(tmp_path, "oddcopy"))
    try:
        report = asyncio.run(lifecycle.up_async(spec, UpOptions(software_method="copy")))
        assert report.failed == {}
        assert_app_runs(odd_lab, "oddcopy", report)
    finally:
        down = asyncio.run(lifecycle.down_async("oddcopy"))
    assert all(v == "cleaned" for v in down.nodes.values()), down.nodes
    no_split_paths(odd_lab)
