"""``shoal demo``'s last chapter: ``shoal serve`` on the lab with its web dashboard.

Starts ``shoal serve --listen 127.0.0.1:0`` for the demo's state directory (any
free port; its output goes to ``demo-serve.log`` there), waits until it
answers, and prints the dashboard's address with its token
(``http://127.0.0.1:PORT/?token=TOKEN``: opening it logs the browser in). With
``keep`` the service is left running, in its own session, for a person to
look (``shoal serve stop`` ends it); otherwise it is stopped before the lab
goes down.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

#: How long the service may take to listen.
START_TIMEOUT = 30.0
_URL = re.compile(r" and (http://\S+?)/")


def show_dashboard(keep: bool, say: Callable[[str], None]) -> None:
    """Serve the dashboard and print its address with its token (see the module docstring)."""
    from shoal.errors import ServiceError
    from shoal.paths import shoal_home
    from shoal.service.access import TokenStore

    home = shoal_home()
    log = home / "demo-serve.log"
    say("The standing controller and its web dashboard: shoal serve, live over the event stream")
    print("$ shoal serve --listen 127.0.0.1:0 &", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli.main", "serve", "--listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while (found := _URL.search(log.read_text(errors="replace"))) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ServiceError(f"shoal serve did not start for the demo: {tail[0]} (see {log})")
        time.sleep(0.1)
    print(f"Dashboard: {found.group(1)}/?token={TokenStore(home).token('admin')}", flush=True)
    if keep:
        print(f"(shoal serve stays up, pid {proc.pid}: 'shoal serve stop' ends it)", flush=True)
    else:
        _stop(proc)
        print("(stopped with the demo: 'shoal demo --keep' leaves it up to look)", flush=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
