"""``-w HOSTS`` / ``-l USER`` reach the commands that only name nodes: select, nodes list, facts.

(They resolved ``-s`` alone, so ``-w`` was refused as an unknown option.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.cli.main import main


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_select_evaluates_over_the_adhoc_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "select", "-w", "web[1-4],db1:2222", "all - web3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["nodes"] == ["db1", "web1", "web2", "web4"] and data["count"] == 4


def test_nodes_list_shows_the_adhoc_hosts_with_their_user_and_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "nodes", "list", "-w", "root@h[1-2]:2200,g1", "-l", "ops", "--json"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["node"], r["user"], r["port"]) for r in rows] == [
        ("g1", "ops", None),
        ("h1", "root", 2200),
        ("h2", "root", 2200),
    ]
    code, out, _ = run(capsys, "nodes", "list", "-w", "h[1-3]", "-s", "h2")
    assert code == 0 and out.split("\n")[1].startswith("h2") and "1 nodes" in out


def test_facts_show_names_adhoc_hosts_never_gathered(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "facts", "show", "-w", "x[1-3]")
    assert code == 0, err
    assert "0 with facts (0 stale), 3 never gathered" in out


def test_a_name_outside_the_adhoc_hosts_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "select", "-w", "a[1-2]", "b1")
    assert code == 2 and "not in -w's hosts: b1" in err
