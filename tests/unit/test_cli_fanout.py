"""The run/cp adapter's pure parts: progress line, option sizing, argument errors."""

from __future__ import annotations

import io
import resource

import pytest

from shoal.cli.main import main
from shoal.cli.render import NodeProgress
from shoal.fanout.options import MAX_DEFAULT_PARALLEL, default_parallelism
from shoal.fanout.results import CommandOutcome, CommandOutput


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal() -> None:
    tty = FakeTTY()
    p = NodeProgress(4, True, tty)
    p.update(CommandOutcome("n1", CommandOutput(exit_status=0)))
    p.update(CommandOutcome("n2", CommandOutput(exit_status=1)))
    assert "2/4 failed 1" in tty.getvalue()
    pipe = io.StringIO()
    q = NodeProgress(4, True, pipe)
    q.update(CommandOutcome("n1", CommandOutput(exit_status=0)))
    q.close()
    assert pipe.getvalue() == ""


def test_default_parallelism_raises_the_soft_limit_and_stays_bounded() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        n = default_parallelism()
        now_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert now_soft == hard or hard == resource.RLIM_INFINITY
        assert 1 <= n <= MAX_DEFAULT_PARALLEL
        assert n * 3 < now_soft  # every connection's descriptors fit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "run needs a command"),
        (["run", "-p", "0", "true"], "--parallel must be at least 1"),
        (["run", "-e", "1X=2", "true"], "--env expects NAME=VALUE"),
        (["cp", "a", "b"], "names no node"),
        (["cp", "@:a", "@:b"], "one side must be local"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.setenv("MQ_NODES", "")
    from shoal.nodes.inventory import import_nodes
    from shoal.nodes.model import Node

    import_nodes([Node("n1", host="127.0.0.1", port=9)])  # loopback; never reached
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_options_and_selection_load_without_asyncio_or_asyncssh() -> None:
    """`shoal run` validates options and selects nodes, then starts its TCP connects,
    and only then imports the event loop and the SSH library (start-up time counts)."""
    import subprocess
    import sys

    probe = (
        "import sys; import shoal.cli.runcmds, shoal.fanout.options, shoal.nodes.select, "
        "shoal.transport.preconnect; "
        "print(sorted(m for m in ('asyncio', 'asyncssh', 'shoal.fanout.scheduler') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_fanout_package_names_resolve_to_the_api() -> None:
    import shoal.fanout
    import shoal.fanout.commands
    import shoal.fanout.copies

    assert shoal.fanout.run is shoal.fanout.commands.run
    assert shoal.fanout.copy is shoal.fanout.copies.copy
    assert shoal.fanout.RunOptions().retries == 1
    with pytest.raises(AttributeError):
        _ = shoal.fanout.nothing_here
