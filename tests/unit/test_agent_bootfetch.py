"""The zipapp bootstrap against a real share on loopback: the file arrives whole and
checked; a wrong pin, a wrong token or corrupt pieces write nothing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from shoal.agent import bootfetch
from shoal.agent.agentshare import AgentShare
from shoal.agent.chunkserver import TEST_CORRUPT_FLAG
from shoal.content.datatls import make_identity

TOKEN = "t" * 24


def fetch(
    tmp_path: Path, tweak: dict[str, Any] | None = None, pin: str | None = None
) -> tuple[int, str, Path]:
    """Share ``home/agent.pyz`` and fetch it with the bootstrap run as a real
    ``python -c`` process (its text on stdin); (exit, stderr, destination)."""
    home = tmp_path / "home"
    dest = tmp_path / "agent.pyz.new"

    async def go() -> tuple[int, str]:
        identity = make_identity("n1")
        share = AgentShare(home, "b1", lambda *a: None)
        answer = await share.share(
            {"token": TOKEN, "tls": identity.wire(), "build": "b1", "bind": "127.0.0.1"}
        )
        params = {
            "peers": [["127.0.0.1", answer["port"], pin or answer["fingerprint"]]],
            "token": TOKEN,
            "pieces": answer["pieces"],
            "size": answer["size"],
            "sha256": answer["sha256"],
            "dest": str(dest),
            **(tweak or {}),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                bootfetch.COMMAND,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(bootfetch.program(params)), 60)
            assert proc.returncode is not None
            return proc.returncode, err.decode()
        finally:
            share.close()

    code, err = asyncio.run(go())
    return code, err, dest


def zipapp(tmp_path: Path) -> bytes:
    home = tmp_path / "home"
    home.mkdir()
    data = bytes(range(256)) * 400  # 100 KB: four pieces
    (home / "agent.pyz").write_bytes(data)
    return data


def test_the_file_arrives_whole_and_checked(tmp_path: Path) -> None:
    data = zipapp(tmp_path)
    code, err, dest = fetch(tmp_path)
    assert code == 0, err
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not Path(str(dest) + ".part").exists()


def test_corrupt_pieces_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    zipapp(tmp_path)
    (tmp_path / "home" / TEST_CORRUPT_FLAG).touch()
    code, err, dest = fetch(tmp_path)
    assert code == 1
    assert err.strip() == (
        f"no peer gave {dest}: 127.0.0.1: sent a piece that does not match its SHA-256"
    )
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_another_certificate_token_or_file_is_refused(tmp_path: Path) -> None:
    zipapp(tmp_path)
    for tweak, pin, said in [
        ({}, make_identity("impostor").fingerprint, "not the pinned server"),
        ({"token": "u" * 24}, None, "refused the request"),
        ({"sha256": "0" * 64}, None, "the file does not match its SHA-256"),
    ]:
        code, err, dest = fetch(tmp_path, tweak, pin)
        assert code == 1 and said in err, err
        assert len(err.strip().splitlines()) == 1
        assert not dest.exists()
