"""The CLI adapter: shoal nodes / select / plan / facts show, text and --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_list_select(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "nodes", "import", str(FIXTURES / "hosts.ini"))
    assert code == 0 and "imported 9 nodes" in out
    code, out, _ = run(capsys, "select", "@webservers - web-eu")
    assert (code, out) == (0, "www[01-03].example.com\n3 nodes\n")
    code, out, _ = run(capsys, "select", "@datacenter[tier=front]", "--json")
    data = json.loads(out)
    assert data["count"] == 4 and data["nodeset"] == "web-eu,www[01-03].example.com"
    code, out, _ = run(capsys, "nodes", "list", "-s", "@dbservers", "--json")
    assert [n["node"] for n in map(json.loads, out.splitlines())][-1] == "db-z.example.com"
    code, out, _ = run(capsys, "nodes", "show", "web-eu")
    assert "192.0.2.10" in out and "healthy" in out
    code, out, _ = run(capsys, "nodes", "groups")
    assert "webservers" in out


def test_errors_are_one_line_with_a_caret(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "nodes", "add", "n[1-4]", "-g", "web", "-a", "site=eu")
    code, _, err = run(capsys, "select", "@web[site=>eu]")
    assert code == 2
    assert err.splitlines() == [
        "shoal: error: selection syntax error at column 10: expected an attribute operator"
        " (= != < <= > >= ~ !~), not '=>' in '@web[site=>eu]'",
        "  @web[site=>eu]",
        "           ^",
    ]
    code, _, err = run(capsys, "select", "@web & [site=us]")
    assert (code, err) == (2, "shoal: error: selection matched no nodes: @web & [site=us]\n")
    code, _, err = run(capsys, "select", "@nope")
    assert (code, err) == (2, "shoal: error: unknown group: @nope\n")


def test_plans_and_failed(capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.nodes.health import mark_failed

    run(capsys, "nodes", "add", "n[1-6]")
    assert run(capsys, "plan", "set", "good", "all - failed")[0] == 0
    assert run(capsys, "plan", "set", "few", "limit(%good, 2)")[0] == 0
    code, _, err = run(capsys, "plan", "set", "good", "%few")
    assert code == 2 and "plan cycle: good -> few -> good" in err
    mark_failed({"n1": "unreachable: connection refused"})
    code, out, _ = run(capsys, "plan", "show", "few")
    assert out.splitlines()[1:] == ["n[2-3]", "2 nodes now"]
    code, out, _ = run(capsys, "nodes", "failed")
    assert "n1" in out and "connection refused" in out
    code, out, _ = run(capsys, "nodes", "clear-failed", "-s", "n[1-2]")
    assert out == "cleared 1: n1\n"
    code, out, _ = run(capsys, "plan", "list", "--json")
    assert [p["plan"] for p in map(json.loads, out.splitlines())] == ["few", "good"]
    assert run(capsys, "plan", "rm", "few")[0] == 0
    code, out, _ = run(capsys, "nodes", "rm", "n[5-6]")
    assert out == "removed 2: n[5-6]\n"
    code, out, _ = run(capsys, "facts", "show")
    assert "0 with facts (0 stale), 4 never gathered" in out


def test_facts_refresh_and_show(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import dataclass

    from shoal.fanout import factgather

    output = 'shoal-facts 1\nos.PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\ncpus=8\nend\n'

    @dataclass
    class Res:
        node: str
        ok: bool = True
        stdout: str = output
        exit_status: int | None = 0
        duration: float = 0.01
        error: Exception | None = None

    @dataclass
    class Out:
        results: dict[str, Res]

        def __iter__(self) -> object:
            return iter(self.results.values())

    def fake_run(
        nodes: list[object], command: str, options: object = None, on_result: Any = None
    ) -> Out:
        out = Out({n.name: Res(n.name) for n in nodes})  # type: ignore[attr-defined]
        for r in out:  # type: ignore[attr-defined]
            on_result(r)
        return out

    monkeypatch.setattr(factgather, "run", fake_run)
    run(capsys, "nodes", "add", "n[1-3]")
    code, out, _ = run(capsys, "facts", "refresh", "-s", "n[1-2]", "-p", "4", "--timeout", "5")
    assert code == 0 and "2 refreshed, 0 failed" in out and "Debian GNU/Linux 12" in out
    code, out, _ = run(capsys, "facts", "show", "--json")
    assert [r["node"] for r in map(json.loads, out.splitlines())] == ["n1", "n2"]
    code, out, _ = run(capsys, "select", "[cpus>=8]")
    assert out == "n[1-2]\n2 nodes\n"
    code, out, _ = run(capsys, "facts", "show", "--max-age", "0")
    assert "2 with facts (2 stale), 1 never gathered" in out and "STALE" in out
