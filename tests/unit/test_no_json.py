"""``--no-json`` undoes ``[output] json = true`` for one command (issue 19 item 7).

A config file that turns ``--json`` on makes it every command's default; nothing
could turn it off before ``--no-json``. Every parser with ``--json`` has it, and
the later of the two on a command line wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from shoal.cli import main as cli_main
from shoal.cli.configcmds import parsers


@pytest.fixture
def json_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user config file with ``[output] json = true`` and an inventory of two nodes."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOAL_OUTPUT_JSON", raising=False)
    (tmp_path / "xdg" / "shoal").mkdir(parents=True)
    (tmp_path / "xdg" / "shoal" / "config.toml").write_text("[output]\njson = true\n")
    assert cli_main.main(["nodes", "add", "web1", "web2"]) == 0


def _lines(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    capsys.readouterr()
    assert cli_main.main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_no_json_turns_a_configured_json_off(
    json_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    as_json = _lines(capsys, "nodes", "list")
    assert [json.loads(line)["node"] for line in as_json] == ["web1", "web2"]
    text = _lines(capsys, "nodes", "list", "--no-json")
    assert text[0].split()[0] == "NAME" and text[-1] == "2 nodes", text
    again = _lines(capsys, "nodes", "list", "--no-json", "--json")  # the later one wins
    assert [json.loads(line)["node"] for line in again] == ["web1", "web2"]


def test_an_error_under_no_json_is_a_text_line(
    json_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli_main.main(["nodes", "show", "nowhere"]) != 0
    assert json.loads(capsys.readouterr().err)["kind"]  # the configured JSON error object
    assert cli_main.main(["nodes", "show", "nowhere", "--no-json"]) != 0
    assert capsys.readouterr().err.startswith("shoal: error: ")


def test_every_json_flag_has_a_no_json_twin() -> None:
    parser = cli_main._build_parser(sorted(set(cli_main.COMMANDS.values())))
    with_json = [p for p in parsers(parser) if "--json" in p._option_string_actions]
    assert len(with_json) > 30  # every command that prints data
    for p in with_json:
        options = p._option_string_actions
        assert "--no-json" in options, p.prog
        assert options["--no-json"].dest == options["--json"].dest, p.prog
        assert options["--no-json"].default is argparse.SUPPRESS, p.prog
