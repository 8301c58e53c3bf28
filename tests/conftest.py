"""The suite's one session lab: 8 real SSH nodes shared by tests/integration and tests/faults.

At the end of collection, when any selected test uses ``lab``, ``shoal lab up``
starts in a child process (its own ``SHOAL_HOME``, a session temp directory) and
the modules that need no lab are moved ahead of those that do (stable: each
module's tests stay together, in their order), so the bring-up overlaps the
unit tests instead of adding to the wall time. The ``lab`` fixture waits for
that child, opens the :class:`shoal.lab.Lab` and always takes it down; a lab
never requested (a run stopped early) is taken down at the end of the session.
``shoal_home`` points ``SHOAL_HOME`` at the lab's home for the rest of the
session. Tests that kill, cut or shape a node restore it in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.lab import Lab, LabSpec
from shoal.nodes.model import Node

LAB_NODES = 8
#: The bring-up's bound (8 nodes take seconds; a loaded CI machine, much longer).
LAB_UP_TIMEOUT = 300.0


def lab_skip_reason() -> str | None:
    """Why a namespace lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces); run the suite as root"
    for tool in ("ip", "tc", "unshare", "ssh", "ssh-keygen", "nft"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"lab tests need '{tool}' (run scripts/setup.sh)"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "lab tests need /usr/sbin/sshd (apt-get install openssh-server)"
    return None


def unique_lab_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def remote(node: Node, command: str, *, check: bool = True, timeout: float = 60.0) -> str:
    """``command``'s stdout on ``node`` (a fresh SSH connection); exit 0 asserted if ``check``."""
    from shoal.transport.ssh import SSHTransport

    async def go() -> str:
        conn = await SSHTransport().connect(node, timeout=10)
        try:
            res = await conn.run(command, timeout=timeout)
        finally:
            await conn.close()
        if check:
            assert res.exit_status == 0, res.stderr
        return res.stdout.decode()

    return asyncio.run(go())


def _shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.cli.main", *args]


@dataclass
class _Bringup:
    """The session lab on its way up: ``shoal lab up`` running in a child process."""

    name: str
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    taken: bool = False  # the lab fixture owns the teardown from then on

    def env(self) -> dict[str, str]:
        return {**os.environ, "SHOAL_HOME": str(self.home), "SHOAL_NO_SERVICE": "1"}

    def wait(self) -> None:
        """Return once the lab is up; fail the caller with the CLI's own message if not."""
        try:
            rc = self.proc.wait(timeout=LAB_UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(
                f"shoal lab up {LAB_NODES} --name {self.name}: not up in {LAB_UP_TIMEOUT} s"
            )
        if rc != 0:
            lines = self.log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            pytest.fail(f"shoal lab up {LAB_NODES} --name {self.name} exited {rc}: {lines[-1]}")

    def abandon(self) -> None:
        """Take down a lab no test took (its bring-up waited for first, bounded)."""
        try:
            self.proc.wait(timeout=LAB_UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(
            _shoal("lab", "down", "--name", self.name),
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=LAB_UP_TIMEOUT,
            check=False,
        )


_BRINGUP_KEY = pytest.StashKey[_Bringup]()


def _uses_lab(item: pytest.Item) -> bool:
    return "lab" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules without a lab test first, so that they run while the lab comes up."""
    needs: dict[object, bool] = {}
    for item in items:
        module = item.getparent(pytest.Module) or item
        needs[module] = needs.get(module, False) or _uses_lab(item)
    items.sort(key=lambda item: needs[item.getparent(pytest.Module) or item])


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or not any(_uses_lab(i) for i in session.items):
        return
    if lab_skip_reason() is not None:
        return  # the lab fixture skips with the reason
    factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
    home = factory.mktemp("shoal-home")
    log = home / "lab-up.log"
    name = unique_lab_name()
    with log.open("wb") as out:
        env = {**os.environ, "SHOAL_HOME": str(home), "SHOAL_NO_SERVICE": "1"}
        proc = subprocess.Popen(
            _shoal("lab", "up", str(LAB_NODES), "--name", name),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    config.stash[_BRINGUP_KEY] = _Bringup(name, home, proc, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    bringup = session.config.stash.get(_BRINGUP_KEY, None)
    if bringup is not None and not bringup.taken:
        bringup.abandon()


@pytest.fixture(scope="session")
def shoal_home(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private SHOAL_HOME for the whole session (the session lab's, when there is one)."""
    bringup = request.config.stash.get(_BRINGUP_KEY, None)
    if bringup is not None:
        home = bringup.home
    else:
        home = request.getfixturevalue("tmp_path_factory").mktemp("shoal-home")
    old = os.environ.get("SHOAL_HOME")
    os.environ["SHOAL_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("SHOAL_HOME", None)
        else:
            os.environ["SHOAL_HOME"] = old


@pytest.fixture(scope="session")
def lab(shoal_home: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The session's 8-node namespace lab (brought up at collection), always taken down."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    bringup = request.config.stash.get(_BRINGUP_KEY, None)
    if bringup is None:  # the lab was asked for by a test collection did not see use it
        the_lab = Lab.up(LabSpec(n=LAB_NODES, name=unique_lab_name()))
        try:
            yield the_lab
        finally:
            the_lab.down()
        return
    bringup.taken = True
    try:
        bringup.wait()
        the_lab = Lab.open(bringup.name)
    except BaseException:
        bringup.taken = False  # pytest_sessionfinish takes down whatever was made
        raise
    try:
        yield the_lab
    finally:
        the_lab.down()
