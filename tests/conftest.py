"""The suite's one session lab: 8 real SSH nodes shared by tests/integration and tests/faults.

``lab`` points ``SHOAL_HOME`` at a session temp directory first (``shoal_home``),
skips with a clear reason when this machine cannot run a lab (not root, or
sshd/ip/tc/unshare missing), brings up ``shoal lab`` with a unique name, yields
the :class:`shoal.lab.Lab`, and always takes it down. It lives here, above both
directories, so that pytest makes it once (a fixture defined in two conftest
files is two fixtures: two labs). Tests that kill, cut or shape a node restore
it in ``finally``; tests/faults/conftest.py stops its agents at its module's end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.lab import Lab, LabSpec
from shoal.nodes.model import Node

LAB_NODES = 8


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


def unmount(node: Node, area: str) -> None:
    """Take a test's mount at ``area`` (relative to the home) off ``node``: retried while a
    dying process holds it, else detached lazily; asserted gone, since a leftover full
    tmpfs breaks every later test on that node."""
    from shoal.testing.faultsuite import UNMOUNT

    said = remote(node, UNMOUNT.format(area=area), check=False)
    assert "mounted" not in said, f"{node.name}: {area} is still mounted"


@pytest.fixture(scope="session")
def shoal_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private SHOAL_HOME for the whole session (set before anything else)."""
    home = tmp_path_factory.mktemp("shoal-home")
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
def lab(shoal_home: Path) -> Iterator[Lab]:
    """An 8-node namespace lab, up for the session, always taken down."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    the_lab = Lab.up(LabSpec(n=LAB_NODES, name=unique_lab_name()))
    try:
        yield the_lab
    finally:
        the_lab.down()
