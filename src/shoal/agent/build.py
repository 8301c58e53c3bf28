"""Build the agent's zipapp, byte for byte the same from the same sources.

Runs on the controller. The archive holds ``__main__.py`` (calls
``shoal.agent.daemon.main``), a stub ``shoal/__init__.py``, the agent's
modules (everything in this package but this file) and ``shoal/agent/BUILD``
with the build id: the first 16 hex digits of a SHA-256 over the module names
and contents. Entries are sorted and stamped 1980-01-01 with fixed modes, so
the archive, and its id, change only when a module changes; ``shoal agent
install`` skips nodes that already run this id.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_EXCLUDED = {"build.py"}

_ROOT_MAIN = b'''"""Shoal node agent (zipapp entry point)."""
import sys

from shoal.agent.daemon import main

sys.exit(main())
'''
_SHOAL_STUB = b'"""Shoal: only the node agent is shipped in this archive."""\n'


@dataclass(frozen=True)
class AgentBuild:
    """A built zipapp: its bytes and its build id."""

    data: bytes
    build_id: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        """The zipapp's SHA-256 (hex), what a node that fetched it checks."""
        return hashlib.sha256(self.data).hexdigest()


def agent_sources(package_dir: Path | None = None) -> dict[str, bytes]:
    """Archive path → content of every module the agent needs."""
    root = package_dir or Path(__file__).resolve().parent
    sources: dict[str, bytes] = {}
    for path in sorted(root.glob("*.py")):
        if path.name in _EXCLUDED:
            continue
        sources[f"shoal/agent/{path.name}"] = path.read_bytes()
    return sources


def build_id(sources: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(sources):
        content = sources[name]
        digest.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()[:16]


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100644 & 0xFFFF) << 16
    info.create_system = 3
    return info


def build(package_dir: Path | None = None) -> AgentBuild:
    """The zipapp and its build id (deterministic)."""
    sources = agent_sources(package_dir)
    ident = build_id(sources)
    files: dict[str, bytes] = dict(sources)
    files["__main__.py"] = _ROOT_MAIN
    files["shoal/__init__.py"] = _SHOAL_STUB
    files["shoal/agent/BUILD"] = ident.encode() + b"\n"
    buffer = BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            archive.writestr(_entry(name), files[name], compresslevel=9)
    return AgentBuild(buffer.getvalue(), ident)


def write(path: Path, package_dir: Path | None = None) -> tuple[Path, str]:
    """Build and write the zipapp to ``path``; returns the path and the build id."""
    result = build(package_dir)
    path.write_bytes(result.data)
    path.chmod(0o755)
    return path, result.build_id
