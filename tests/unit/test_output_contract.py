"""The CLI's output contract: help on every command and option, JSON lines, exit codes.

The JSON convention and the exit statuses are written down once, in
:mod:`shoal.cli.render` and :mod:`shoal.cli.exitcodes`; these tests hold every
command that needs no node to them (the lab tests hold the others).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.cli.main import COMMANDS, _build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _parsers() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(_walk(_build_parser(list(COMMANDS.values()))))


def test_every_command_has_a_description_and_every_option_a_help() -> None:
    missing = []
    for path, parser in _parsers():
        if path and not parser.description:
            missing.append(f"shoal {' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:  # (argparse.SUPPRESS: hidden on purpose, e.g. for tests)
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"shoal {' '.join(path)}: {name} has no help")
    assert not missing, "\n".join(missing)


def test_dash_n_means_lines_wherever_it_is_taken() -> None:
    taken = {}
    for path, parser in _parsers():
        for action in parser._actions:
            if "-n" in action.option_strings:
                taken[" ".join(path)] = action.dest
    assert taken and set(taken.values()) == {"lines"}, taken


# -- exit statuses -----------------------------------------------------------------------


def _outcome(kind: str) -> object:
    from shoal import errors
    from shoal.fanout.results import NodeOutcome

    error = {
        "ok": None,
        "failed": errors.OperationError("disk full"),
        "agent": errors.AgentError("no program named x"),
        "local": errors.LocalError("output pipe closed"),
        "unreachable": errors.ConnectError("refused"),
        "timeout": errors.CommandTimeout("timed out"),
        "hostkey": errors.HostKeyError("changed"),
        "auth": errors.AuthError("denied"),
    }[kind]
    return NodeOutcome("n1", value=1 if error is None else None, error=error)


@pytest.mark.parametrize(
    ("kinds", "status"),
    [
        ((), 0),
        (("ok", "ok"), 0),
        (("ok", "failed"), 1),
        (("agent",), 1),
        (("local",), 1),
        (("ok", "unreachable"), 3),
        (("timeout",), 3),
        (("hostkey",), 3),
        (("auth",), 3),
        (("failed", "unreachable", "failed"), 3),  # 3 wins: a 1 means every node answered
    ],
)
def test_status_of_per_node_results(kinds: tuple[str, ...], status: int) -> None:
    from shoal.cli.exitcodes import for_results

    assert for_results([_outcome(k) for k in kinds]) == status


def test_status_of_an_error_that_stopped_the_command() -> None:
    from shoal import errors
    from shoal.cli import exitcodes

    assert exitcodes.for_error(errors.UsageError("x")) == exitcodes.USAGE == 2
    assert exitcodes.for_error(errors.EmptySelectionError("x")) == 2
    assert exitcodes.for_error(errors.ConfigError("x")) == 2
    assert exitcodes.for_error(errors.ConnectError("x")) == exitcodes.UNREACHABLE == 3
    assert exitcodes.for_error(errors.AppError("x")) == exitcodes.FAILED == 1
    assert exitcodes.for_error(errors.StateError("x")) == 1
    assert (exitcodes.INTERRUPTED, exitcodes.BROKEN_PIPE, exitcodes.TERMINATED) == (130, 141, 143)


# -- JSON lines, for every command that needs no node -------------------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BAD_SPEC = "app: x\ncomponents:\n  a:\n    select: 3\n    count: -1\n    processes: []\n"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state with an imported inventory, a failed node, a plan, facts and events."""
    from shoal.agentlink import eventlog
    from shoal.nodes import facts, health
    from shoal.nodes.importers import read_inventory
    from shoal.nodes.inventory import import_nodes
    from shoal.nodes.plans import set_plan
    from shoal.state import State

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    import_nodes(read_inventory(str(FIXTURES / "hosts.ini"), "auto").nodes)
    health.mark_failed({"web-eu": "unreachable: connection refused"})
    set_plan("front", "@webservers")
    now = time.time()
    facts.store_facts([facts.FactRecord("web-eu", now, 1.5, {"cpus": 8})])
    with State() as state:
        rows = [{"seq": i, "time": now, "kind": "note", "detail": f"m{i}"} for i in range(3)]
        eventlog.store(state, "web-eu", "a1", rows)
    (tmp_path / "bad.yaml").write_text(BAD_SPEC)
    return tmp_path


#: argv, then the key every object has and "many" (one object per item) or "one".
JSON_COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("nodes", "list"), "node", "many"),
    (("nodes", "show", "@webservers"), "node", "many"),
    (("nodes", "groups"), "group", "many"),
    (("nodes", "failed"), "node", "many"),
    (("nodes", "add", "extra[1-2]"), "added", "one"),
    (("nodes", "rm", "db-z.example.com"), "removed", "one"),
    (("nodes", "import", str(FIXTURES / "hosts.yml")), "added", "one"),
    (("nodes", "clear-failed", "-s", "web-eu"), "cleared", "one"),
    (("select", "@webservers"), "nodeset", "one"),
    (("plan", "set", "back", "@dbservers"), "plan", "one"),
    (("plan", "list"), "plan", "many"),
    (("plan", "show", "front"), "plan", "one"),
    (("plan", "rm", "front"), "removed", "one"),
    (("facts", "show"), "node", "many"),
    (("events", "--no-pull", "-s", "web-eu"), "node", "many"),
    (("app", "list"), "app", "many"),
    (("app", "check", str(EXAMPLES / "webservice" / "webservice.yaml")), "ok", "one"),
    (("lab", "list"), "lab", "many"),
]


def _json_lines(text: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(r, dict) for r in records), text
    return records


@pytest.mark.parametrize(("argv", "key", "shape"), JSON_COMMANDS, ids=lambda v: str(v))
def test_json_output_is_json_lines(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    key: str,
    shape: str,
) -> None:
    from shoal.cli.main import main

    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""  # no summary lines beside JSON
    records = _json_lines(out)
    assert all(key in r for r in records), records
    if shape == "one":
        assert len(records) == 1, out
    elif argv[:2] not in (("app", "list"), ("lab", "list")):  # none of those here, maybe
        assert records, out


def test_app_check_lists_every_problem(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.cli.main import main

    bad = str(home / "bad.yaml")
    assert main(["app", "check", bad]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3 and "more problem" not in "".join(lines), lines
    assert all(line.startswith(f"shoal: error: {bad}:") for line in lines), lines
    assert any(":4: components.a.select" in line for line in lines), lines
    assert any(":5: components.a.count" in line for line in lines), lines
    assert main(["app", "check", bad, "--json"]) == 2
    out, _ = capsys.readouterr()
    (record,) = _json_lines(out)
    assert record["ok"] is False and len(record["problems"]) == len(lines)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "kind", "status"),
    [
        (("select", "@nope"), "selection", 2),
        (("nodes", "show", "web-eu & [x=1]"), "selection", 2),
        (("plan", "show", "missing"), "selection", 2),
        (("run", "-s", "@nope", "true"), "selection", 2),
    ],
)
def test_an_error_under_json_is_one_object_on_stderr(
    home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], kind: str, status: int
) -> None:
    from shoal.cli.main import main

    assert main([*argv, "--json"] if argv[0] != "run" else [*argv[:-1], "--json", argv[-1]]) == (
        status
    )
    out, err = capsys.readouterr()
    assert out == ""
    (record,) = _json_lines(err)
    assert record["kind"] == kind and record["error"], record
    assert set(record) <= {"kind", "error", "node"}


# -- a closed pipe, for every command that prints and needs no node -----------------------

SHOAL = [sys.executable, "-m", "shoal.cli.main"]

PRINTING: list[tuple[str, ...]] = [
    *[
        (*argv, "--json")
        for argv, _, _ in JSON_COMMANDS
        if argv[0] not in ("nodes", "plan") and argv[1] != "list"  # (no app, maybe no lab)
    ],
    ("lab", "list"),
    ("nodes", "list"),
    ("nodes", "list", "--json"),
    ("nodes", "show", "@webservers"),
    ("nodes", "groups"),
    ("nodes", "failed", "--json"),
    ("plan", "list"),
    ("select", "@webservers"),
    ("facts", "show"),
    ("events", "--no-pull"),
    ("app", "schema"),
    ("app", "check", str(EXAMPLES / "webservice" / "webservice.yaml")),
    ("app", "import-plush", str(EXAMPLES / "plush" / "simple.xml")),
    ("--help",),
    ("run", "--help"),
]


@pytest.mark.parametrize("argv", PRINTING, ids=lambda v: " ".join(v))
def test_a_closed_pipe_ends_every_printing_command_quietly(
    home: Path, argv: tuple[str, ...]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes (| head, exited)
    try:
        p = subprocess.run(
            [*SHOAL, *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SHOAL_HOME": str(home)},
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr
    help_only = "--help" in argv  # argparse drops what it cannot write, and exits 0
    assert p.returncode == (0 if help_only else 141), (p.returncode, p.stderr)
    assert p.stderr == "", p.stderr


@pytest.mark.parametrize(
    "argv",
    [("run", "--json", "--connect-timeout", "nan", "true"), ("nodes", "list", "--json", "--frob")],
)
def test_a_usage_error_under_json_is_one_object_too(
    home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    from shoal.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    (record,) = _json_lines(err)
    assert out == "" and record["kind"] == "usage" and record["error"], err
