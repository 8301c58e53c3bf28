"""ClusterShell group sources (groups.conf, groups.conf.d, groups.d YAML), issue 19 item 6."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import InventoryError
from shoal.nodes import groupsources
from shoal.nodes.groupsources import GroupSources
from shoal.nodes.nodeset import fold

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "clustershell"


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> GroupSources:
    monkeypatch.setenv("CLUSTERSHELL_CFGDIR", str(FIXTURE))
    return GroupSources()


def test_files_found_as_clustershell_finds_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "clustershell").mkdir(parents=True)
    (home / ".config" / "clustershell" / "groups.conf").write_text("[Main]\n")
    env = {"HOME": str(home)}
    found = groupsources.config_files(env)
    assert home / ".config" / "clustershell" / "groups.conf" in found
    xdg = tmp_path / "xdg"
    assert groupsources.config_files({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}) in (
        [],
        [Path("/etc/clustershell/groups.conf")],
    )
    only = groupsources.config_files({"CLUSTERSHELL_CFGDIR": str(FIXTURE), "HOME": str(home)})
    assert only == [FIXTURE / "groups.conf"]


def test_default_source_is_the_stock_sed_upcalls(sources: GroupSources) -> None:
    assert sources.default == "local"
    assert fold(sources.members("oss")) == "example[4-5]"  # a b: whitespace separates
    assert fold(sources.members("local:compute")) == "example[32-159]"
    assert fold(sources.members("all")) == "example[0-159]"  # the all upcall
    assert sources.groups() == ["adm", "all", "compute", "gpu", "io", "mds", "oss"]


def test_yaml_groups_name_groups(sources: GroupSources) -> None:
    assert fold(sources.members("cluster:servers")) == "login[1-2],node[0281-0288]"
    assert fold(sources.members("cluster:cpu_only")) == "node[0001-0280]"
    assert fold(sources.members("cluster:rack1_cpu")) == "node[0001-0032]"  # another source
    assert fold(sources.members("roles:admins")) == "login[1-2],mgmt[1-2]"
    assert sources.members("cluster:all") >= sources.members("cluster:compute")
    assert sources.groups("roles") == ["adm", "admins"]


def test_confdir_upcall_source(sources: GroupSources) -> None:
    assert fold(sources.members("racks:r2")) == "node[0033-0064]"
    assert sources.groups("racks") == ["r1", "r2"]
    assert sources.knows("racks:r1") and sources.knows("gpu")
    assert not sources.knows("nosuch:gpu")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuch:x", "unknown ClusterShell group source 'nosuch' "
                     "(known: cluster, local, racks, roles)"),
        ("cluster:nope", "unknown group @cluster:nope (in "),
        ("racks:r9", "unknown group @racks:r9 (its map upcall printed nothing)"),
        ("local:a;rm", "invalid group name 'a;rm' for source local"),
    ],
)  # fmt: skip
def test_unknown_names_are_refused_in_one_line(
    sources: GroupSources, ref: str, message: str
) -> None:
    with pytest.raises(InventoryError) as info:
        sources.members(ref)
    assert str(info.value).startswith(message)


def test_loops_and_failing_upcalls(tmp_path: Path) -> None:
    (tmp_path / "groups.d").mkdir()
    (tmp_path / "groups.d" / "x.yaml").write_text("s:\n  a: '@b'\n  b: 'n1,@a'\n")
    (tmp_path / "groups.conf").write_text(
        "[Main]\nautodir: $CFGDIR/groups.d\n[bad]\nmap: echo oops >&2; exit 3\n"
    )
    src = GroupSources([tmp_path / "groups.conf"])
    with pytest.raises(InventoryError, match=r"group loop: @s:a -> @s:b -> @s:a"):
        src.members("s:a")
    with pytest.raises(InventoryError, match=r"^group source bad: map upcall for @g failed: oops$"):
        src.members("bad:g")


def test_no_configuration_at_all() -> None:
    src = GroupSources([])
    assert src.default is None or src.default in src.sources  # /etc/clustershell/groups.d
    if src.default is None:
        with pytest.raises(InventoryError, match="no ClusterShell group source is configured"):
            src.members("compute")


def test_a_timed_out_upcall_leaves_no_process(tmp_path: Path) -> None:
    import subprocess

    mark = f"shoal-upcall-{tmp_path.name}"
    # the inner shell carries the mark and outlives its parent unless the group is killed
    (tmp_path / "groups.conf").write_text(
        f"[slow]\nmap: sh -c 'sleep 30; :' {mark} >/dev/null 2>&1; echo n1\n"
    )
    groupsources.UPCALL_TIMEOUT, old = 0.3, groupsources.UPCALL_TIMEOUT
    try:
        with pytest.raises(InventoryError, match=r"took longer than 0.3s"):
            GroupSources([tmp_path / "groups.conf"]).members("slow:g")
    finally:
        groupsources.UPCALL_TIMEOUT = old
    left = subprocess.run(["pgrep", "-f", mark], capture_output=True, text=True)
    assert left.stdout == ""


def test_selections_fall_back_to_clustershell_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-s @oss``: an inventory group first, else the default source's; ``@source:g`` too."""
    from shoal.errors import UnknownNameError
    from shoal.nodes import inventory
    from shoal.nodes.model import Node
    from shoal.nodes.select import resolve, select

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    monkeypatch.setenv("CLUSTERSHELL_CFGDIR", str(FIXTURE))
    monkeypatch.setattr(groupsources, "_loaded", None)
    names = ["example0", "example4", "example5", "example6", "login1", "login2"]
    inventory.import_nodes([Node(name=n) for n in names])
    inventory.import_nodes([Node(name="example0", groups=("oss",))])  # the inventory's @oss
    assert fold(select("@oss")) == "example0"  # the inventory's group wins
    assert fold(select("@local:oss")) == "example[4-5]"
    assert fold(select("@io & @local:io")) == "example[4-6]"
    assert [n.name for n in resolve("@cluster:login")] == ["login1", "login2"]
    assert fold(select("@cluster:servers & all")) == "login[1-2]"
    with pytest.raises(UnknownNameError, match="unknown group: @nosuch"):
        select("@nosuch:thing")
    monkeypatch.delenv("CLUSTERSHELL_CFGDIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(groupsources, "_loaded", None)
    if not groupsources.config_files():
        with pytest.raises(UnknownNameError, match="unknown group: @io"):
            select("@io")


def test_w_group_items_expand_as_clush_w(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-w @group`` (``@source:group``) is the group's members, in the inventory or not,
    as ``clush -w @group``; a ``user@host`` item refines a member; ``-s @g`` narrows -w."""
    from shoal.errors import SelectionError, UnknownNameError
    from shoal.nodes import inventory
    from shoal.nodes.model import Node
    from shoal.nodes.select import AdHoc, parse_hosts, resolve

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    monkeypatch.setenv("CLUSTERSHELL_CFGDIR", str(FIXTURE))
    monkeypatch.setattr(groupsources, "_loaded", None)
    inventory.import_nodes([Node(name="example4", host="10.9.0.4", groups=("oss",))])

    def hosts(text: str, select: str | None = None) -> list[Node]:
        return resolve(select, adhoc=AdHoc(hosts=text))

    # the inventory's @oss first (as -s): its record
    assert [(n.name, n.host) for n in hosts("@oss")] == [("example4", "10.9.0.4")]
    got = hosts("@local:oss,root@example5:2222,db1")
    assert [(n.name, n.user, n.port) for n in got] == [
        ("db1", None, None),
        ("example4", None, None),
        ("example5", "root", 2222),
    ]
    assert got[1].host == "10.9.0.4"  # an inventory name is its record
    assert fold(n.name for n in hosts("@cluster:servers")) == "login[1-2],node[0281-0288]"
    narrowed = hosts("@cluster:servers,example6", "@local:io")
    assert [n.name for n in narrowed] == ["example6"]
    with pytest.raises(InventoryError, match="unknown group @cluster:nosuch"):
        hosts("@cluster:nosuch")
    with pytest.raises(UnknownNameError, match="unknown group: @nosuch"):
        hosts("@nosuch:thing")  # no such source: an unknown group, as -s says
    with pytest.raises(SelectionError, match="needs a name"):
        hosts("@,n1")
    with pytest.raises(SelectionError, match="resolve"):
        parse_hosts("@oss")
