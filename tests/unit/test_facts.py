"""Facts: the pure parser on real-looking outputs, storage, staleness, refresh."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.errors import ConfigError, InventoryError, ShoalError
from shoal.fanout import factgather
from shoal.nodes import facts, inventory
from shoal.nodes.model import Node
from shoal.nodes.nodeset import fold
from shoal.nodes.select import select

DEBIAN = """\
shoal-facts 1
os.PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
os.VERSION_ID="12"
os.ID=debian
kernel=6.1.0-18-amd64
arch=x86_64
hostname=node7
cpus=8
mem.MemTotal:       32795880 kB
mem.MemAvailable:   28416532 kB
load=0.64 0.26 0.10 3/103 10251
uptime=680.62 1244.94
home=/home/shoal
disk=/dev/sda1         264212084 22811880  83579032      22% /home
python=Python 3.11.2
end
"""

ALPINE_NO_PYTHON = """\
shoal-facts 1
os.PRETTY_NAME='Alpine Linux v3.19'
os.VERSION_ID=3.19.1
os.ID=alpine
kernel=6.6.14-0-lts
arch=aarch64
hostname=edge-1
cpus=4
mem.MemTotal:        3931124 kB
mem.MemAvailable:    3512000 kB
load=1.50 1.20 0.90 1/80 999
uptime=12.00 40.00
home=/root
disk=overlay 10218772 2097152 7597076 22% /
python=sh: python3: not found
end
"""

MINIMAL = """\
Welcome banner printed by a noisy profile
shoal-facts 1
kernel=5.15.0
cpus=
load=
disk=
python=Python 3.8.10
end
"""


def test_parse_debian() -> None:
    f = facts.parse_facts(DEBIAN)
    assert f == {
        "os": "Debian GNU/Linux 12 (bookworm)",
        "os_version": "12",
        "os_id": "debian",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "hostname": "node7",
        "cpus": 8,
        "mem_total_mb": 32027,
        "mem_available_mb": 27750,
        "load1": 0.64,
        "load5": 0.26,
        "load15": 0.1,
        "uptime_s": 680.62,
        "home": "/home/shoal",
        "disk_total_gb": 251.97,
        "disk_free_gb": 79.71,
        "python_version": "3.11.2",
    }


def test_parse_alpine_without_python() -> None:
    f = facts.parse_facts(ALPINE_NO_PYTHON)
    assert (f["os_id"], f["os_version"], f["os"]) == ("alpine", "3.19.1", "Alpine Linux v3.19")
    assert f["cpus"] == 4 and f["arch"] == "aarch64"
    assert f["disk_free_gb"] == 7.25
    assert "python_version" not in f


def test_parse_minimal_and_noisy() -> None:
    assert facts.parse_facts(MINIMAL) == {"kernel": "5.15.0", "python_version": "3.8.10"}


def test_parse_windows_line_endings() -> None:
    assert facts.parse_facts(DEBIAN.replace("\n", "\r\n"))["cpus"] == 8


def test_parse_refuses_foreign_output() -> None:
    with pytest.raises(InventoryError, match="marker"):
        facts.parse_facts("bash: line 1: syntax error\n")


def test_gather_command_runs_under_posix_sh() -> None:
    out = subprocess.run(
        ["sh", "-c", facts.GATHER_COMMAND], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    f = facts.parse_facts(out)
    for key in ("kernel", "cpus", "mem_total_mb", "load1", "disk_free_gb", "home"):
        assert key in f, key


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    monkeypatch.delenv("SHOAL_FACTS_MAX_AGE", raising=False)
    inventory.import_nodes([Node(f"n{i}", attrs={"site": "eu"}) for i in range(1, 5)])
    return tmp_path


def test_store_staleness_and_selection(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    facts.store_facts(
        [
            facts.FactRecord("n1", now, 12.5, facts.parse_facts(DEBIAN)),
            facts.FactRecord("n2", now - 7200, 30.0, facts.parse_facts(ALPINE_NO_PYTHON)),
        ]
    )
    stored = facts.load_facts()
    assert list(stored) == ["n1", "n2"]
    assert not stored["n1"].stale() and stored["n2"].stale()
    assert stored["n2"].stale(max_age=3 * 3600) is False
    assert fold(select("[disk_free_gb>=50]")) == "n1"
    assert fold(select("[fact.os_id=alpine]")) == "n2"
    assert fold(select("[cpus>=4] & [site=eu]")) == "n[1-2]"
    assert fold(select("[facts_stale=true]")) == "n2"
    assert fold(select("[rtt_ms<20]")) == "n1"
    assert fold(select("[!cpus]")) == "n[3-4]"
    monkeypatch.setenv("SHOAL_FACTS_MAX_AGE", "60")
    assert facts.default_max_age() == 60.0
    monkeypatch.setenv("SHOAL_FACTS_MAX_AGE", "soon")
    with pytest.raises(ConfigError):
        facts.default_max_age()


@dataclass
class FakeResult:
    node: str
    ok: bool
    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = 0
    duration: float = 0.02
    error: ShoalError | None = None


@dataclass
class FakeFanout:
    results: dict[str, FakeResult]


def test_refresh_uses_fanout_and_stores(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(
        nodes: list[Node], command: str, options: object = None, on_result: object = None
    ) -> FakeFanout:
        calls.append((tuple(n.name for n in nodes), command))
        return FakeFanout(
            {
                "n1": FakeResult("n1", True, DEBIAN, duration=0.0425),
                "n2": FakeResult("n2", False, exit_status=None, error=ShoalError("timed out")),
                "n3": FakeResult("n3", True, "garbage"),
            }
        )

    monkeypatch.setattr(factgather, "run", fake_run)
    nodes = [Node("n1"), Node("n2"), Node("n3")]
    report = factgather.refresh(nodes)
    assert calls == [(("n1", "n2", "n3"), facts.GATHER_COMMAND)]
    assert [r.name for r in report.refreshed] == ["n1"]
    assert report.refreshed[0].rtt_ms == 42.5
    assert report.failed == {
        "n2": "timed out",
        "n3": "facts output does not start with the shoal-facts marker",
    }
    assert list(facts.load_facts()) == ["n1"]
