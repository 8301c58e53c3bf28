"""Unit tests of lab name resolution and the CLI's refusal of bad input (no system changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli.main import main
from shoal.errors import UsageError
from shoal.lab.labctl import resolve_name
from shoal.lab.labstate import LabState, save


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    return tmp_path


def _fake_lab(home: Path, name: str) -> None:
    d = home / "labs" / name
    d.mkdir(parents=True)
    save(LabState(name=name, mode="rootless", dir=str(d), status="up"))


def test_resolve_name(home: Path) -> None:
    assert resolve_name(None) == "default"
    _fake_lab(home, "alpha")
    assert resolve_name(None) == "alpha"
    _fake_lab(home, "beta")
    with pytest.raises(UsageError, match="several labs"):
        resolve_name(None)
    assert resolve_name("beta") == "beta"
    with pytest.raises(UsageError):
        resolve_name("Not Valid")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lab", "up", "0"], "lab size must be between 1 and 1000 nodes, got 0"),
        (["lab", "up", "100000"], "lab size must be between 1 and 1000 nodes, got 100000"),
        (["lab", "up", "two"], "lab size must be a whole number"),
        (["lab", "up", "2", "--rate", "10furlongs"], "unknown unit 'furlongs'"),
        (["lab", "up", "2", "--loss", "150%"], "bad loss '150%'"),
        (["lab", "up", "2", "--delay", "5"], "bad delay '5'"),
        (["lab", "up", "2", "--name", "x" * 12], "bad lab name"),
        (["lab", "status", "--name", "ghost"], "no lab named ghost"),
    ],
)
def test_cli_bad_input_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert err.count("\n") == 1 and err.startswith("shoal: error: "), err
    assert message in err
    labs = home / "labs"
    assert not labs.exists() or not any(labs.iterdir())
