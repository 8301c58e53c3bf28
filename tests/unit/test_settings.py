"""Settings: files, environment, flags, in that order; refusals name file:line and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal import settings
from shoal.cli.main import main
from shoal.errors import ConfigError


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An isolated user config file and state directory file (neither written yet)."""
    for spec in settings.SPECS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    user = tmp_path / "xdg" / "shoal" / "config.toml"
    home = tmp_path / "home" / "config.toml"
    user.parent.mkdir(parents=True)
    home.parent.mkdir(parents=True)
    return user, home


def test_defaults_without_files(dirs: tuple[Path, Path]) -> None:
    s = settings.load()
    assert s == settings.Settings()
    assert set(s.origins.values()) == {"default"}
    assert s.connect_timeout == 10.0 and s.host_keys == "verify" and s.serve.beat == 1.0


def test_state_file_wins_over_user_file_and_env_over_both(dirs: tuple[Path, Path]) -> None:
    user, home = dirs
    user.write_text('parallel = 8\nuser = "ubuntu"\n\n[serve]\nbeat = 2\n')
    home.write_text("parallel = 16\n")
    s = settings.load()
    assert (s.parallel, s.user, s.serve.beat) == (16, "ubuntu", 2.0)
    assert s.origins["parallel"] == f"{home}:1"
    assert s.origins["user"] == f"{user}:2"
    assert s.origins["serve.beat"] == f"{user}:5"
    env = {"SHOAL_PARALLEL": "32", "SHOAL_SERVE_BEAT": "0.5", "SHOAL_HOME": str(home.parent)}
    env["XDG_CONFIG_HOME"] = str(user.parent.parent)
    s = settings.load(env)
    assert (s.parallel, s.serve.beat) == (32, 0.5)
    assert s.origins["parallel"] == "env SHOAL_PARALLEL"
    assert settings.load({**env, "SHOAL_PARALLEL": ""}).parallel == 16  # empty = unset


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("parallel = 4\nparalel = 8\n", 2, "unknown setting 'paralel'"),
        ("\n[serve]\nbeat = 1\nbeet = 2\n", 4, "unknown setting 'serve.beet'"),
        ('parallel = "many"\n', 1, "parallel must be an integer >= 1, got 'many'"),
        ("parallel = true\n", 1, "parallel must be an integer"),
        ("x = 1\nconnect_timeout = -3\n", 1, "unknown setting 'x'"),
        ("# c\n\nconnect_timeout = -3\n", 3, "connect_timeout must be a positive number"),
        ("timeout = nan\n", 1, "timeout must be a positive number"),
        ('host_keys = "yes"\n', 1, "host_keys must be verify or accept-new"),
        (
            '[output]\ncolor = "never"\n',
            2,
            "unknown setting 'output.color' (known in [output]: json)",
        ),
        ("serve.retention = 0\n", 1, "serve.retention must be a positive number"),
        ("[bogus]\nx = 1\n", 1, "unknown setting 'bogus'"),
        ("parallel = \n", 1, "Invalid value"),
    ],
)
def test_refusals_name_file_line_and_key(
    dirs: tuple[Path, Path], text: str, line: int, fragment: str
) -> None:
    user, _ = dirs
    user.write_text(text)
    with pytest.raises(ConfigError) as info:
        settings.load()
    message = str(info.value)
    assert message.startswith(f"{user}:{line}: ") and fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("SHOAL_PARALLEL", "0"), ("SHOAL_TIMEOUT", "inf"), ("SHOAL_USE_MQ_NODES", "maybe")],
)
def test_bad_environment_value_names_the_variable(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}: .* got '{value}'$"):
        settings.load()


def test_booleans_from_the_environment(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_USE_MQ_NODES", "yes")
    monkeypatch.setenv("SHOAL_OUTPUT_JSON", "0")
    s = settings.load()
    assert s.use_mq_nodes is True and s.output.json is False


def test_settings_are_frozen_and_reading_creates_nothing(dirs: tuple[Path, Path]) -> None:
    _, home = dirs
    home.parent.rmdir()
    s = settings.load()
    with pytest.raises(AttributeError):
        s.parallel = 3  # type: ignore[misc]
    assert not home.parent.exists()


def test_settings_become_flag_defaults_and_flags_win(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from shoal.cli import configcmds
    from shoal.cli.main import COMMANDS, _build_parser

    user, _ = dirs
    user.write_text('connect_timeout = 3\nhost_keys = "accept-new"\nselect = "@web"\n')
    parser = _build_parser(list(dict.fromkeys(COMMANDS.values())))
    configcmds.apply_settings(parser)
    args = parser.parse_args(["run", "true"])
    assert (args.connect_timeout, args.host_keys, args.select) == (3, "accept-new", "@web")
    args = parser.parse_args(["run", "--connect-timeout", "7", "-s", "n1", "true"])
    assert (args.connect_timeout, args.select) == (7.0, "n1")
    assert parser.parse_args(["nodes", "list"]).select is None  # not a fan-out: all nodes


def test_help_shows_the_default_a_config_file_set(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--help`` says the effective default and where it came from, not the built-in one
    the file overrode; an untouched flag keeps its own text."""
    user, _ = dirs
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside the paths
    user.write_text('connect_timeout = 3\nparallel = 7\nhost_keys = "accept-new"\n')
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default 3, from {user}:1)" in out
    assert f"(default 7, from {user}:2)" in out and "open-file limit" not in out
    refused = "A changed key is always refused."
    assert f"{refused} (default accept-new, from {user}:3)" in out
    assert "verify (default)" not in out
    assert "retry failed connections N times with backoff (default 1)" in out


def test_config_show_origins_and_json(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, home = dirs
    user.write_text("parallel = 8\n")
    home.write_text("[serve]\nsweep_interval = 60\n")
    monkeypatch.setenv("SHOAL_TIMEOUT", "30")
    assert main(["config", "show", "--connect-timeout", "4", "--json"]) == 0
    rows = {r["key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {k for k in rows} == {s.key for s in settings.SPECS}
    assert rows["parallel"] == {"key": "parallel", "value": 8, "origin": f"{user}:1"}
    assert rows["serve.sweep_interval"]["origin"] == f"{home}:2"
    assert rows["timeout"] == {"key": "timeout", "value": 30.0, "origin": "env SHOAL_TIMEOUT"}
    assert rows["connect_timeout"]["origin"] == "flag --connect-timeout"
    assert rows["host_keys"] == {"key": "host_keys", "value": "verify", "origin": "default"}
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["SETTING", "VALUE", "ORIGIN"]
    assert any(ln.split() == ["parallel", "8", f"{user}:1"] for ln in out.splitlines())


def test_config_show_names_the_file_that_turned_json_on(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = dirs
    user.write_text("[output]\njson = true\n")
    assert main(["config", "show"]) == 0
    rows = {r["key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["output.json"] == {"key": "output.json", "value": True, "origin": f"{user}:2"}
    assert main(["config", "show", "--json"]) == 0
    rows = {r["key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["output.json"]["origin"] == f"{user}:2"


def test_a_broken_file_stops_every_command_with_a_usage_status(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = dirs
    user.write_text("parallel = 0\n")
    assert main(["nodes", "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"shoal: error: {user}:1: parallel must be an integer >= 1, got 0\n"


def test_keepalive_has_no_flag_and_reaches_the_fanout_options(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.cli import configcmds, runcmds
    from shoal.cli.main import _build_parser
    from shoal.fanout.options import RunOptions

    monkeypatch.setenv("SHOAL_KEEPALIVE", "2.5")
    parser = _build_parser(["runcmds"])
    settings = configcmds.apply_settings(parser)
    args = parser.parse_args(["run", "true"])
    args.settings = settings
    assert runcmds._options(args, RunOptions).keepalive == 2.5
