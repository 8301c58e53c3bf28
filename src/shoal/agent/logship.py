"""The node side of central log collection: list, read compressed, acknowledge.

The controller (:mod:`shoal.ops.logcollect`) collects every log file of the
working area's ``logs/``: programs' ``NAME.log`` and their rotated
``NAME.log.N`` (:mod:`.rotate`), and steps' ``steps/ID.log``. A file is known
by its *inode* (rotation renames, so a name moves from file to file while an
inode stays with its bytes) plus the sha256 of its first bytes, which the
controller sends back so that an inode reused by a new file is told apart.

``logs.list`` {known?}              every file: stream, name, inode, size, rotated;
                                    ``known`` lists ``[ino, head_len, head_sha]``
                                    the controller holds: those files get
                                    ``same``, whether their head still matches;
                                    a program's log that cannot be written now
                                    (a full disk) gets ``write_error`` and
                                    ``lost`` (bytes of output lost so far)
``logs.read`` {file, ino, offset, max?, head?}
                                    bytes ``[offset, offset+max)`` of that file
                                    (found by inode if it was renamed since),
                                    gzip-compressed here, base64 in the JSON,
                                    with the sha256 of the raw range; a file
                                    still written is cut after its last newline;
                                    ``written``: the file's mtime after the
                                    read (no byte of the range is newer),
                                    ``now``: this node's clock then
``logs.ack`` {file, ino, size, sha256, free?}
                                    the controller stored and verified the whole
                                    rotated file: it may go once enough newer
                                    ones exist; ``free`` deletes it now. Refused
                                    unless the file is rotated and its size and
                                    sha256 are exactly those given.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .rotate import RotatingLog

#: Largest raw range one ``logs.read`` returns (its base64'd gzip fits a protocol line).
MAX_READ = 2 << 20
#: Bytes hashed to tell a file from another that later got its inode.
HEAD_BYTES = 256

_NAME = re.compile(r"^(?P<stream>.+)\.log(?:\.(?P<index>[0-9]+))?$")

#: Finds the running program's log by stream name (None: no such program).
LogLookup = Callable[[str], Optional[RotatingLog]]


class LogShip:
    """Answers ``logs.*`` for one working area."""

    def __init__(self, logs_dir: Path, lookup: LogLookup) -> None:
        self.logs_dir = logs_dir
        self.lookup = lookup

    def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if op == "logs.list":
            return {"files": self.listing(args.get("known") or [])}
        if op == "logs.read":
            return self.read(args)
        if op == "logs.ack":
            return self.ack(args)
        raise ValueError(f"unknown operation {op!r}")

    def listing(self, known: list[Any] | None = None) -> list[dict[str, Any]]:
        """Every log file, each stream's oldest first; ``same`` for the ``known`` ones."""
        heads = {int(k[0]): (int(k[1]), str(k[2])) for k in known or []}
        found: list[tuple[str, int, dict[str, Any]]] = []
        for rel in self._names():
            entry = self._entry(rel)
            if entry is not None and entry["ino"] in heads:
                entry["same"] = self._same(rel, *heads[entry["ino"]])
            if entry is not None and not entry["rotated"] and not rel.startswith("steps/"):
                log = self.lookup(entry["stream"])
                failing = log.failing if log is not None else None
                if failing is not None:
                    entry["write_error"], entry["lost"] = failing
            if entry is not None:
                match = _NAME.match(Path(rel).name)
                index = int(match.group("index") or 0) if match else 0
                found.append((entry["stream"], -index, entry))
        found.sort(key=lambda item: (item[0], item[1]))
        return [entry for _, _, entry in found]

    def _same(self, rel: str, length: int, digest: str) -> bool:
        try:
            with open(str(self.logs_dir / rel), "rb") as handle:
                return hashlib.sha256(handle.read(length)).hexdigest() == digest
        except OSError:
            return False

    def _names(self) -> list[str]:
        names: list[str] = []
        for sub, prefix in ((self.logs_dir, ""), (self.logs_dir / "steps", "steps/")):
            try:
                listed = os.listdir(str(sub))
            except OSError:
                continue
            names.extend(prefix + n for n in listed if _NAME.match(n))
        return names

    def _entry(self, rel: str) -> dict[str, Any] | None:
        match = _NAME.match(Path(rel).name)
        if match is None:
            return None
        try:
            st = os.stat(str(self.logs_dir / rel))
        except OSError:
            return None
        stream = match.group("stream")
        if rel.startswith("steps/"):
            stream = "steps/" + stream
        return {
            "stream": stream,
            "file": rel,
            "ino": st.st_ino,
            "size": st.st_size,
            "mtime": st.st_mtime,
            "rotated": match.group("index") is not None,
        }

    def _locate(self, args: dict[str, Any]) -> dict[str, Any]:
        """The file named ``file`` if it is inode ``ino``, else its sibling that is."""
        rel = args.get("file")
        ino = args.get("ino")
        if not isinstance(rel, str) or _NAME.match(Path(rel).name) is None or ".." in rel:
            raise ValueError(f"not a log file: {rel!r}")
        if not isinstance(ino, int):
            raise ValueError("missing ino")
        entry = self._entry(rel)
        if entry is not None and entry["ino"] == ino:
            return entry
        stream = _NAME.match(Path(rel).name).group("stream")  # type: ignore[union-attr]
        for other in self._names():
            match = _NAME.match(Path(other).name)
            if match and match.group("stream") == stream:
                entry = self._entry(other)
                if entry is not None and entry["ino"] == ino:
                    return entry
        raise KeyError(f"log file {rel} (inode {ino}) is gone")

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        entry = self._locate(args)
        offset = _count(args, "offset", 0)
        limit = min(_count(args, "max", MAX_READ), MAX_READ)
        path = str(self.logs_dir / entry["file"])
        with open(path, "rb") as handle:
            head = args.get("head")
            if head is not None:
                length, digest = int(head[0]), str(head[1])
                if hashlib.sha256(handle.read(length)).hexdigest() != digest:
                    return {"mismatch": True, "file": entry["file"]}
            handle.seek(offset)
            data = handle.read(limit)
            written = os.fstat(handle.fileno()).st_mtime
        if not entry["rotated"] and data:
            end = data.rfind(b"\n")
            if end >= 0:
                data = data[: end + 1]
            elif len(data) < limit:
                data = b""  # half a line: wait for its end
        return {
            "file": entry["file"],
            "ino": entry["ino"],
            "size": entry["size"],
            "rotated": entry["rotated"],
            "offset": offset,
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "data": base64.b64encode(gzip.compress(data, 6, mtime=0)).decode("ascii"),
            "written": written,
            "now": time.time(),
        }

    def ack(self, args: dict[str, Any]) -> dict[str, Any]:
        entry = self._locate(args)
        if not entry["rotated"]:
            raise ValueError(f"{entry['file']} is still written: only rotated files are freed")
        path = self.logs_dir / entry["file"]
        digest = hashlib.sha256()
        with open(str(path), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if entry["size"] != args.get("size") or digest.hexdigest() != args.get("sha256"):
            raise ValueError(
                f"{entry['file']}: size or sha256 differ from what the controller stored; kept"
            )
        freed = bool(args.get("free"))
        log = self.lookup(entry["stream"])
        if freed:
            os.unlink(str(path))
        elif log is not None:
            log.mark_collected(entry["ino"])
        return {"file": entry["file"], "freed": freed}


def _count(args: dict[str, Any], key: str, default: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0")
    return value
