"""Logging: silent library, the CLI's -v/-vv/--debug/--log-file, one-line unexpected errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli import logflags
from shoal.cli.main import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_the_library_prints_nothing_when_nobody_configured_logging() -> None:
    program = (
        "import logging, shoal.logsetup\n"
        "logging.getLogger('shoal.transport.ssh').warning('not for stderr')\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == ""


@pytest.mark.parametrize(
    ("verbosity", "debug", "shown"),
    [
        (0, False, {"warning"}),
        (1, False, {"warning", "info"}),
        (2, False, {"warning", "info", "debug"}),
        (0, True, {"warning", "info", "debug"}),
    ],
)
def test_verbosity_levels(
    capsys: pytest.CaptureFixture[str], verbosity: int, debug: bool, shown: set[str]
) -> None:
    handlers = logflags.configure(verbosity, debug, None)
    try:
        log = logging.getLogger("shoal.fanout.scheduler")
        log.debug("d-message")
        log.info("i-message")
        log.warning("w-message")
        if verbosity >= 2 or debug:
            assert logging.getLogger("asyncssh").isEnabledFor(logging.DEBUG)
    finally:
        logflags.remove(handlers)
    err = capsys.readouterr().err
    levels = {line.split(": ")[1] for line in err.splitlines()}
    assert levels == shown, err
    prefix = "shoal.fanout.scheduler" if verbosity or debug else "shoal"
    assert f"{prefix}: warning: w-message" in err
    shoal = logging.getLogger("shoal")
    assert shoal.level == logging.NOTSET and handlers[0] not in shoal.handlers  # undone


def test_log_file_gets_everything_and_is_not_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "shoal.log"
    assert main(["--log-file", str(log_file), "nodes", "show", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shoal: error: ") and "Traceback" not in err
    text = log_file.read_text()
    assert " DEBUG shoal.cli: " in text and "Traceback" in text  # the error's traceback
    assert logging.getLogger("shoal").handlers == [
        h for h in logging.getLogger("shoal").handlers if isinstance(h, logging.NullHandler)
    ]


def test_log_file_that_cannot_be_opened_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--log-file", str(tmp_path / "no" / "such.log"), "config", "show"]) == 2
    assert "--log-file" in capsys.readouterr().err


def test_unexpected_error_is_one_line_and_debug_shows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shoal.cli import configcmds

    def boom(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(configcmds, "cmd_config_show", boom)
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "shoal: internal error: RuntimeError: boom (rerun with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "config", "show"])


def test_connect_retries_are_logged_per_node(caplog: pytest.LogCaptureFixture) -> None:
    from shoal.errors import ConnectError
    from shoal.fanout import RunOptions, run
    from shoal.nodes.model import Node
    from shoal.testing import MockBehaviour, MockTransport

    transport = MockTransport({"n2": MockBehaviour(connect_errors=[ConnectError("refused")] * 5)})
    options = RunOptions(retries=2, retry_backoff=0.001)
    with caplog.at_level(logging.DEBUG, logger="shoal"):
        run([Node("n1"), Node("n2")], "true", options, transport=transport)
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("shoal.fanout.scheduler", "DEBUG", "n1: connecting (attempt 1)") in lines
    retries = [m for _, level, m in lines if level == "INFO" and "retrying in" in m]
    assert len(retries) == 2 and retries[0].startswith("n2: refused; retrying in ")
    assert (
        "shoal.fanout.scheduler",
        "INFO",
        "n2: not connected after 3 attempt(s): refused",
    ) in lines


def test_logging_flags_are_taken_after_the_command_word_too(tmp_path: Path) -> None:
    """``shoal run -v`` as ``pssh -v``/``clush -v`` users type it, not only ``shoal -v run``;
    not given after the command, the global flags' values stand."""
    from shoal.cli.main import COMMANDS, _build_parser

    parser = _build_parser(list(dict.fromkeys(COMMANDS.values())))
    log = str(tmp_path / "log")
    args = parser.parse_args(["run", "-vv", "--debug", "--log-file", log, "true"])
    assert (args.verbose, args.debug, args.log_file) == (2, True, log)
    args = parser.parse_args(["--debug", "-v", "nodes", "list"])
    assert (args.verbose, args.debug, args.log_file) == (1, True, None)
    args = parser.parse_args(["app", "status", "-v", "x"])
    assert (args.verbose, args.debug) == (1, False)
    args = parser.parse_args(["cp", "a", "b"])
    assert (args.verbose, args.debug, args.log_file) == (0, False, None)
