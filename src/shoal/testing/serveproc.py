"""``shoal serve`` as a child process for tests and benchmarks: started, awaited, always stopped.

:func:`serving` starts ``shoal serve`` (the console script next to the running
interpreter) for a state directory, waits until its socket answers, yields the
process, and on the way out stops it with SIGTERM, then SIGKILL if it has not
gone within ``stop_timeout``: a test that fails never leaves a service behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from shoal.client import ServiceClient

#: The ``shoal`` console script of this environment.
SHOAL = str(Path(sys.executable).with_name("shoal"))


@contextmanager
def serving(
    home: Path | None = None,
    *options: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    stop_timeout: float = 30.0,
) -> Iterator[subprocess.Popen[str]]:
    """``shoal serve --sweep-interval 0 OPTIONS`` for ``home`` (None: ``$SHOAL_HOME``)
    until the block ends; its stdout and stderr are captured (``communicate()`` after)."""
    environ = dict(os.environ if env is None else env)
    if home is not None:
        environ["SHOAL_HOME"] = str(home)
    proc = subprocess.Popen(
        [SHOAL, "serve", "--sweep-interval", "0", *options],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        where = Path(environ["SHOAL_HOME"]) if "SHOAL_HOME" in environ else None
        while ServiceClient.locate(where) is None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"shoal serve exited {proc.returncode}: {proc.communicate()[1]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"shoal serve did not listen within {timeout:g} s")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc, stop_timeout)


def stop(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the pipes are drained either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    proc.communicate()


def wait_for_links(
    proc: subprocess.Popen[str], done: Callable[[dict[str, str]], bool], what: str, seconds: float
) -> None:
    """Wait (bounded) until ``done`` holds for the running service's link states by node
    name; fails naming ``what`` (or with the service's stderr if it ended)."""
    deadline = time.monotonic() + seconds
    while True:
        client = ServiceClient.locate()
        if client is not None:
            links = {n["name"]: n["link"] for n in client.request("GET", "/api/v1/nodes")}
            if links and done(links):
                return
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"the service did not {what} in {seconds:g} s"
        time.sleep(0.1)
