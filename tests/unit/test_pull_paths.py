"""The checks a pull applies to what a node describes before writing anything
(issue 11 item 1): local names, collisions, symlinks that stay in their tree."""

from __future__ import annotations

import stat

import pytest

from shoal.errors import LocalError, UsageError
from shoal.fanout.copies import plan_copy
from shoal.transport.sftp import RemoteEntry, check_trees, local_name, plain_name


def d(name: str, path: str, *children: RemoteEntry) -> RemoteEntry:
    return RemoteEntry(name, path, stat.S_IFDIR | 0o755, children=list(children))


def f(name: str, path: str) -> RemoteEntry:
    return RemoteEntry(name, path, stat.S_IFREG | 0o644)


def ln(name: str, path: str, target: str) -> RemoteEntry:
    return RemoteEntry(name, path, stat.S_IFLNK | 0o777, target=target)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/etc", "a\0b"])
def test_names_that_are_not_one_plain_component_are_not_plain(name: str) -> None:
    assert not plain_name(name)


def test_plain_names_include_dots_and_spaces_inside() -> None:
    assert all(plain_name(n) for n in ("...", "..a", ".hidden", "a b", "-rf"))


def test_local_names_of_matches() -> None:
    assert local_name("logs/app.log") == "app.log"
    assert local_name("logs/sub/") == "sub"
    assert local_name("/") == "root"
    assert local_name("logs/.") == "."  # a directory itself: merged into the destination
    with pytest.raises(LocalError, match=r"^refusing to name a local copy of 'a/\.\.'") as info:
        local_name("a/..", "n1")
    assert info.value.node == "n1"


def test_two_matches_on_one_local_name_are_refused_naming_both() -> None:
    trees = [ln("data", "exp/a/data", "/etc"), d("data", "exp/z/data", f("x", "exp/z/data/x"))]
    with pytest.raises(LocalError, match="refusing exp/a/data and exp/z/data: both"):
        check_trees(trees, "n1")


def test_a_merged_directory_collides_through_its_children() -> None:
    trees = [d(".", "a/.", f("x", "a/x")), f("x", "b/x")]
    with pytest.raises(LocalError, match="refusing a/x and b/x"):
        check_trees(trees)


@pytest.mark.parametrize("target", ["/etc", "..", "sub/../..", "up/..", "up/x/../../.."])
def test_symlinks_out_of_their_tree_are_refused_naming_the_link(target: str) -> None:
    tree = d(
        "t",
        "r/t",
        d("sub", "r/t/sub", ln("up", "r/t/sub/up", "..")),
        ln("up", "r/t/up", "sub/up"),
        ln("bad", "r/t/bad", target),
    )
    with pytest.raises(LocalError, match=f"refusing symlink r/t/bad -> {target}: it leads out"):
        check_trees([tree], "n1")


def test_symlinks_inside_their_tree_and_dangling_ones_pass() -> None:
    tree = d(
        "t",
        "r/t",
        f("file", "r/t/file"),
        d("sub", "r/t/sub", ln("up", "r/t/sub/up", ".."), ln("f", "r/t/sub/f", "../file")),
        ln("gone", "r/t/gone", "sub/missing"),
        ln("via", "r/t/via", "sub/up/sub/f"),
    )
    check_trees([tree])


def test_a_symlink_loop_is_refused() -> None:
    tree = d("t", "r/t", ln("a", "r/t/a", "b"), ln("b", "r/t/b", "a/x"))
    with pytest.raises(LocalError, match="refusing symlink r/t/"):
        check_trees([tree])


def test_a_matched_symlink_itself_is_refused_with_the_way_to_follow_it() -> None:
    with pytest.raises(LocalError, match=r"pull apps/site/ to copy what it points to"):
        check_trees([ln("site", "apps/site", "versions/abc")])


def test_modes_lose_setuid_setgid_and_sticky() -> None:
    entry = RemoteEntry("x", "x", stat.S_IFREG | 0o7777)
    assert entry.kind == "f" and entry.mode == 0o777
    assert RemoteEntry("p", "p", stat.S_IFIFO | 0o644).kind == "?"


@pytest.mark.parametrize(
    "args",
    [["a/x", "b/x", "@:d/"], ["@:a/x", "@:b/x/", "out/@/"], ["a/x", "b/x/", "out/@"]],
    ids=["push", "pull", "fan"],
)
def test_two_sources_of_one_cp_on_one_name_are_refused_before_connecting(
    args: list[str],
) -> None:
    with pytest.raises(UsageError, match="would both be copied to 'x'"):
        plan_copy(args)


def test_glob_sources_are_left_to_the_node_side_check() -> None:
    assert plan_copy(["@:a/*", "@:b/*", "out/@/"]).sources == ("a/*", "b/*")
