"""``shoal serve install`` (the systemd unit written) and ``[serve]`` settings as defaults."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoal import settings
from shoal.cli import servecmds
from shoal.cli.main import COMMANDS, _build_parser, _parse_with_settings, main
from shoal.control.controller import ServiceConfig

SHOAL = Path(sys.executable).with_name("shoal")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated state directory and config home (no SHOAL_* variable set)."""
    for spec in settings.SPECS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    state = tmp_path / "state dir"  # a space: ExecStart/Environment quoting is exercised
    state.mkdir()
    monkeypatch.setenv("SHOAL_HOME", str(state))
    return state


def _unit_lines(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_runs_this_shoal_with_its_state_dir(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "units" / "shoal.service"
    assert main(["serve", "--beat-interval", "0.5", "install", "--path", str(path)]) == 0
    unit = _unit_lines(path)
    assert unit["ExecStart"] == [f"{SHOAL} serve --beat-interval 0.5"]
    assert unit["Environment"] == [f'"SHOAL_HOME={home}"']
    assert unit["Restart"] == ["on-failure"]
    assert unit["Type"] == ["simple"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_unit_passes_systemd_analyze_verify(home: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    path = tmp_path / "shoal.service"
    assert main(["serve", "--sweep-interval", "60", "install", "--path", str(path)]) == 0
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_different_unit_is_kept_without_force(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shoal.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")
    assert main(["serve", "install", "--path", str(path)]) == 2
    assert "exists with other contents: --force replaces it" in capsys.readouterr().err
    assert path.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert main(["serve", "install", "--path", str(path), "--force"]) == 0
    assert _unit_lines(path)["ExecStart"] == [f"{SHOAL} serve"]
    capsys.readouterr()
    assert main(["serve", "install", "--path", str(path)]) == 0  # the same unit: unchanged
    assert capsys.readouterr().out.startswith(f"unchanged: {path}")


def test_user_unit_goes_under_xdg_config_home(home: Path, tmp_path: Path) -> None:
    assert main(["serve", "install", "--user"]) == 0
    path = tmp_path / "xdg" / "systemd" / "user" / "shoal.service"
    unit = _unit_lines(path)
    assert unit["WantedBy"] == ["default.target"]
    assert "User" not in unit


def _config_of(argv: list[str]) -> ServiceConfig:
    parser = _build_parser([COMMANDS["serve"]])
    args = _parse_with_settings(parser, argv)
    assert args is not None
    config = servecmds._config(args)
    assert isinstance(config, ServiceConfig)
    return config


def test_serve_table_gives_the_flags_defaults(home: Path) -> None:
    (home / "config.toml").write_text(
        "[serve]\nbeat = 2.5\nsweep_interval = 600\nretention = 86400\n"
    )
    config = _config_of(["serve"])
    assert (config.beat_interval, config.sweep_interval, config.keep_seconds) == (
        2.5,
        600.0,
        86400.0,
    )
    flags = _config_of(
        ["serve", "--beat-interval", "0.5", "--sweep-interval", "0", "--keep-days", "2"]
    )
    assert (flags.beat_interval, flags.sweep_interval, flags.keep_seconds) == (
        0.5,
        0.0,
        2 * 86400.0,
    )


def test_serve_defaults_without_a_file(home: Path) -> None:
    config = _config_of(["serve"])
    serve = settings.ServeSettings()
    assert (config.beat_interval, config.sweep_interval, config.keep_seconds) == (
        serve.beat,
        serve.sweep_interval,
        serve.retention,
    )
