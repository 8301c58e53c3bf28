"""Pulls from a hostile node never write, follow or chmod outside their destination
(issue 11 items 1 and 8): ``shoal cp '@:...' DIR/@/`` and ``app down --collect``.

Each test plants a tree on a real lab node, pulls it, and checks the controller
directory the tree points at is exactly as before (entries and mode), and that the
refusal is a ``local`` error naming the path.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.fanout import FanoutOptions, RunOptions, copy, run
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def plant(node: Node, script: str, victim: Path | None = None) -> None:
    """Run ``script`` on the node; with ``victim``, first make that path exist there too
    (the node's /tmp is its own), so links to it resolve on the node and globs match."""
    if victim is not None:
        script = f"mkdir -p {victim} && {script}"
    r = run([node], script, RunOptions())
    assert r.ok, r[node.name].reason + r[node.name].stderr


def pull(node: Node, *args: str) -> Any:
    return copy([node], list(args), FanoutOptions())[node.name]


def snapshot(path: Path) -> tuple[int, list[str]]:
    return os.stat(path).st_mode, sorted(os.listdir(path))


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    """A controller directory a hostile node would like to write into and chmod."""
    path = tmp_path / "victim"
    path.mkdir(mode=0o750)
    path.chmod(0o750)
    (path / "keep.txt").write_text("mine\n")
    return path


def test_glob_matches_cannot_write_through_a_planted_symlink(
    lab: Any, tmp_path: Path, victim: Path
) -> None:
    node = lab.nodes()[0]
    plant(
        node,
        f"rm -rf exp && mkdir -p exp/a exp/z/data && ln -s {victim} exp/a/data && "
        "echo evil > exp/z/data/evil.txt && chmod 777 exp/z/data",
        victim,
    )
    before = snapshot(victim)
    res = pull(node, "@:exp/*/data", f"{tmp_path}/out/@/")
    assert snapshot(victim) == before
    assert res.kind == "local", res
    assert "exp/a/data" in res.reason and "exp/z/data" in res.reason, res.reason
    assert not (tmp_path / "out" / node.name / "data").exists()  # checked before writing
    plant(node, "rm -rf exp")


@pytest.mark.parametrize(
    "link",
    ["VICTIM", "../../..", "sub/up", "sub/up/../.."],
    ids=["absolute", "dotdot", "via-inner-link", "via-inner-link-dotdot"],
)
def test_symlink_out_of_the_pulled_tree_is_refused_by_name(
    lab: Any, tmp_path: Path, victim: Path, link: str
) -> None:
    node = lab.nodes()[1]
    target = str(victim) if link == "VICTIM" else link
    plant(
        node,
        "rm -rf exp2 && mkdir -p exp2/tree/sub && echo ok > exp2/tree/ok.txt && "
        f"ln -s .. exp2/tree/sub/up && ln -s '{target}' exp2/tree/bad",
        victim,
    )
    before = snapshot(victim)
    res = pull(node, "@:exp2/tree", f"{tmp_path}/out/@/")
    assert snapshot(victim) == before
    if link == "sub/up":  # sub/up is the tree itself: inside, so copied as a link
        assert res.ok, res.reason
        bad = tmp_path / "out" / node.name / "tree" / "bad"
        assert os.readlink(bad) == "sub/up" and (bad / "ok.txt").read_text() == "ok\n"
    else:
        assert res.kind == "local", res
        assert "exp2/tree/bad" in res.reason and "out of the pulled tree" in res.reason
        assert not (tmp_path / "out" / node.name / "tree").exists()
    plant(node, "rm -rf exp2")


def test_a_pulled_symlink_at_the_top_is_refused_with_the_way_to_follow_it(
    lab: Any, tmp_path: Path, victim: Path
) -> None:
    node = lab.nodes()[1]
    plant(
        node,
        f"rm -rf exp5 && mkdir -p exp5/real && echo x > exp5/real/f && ln -s {victim} exp5/l",
        victim,
    )
    res = pull(node, "@:exp5/l", f"{tmp_path}/out/@/")
    assert res.kind == "local" and "exp5/l/" in res.reason, res
    assert not (tmp_path / "out" / node.name / "l").exists()
    plant(node, "rm exp5/l && ln -s real exp5/l")
    res = pull(node, "@:exp5/l/", f"{tmp_path}/out/@/")  # a trailing / follows it on the node
    assert res.ok, res.reason
    assert (tmp_path / "out" / node.name / "l" / "f").read_text() == "x\n"
    plant(node, "rm -rf exp5")


def test_existing_local_symlink_in_the_destination_is_never_followed(
    lab: Any, tmp_path: Path, victim: Path
) -> None:
    node = lab.nodes()[2]
    plant(
        node,
        "rm -rf exp3 && mkdir -p exp3/tree && echo new > exp3/tree/f.txt && echo one > exp3/f.txt",
    )
    out = tmp_path / "out" / node.name
    out.mkdir(parents=True)
    (out / "tree").symlink_to(victim)
    (out / "f.txt").symlink_to(victim / "keep.txt")
    before = snapshot(victim)
    res = pull(node, "@:exp3/tree", f"{tmp_path}/out/@/")
    assert snapshot(victim) == before
    assert res.kind == "local", res
    assert f"{out / 'tree'}" in res.reason and "symlink" in res.reason, res.reason
    res = pull(node, "@:exp3/f.txt", f"{tmp_path}/out/@/")  # a file replaces the link
    assert res.ok, res.reason
    assert not (out / "f.txt").is_symlink() and (out / "f.txt").read_text() == "one\n"
    assert (victim / "keep.txt").read_text() == "mine\n"
    assert snapshot(victim) == before
    plant(node, "rm -rf exp3")


def test_modes_from_the_node_are_masked_and_existing_directories_untouched(
    lab: Any, tmp_path: Path
) -> None:
    node = lab.nodes()[3]
    plant(
        node,
        "rm -rf exp4 && mkdir -p exp4/tree/open && echo s > exp4/tree/suid && "
        "chmod 6777 exp4/tree/suid && chmod 1777 exp4/tree/open && chmod 777 exp4/tree",
    )
    out = tmp_path / "out" / node.name
    out.mkdir(parents=True)
    out.chmod(0o700)
    old = os.umask(0o022)
    try:
        res = pull(node, "@:exp4/tree", f"{tmp_path}/out/@/")
    finally:
        os.umask(old)
    assert res.ok, res.reason
    assert os.stat(out).st_mode & 0o7777 == 0o700  # not made by the pull: not chmodded
    assert os.stat(out / "tree").st_mode & 0o7777 == 0o755
    assert os.stat(out / "tree" / "open").st_mode & 0o7777 == 0o755
    assert os.stat(out / "tree" / "suid").st_mode & 0o7777 == 0o755
    plant(node, "rm -rf exp4")


def test_down_collect_cannot_be_steered_out_of_its_directory(
    lab: Any, tmp_path: Path, victim: Path
) -> None:
    node = lab.nodes()[4]
    logs = "$HOME/.shoal/logs"
    spec = tmp_path / "app.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            app: plant11
            components:
              c:
                select: "{node.name}"
                count: 1
                processes:
                  - name: plant
                    run: >-
                      ln -s {victim} {logs}/plant11.x &&
                      mkdir -p {logs}/steps/plant11.x &&
                      echo evil > {logs}/steps/plant11.x/evil.txt
            """
        )
    )
    before = snapshot(victim)
    collect = tmp_path / "collected"
    try:
        asyncio.run(lifecycle.up_async(load(spec)))
        report = asyncio.run(lifecycle.down_async("plant11", collect=collect))
    finally:
        plant(node, f"rm -rf {logs}/plant11.* {logs}/steps/plant11.*")
    assert snapshot(victim) == before
    why = report.nodes[node.name]
    assert why.startswith("cleaned, but logs not all collected") and "plant11.x" in why, why
    got = collect / node.name
    assert (got / "steps" / "plant11.x" / "evil.txt").read_text() == "evil\n"
    assert not (got / "plant11.x").exists() and not (got / "plant11.x").is_symlink()
