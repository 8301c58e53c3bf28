"""Inventory: importers (plain, Ansible INI/YAML), the SQLite store, resolve()."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import EmptySelectionError, InventoryError, UnknownNameError
from shoal.nodes import health, importers, inventory
from shoal.nodes.model import Node
from shoal.nodes.nodeset import fold
from shoal.nodes.select import resolve, select
from shoal.state import State

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    monkeypatch.delenv("MQ_SLICE", raising=False)
    return tmp_path


def by_name(nodes: list[Node]) -> dict[str, Node]:
    return {n.name: n for n in nodes}


# --- Ansible fixtures ---------------------------------------------------------------


def check_ansible(inv: importers.Inventory) -> None:
    nodes = by_name(inv.nodes)
    assert fold(nodes) == (
        "db-a.example.com,db-b.example.com,db-c.example.com,db-z.example.com,"
        "mail.example.com,web-eu,www[01-03].example.com"
    )
    www = nodes["www02.example.com"]
    assert www.groups == ("datacenter", "webservers")
    # child group beats parent group; host var beats both
    assert www.attrs["tier"] == "front"
    assert www.attrs["site"] == "us"
    assert www.attrs["http_port"] == 8080
    assert www.attrs["disk_free_gb"] == 20
    assert www.attrs["ntp"] == "ntp.example.com"
    assert www.attrs["weight"] == 1.5
    assert www.python == "/usr/bin/python3"  # ansible_python_interpreter, a field
    eu = nodes["web-eu"]
    assert (eu.host, eu.user, eu.port) == ("192.0.2.10", "ops", None)
    assert eu.attrs["site"] == "eu"
    assert "ansible_host" not in eu.attrs
    db = nodes["db-b.example.com"]
    assert db.groups == ("datacenter", "dbservers")
    assert db.attrs["tier"] == "back"
    assert "site" not in db.attrs
    z = nodes["db-z.example.com"]
    assert (z.port, z.user) == (5309, "legacy")
    mail = nodes["mail.example.com"]
    assert (mail.port, mail.groups) == (2200, ())
    assert inv.group_vars["webservers"]["tier"] == "front"


def test_ansible_ini_fixture() -> None:
    inv = importers.read_inventory(str(FIXTURES / "hosts.ini"))
    check_ansible(inv)


def test_ansible_yaml_fixture() -> None:
    inv = importers.read_inventory(str(FIXTURES / "hosts.yml"))
    check_ansible(inv)


def test_ini_and_yaml_agree() -> None:
    ini = importers.read_inventory(str(FIXTURES / "hosts.ini")).nodes
    yml = importers.read_inventory(str(FIXTURES / "hosts.yml")).nodes
    assert by_name(ini) == by_name(yml)


def test_ansible_ranges() -> None:
    assert importers.expand_ansible("www[01:03].x") == ["www01.x", "www02.x", "www03.x"]
    assert importers.expand_ansible("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert importers.expand_ansible("n[1:9:4]") == ["n1", "n5", "n9"]
    assert importers.expand_ansible("r[1:2]n[1:2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    with pytest.raises(InventoryError):
        importers.expand_ansible("n[a:10]")


def test_format_detection() -> None:
    assert importers.detect_format("x", "[web]\nh1\n") == "ini"
    assert importers.detect_format("x", "all:\n  hosts:\n") == "yaml"
    assert importers.detect_format("x", "# c\nuser@h:22\n") == "list"
    assert importers.detect_format("x", "n[1-4]\n") == "list"


# --- plain lists ------------------------------------------------------------------


def test_plain_list_fixture() -> None:
    nodes = by_name(importers.read_plain_file(FIXTURES / "nodes.txt"))
    assert fold(nodes) == "edge5,n[01-03].lab,planetlab[1-2].cs.example.edu,v6node"
    p2 = nodes["planetlab2.cs.example.edu"]
    assert (p2.user, p2.port, p2.host) == ("alice", 2222, None)
    assert nodes["n02.lab"].attrs == {"site": "eu"}
    edge = nodes["edge5"]
    assert (edge.host, edge.groups) == ("10.0.0.5", ("edge", "lab"))
    v6 = nodes["v6node"]
    assert (v6.host, v6.user, v6.port) == ("2001:db8::1", "bob", 22)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h1\nh1\n", "appears twice"),
        ("h1 notkv\n", "expected KEY=VALUE"),
        ("@h1\n", "empty user"),
        ("[::1]:22\n", "needs name="),
        ("h1:70000\n", "out of range"),
    ],
)
def test_plain_list_errors(text: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        importers.parse_plain(text, "list.txt")


# --- the store ------------------------------------------------------------------------


def test_import_and_load_round_trip(home: Path) -> None:
    inv = importers.read_inventory(str(FIXTURES / "hosts.ini"))
    report = inventory.import_nodes(inv.nodes, group_vars=inv.group_vars)
    assert len(report.added) == 9 and report.updated == ()
    with State() as st:
        loaded = inventory.load_nodes(st)
        assert by_name(loaded) == by_name(inv.nodes)
        assert inventory.group_members(st, "datacenter") == {
            n.name for n in inv.nodes if "datacenter" in n.groups
        }
        with pytest.raises(UnknownNameError, match="unknown group: @nope"):
            inventory.group_members(st, "nope")
        sizes = {g.name: g.size for g in inventory.groups(st)}
        assert sizes["webservers"] == 4
    again = inventory.import_nodes(inv.nodes)
    assert len(again.updated) == 9


def test_replace_group_and_remove_group(home: Path) -> None:
    inventory.import_nodes([Node("other", groups=("x",))])
    first = [Node(f"lab-n{i}", host=f"10.1.0.{i}", user="root", port=22) for i in range(1, 5)]
    report = inventory.import_nodes(first, replace_group="lab-demo")
    assert report.groups == ("lab-demo",)
    assert fold(select("@lab-demo")) == "lab-n[1-4]"
    second = [Node(f"lab-n{i}") for i in range(3, 7)]
    report = inventory.import_nodes(second, replace_group="lab-demo")
    assert report.removed == ("lab-n1", "lab-n2")
    assert fold(select("@lab-demo")) == "lab-n[3-6]"
    assert fold(select("all")) == "lab-n[3-6],other"
    assert inventory.remove_group("lab-demo") == ["lab-n3", "lab-n4", "lab-n5", "lab-n6"]
    assert fold(select("all")) == "other"
    with pytest.raises(UnknownNameError):
        select("@lab-demo")
    assert inventory.remove_group("lab-demo") == []  # idempotent


def test_import_refuses_bad_names(home: Path) -> None:
    with pytest.raises(InventoryError, match="invalid node name"):
        inventory.import_nodes([Node("bad name")])
    with pytest.raises(InventoryError, match="reserved"):
        inventory.import_nodes([Node("failed")])
    with pytest.raises(InventoryError, match="given twice"):
        inventory.import_nodes([Node("a"), Node("a")])
    with State() as st:
        assert inventory.count(st) == 0  # nothing half-written


def test_resolve(home: Path) -> None:
    inventory.import_nodes(
        [Node(f"n{i}", attrs={"site": "eu" if i % 2 else "us"}) for i in range(1, 11)]
    )
    nodes = resolve("n[1-5][site=eu]")
    assert [n.name for n in nodes] == ["n1", "n3", "n5"]
    assert [n.name for n in resolve(None)][:3] == ["n1", "n2", "n3"]
    with pytest.raises(EmptySelectionError, match=r"^selection matched no nodes: n1 & n2$"):
        resolve("n1 & n2")
    with pytest.raises(UnknownNameError, match=r"not in the inventory: n\[11-12\]"):
        resolve("n[9-12]")
    inventory.remove_nodes(["n1", "n2"])
    assert len(resolve(None)) == 8


def test_empty_inventory(home: Path) -> None:
    with pytest.raises(EmptySelectionError, match="selection matched no nodes: all"):
        resolve(None)


def test_mq_nodes_fallback(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = home / "node_list"
    listing.write_text(
        "# PlanetLab\nplanetlab1.example.edu groups=eu\nbob@planetlab2.example.edu\n"
    )
    monkeypatch.setenv("MQ_NODES", str(listing))
    monkeypatch.setenv("MQ_SLICE", "princeton_example")
    nodes = resolve(None)
    assert [(n.name, n.user) for n in nodes] == [
        ("planetlab1.example.edu", "princeton_example"),
        ("planetlab2.example.edu", "bob"),
    ]
    assert [n.name for n in resolve("@eu")] == ["planetlab1.example.edu"]
    health.mark_failed({"planetlab2.example.edu": "timeout"})
    assert fold(select("healthy")) == "planetlab1.example.edu"
    # the inventory, once it has nodes, wins over MQ_NODES
    inventory.import_nodes([Node("mine")])
    assert [n.name for n in resolve(None)] == ["mine"]
    monkeypatch.setenv("MQ_NODES", str(home / "missing"))
    inventory.remove_nodes(["mine"])
    with pytest.raises(InventoryError, match="cannot read node list"):
        resolve(None)


def test_attribute_lookup_from_the_store(home: Path) -> None:
    inventory.import_nodes(
        [
            Node("a", attrs={"gpu": True, "disk": 5}),
            Node("b", attrs={"gpu": False, "disk": "12"}),
            Node("c", user="u", port=2222),
        ]
    )
    assert fold(select("[gpu=true]")) == "a"
    assert fold(select("[gpu=false]")) == "b"
    assert fold(select("[disk>6]")) == "b"  # "12" reads as a number
    assert fold(select("[port=2222]")) == "c"
    assert fold(select("[user=u]")) == "c"
    assert fold(select("[!disk]")) == "c"
