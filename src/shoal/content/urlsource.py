"""An ``http(s)://`` URL as a push source: fetched once by the controller, checked.

:func:`fetch` downloads the URL (:mod:`urllib`, redirects followed, a timeout
per read) into a private temporary file beside the depot's store while hashing
it, and compares the SHA-256 with the one expected, if any: a mismatch, an
HTTP error or a short body is refused with one line naming the URL, and the
partial file is deleted, so nothing is stored. The caller reads the file as a
tarball (:mod:`.tarsource`) and deletes it; nodes never see the URL.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import ContentError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
BLOCK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def check_sha256(text: str | None) -> str | None:
    """The expected digest, lower case; ContentError if it is not 64 hex digits."""
    if text is None:
        return None
    low = text.strip().lower()
    if not _SHA256.match(low):
        raise ContentError(f"--sha256 {text!r}: expected 64 hex digits")
    return low


def fetch(url: str, into: Path, sha256: str | None = None, timeout: float = 60.0) -> Fetched:
    """Download ``url`` into a new file under ``into``; see the module docstring."""
    expected = check_sha256(sha256)
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".fetch-", dir=into)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    while True:
                        block = resp.read(BLOCK)
                        if not block:
                            break
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            except urllib.error.HTTPError as exc:
                raise ContentError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise ContentError(f"{url}: cannot fetch: {reason}") from None
        if length is not None and length.isdigit() and int(length) != size:
            raise ContentError(f"{url}: got {size} bytes of {length} (connection cut)")
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise ContentError(f"{url}: SHA-256 {got} is not the expected {expected}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Fetched(path, got, size)
