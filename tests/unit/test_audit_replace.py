"""The agent's ``audit.replace`` write: only from the repair's staging deployment
(``~/.shoal-audit-repair``), the staged copy's sha256 checked, the old file kept aside."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shoal.agent import filehash
from shoal.agent.filehash import ASIDE, STAGING

GOOD = b"the majority's bytes\n"
DIGEST = hashlib.sha256(GOOD).hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_bytes(b"tampered\n")
    return tmp_path


def stage(home: Path, data: bytes) -> str:
    """A staging deployment laid out as a push leaves it: ID → .ID.shoal/versions/V."""
    version = home / STAGING / ".r1.shoal" / "versions" / "v1"
    version.mkdir(parents=True)
    (version / DIGEST).write_bytes(data)
    os.symlink(".r1.shoal/versions/v1", home / STAGING / "r1")
    return f"{STAGING}/r1/{DIGEST}"


def write(staged: str) -> dict[str, object]:
    events: list[str] = []
    args = {"path": "site/a.txt", "action": "write", "staged": staged, "digest": DIGEST}
    done = filehash.replace({**args, "mode": 0o640}, lambda k, n, m: events.append(m))
    assert events and "replaced" in events[0]
    return done


def kept_aside(home: Path) -> list[Path]:
    return [p for p in (home / "site").iterdir() if ASIDE in p.name]


def test_write_takes_the_staged_copy_and_keeps_the_old_file_aside(home: Path) -> None:
    staged = stage(home, GOOD)
    done = write(staged)
    target = home / "site" / "a.txt"
    assert target.read_bytes() == GOOD
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.read_bytes() for p in kept_aside(home)] == [b"tampered\n"]
    assert done["aside"] == str(kept_aside(home)[0])
    assert (home / staged).read_bytes() == GOOD  # the deployment is the controller's


def test_a_corrupted_staged_copy_is_refused_by_hash(home: Path) -> None:
    staged = stage(home, b"the majority's bytes, corrupted on the node\n")
    with pytest.raises(ValueError, match="sha256 is .*, not " + DIGEST[:12]):
        write(staged)
    assert (home / "site" / "a.txt").read_bytes() == b"tampered\n"  # untouched
    assert kept_aside(home) == []
    assert sorted(p.name for p in (home / "site").iterdir()) == ["a.txt"]  # no temp left


@pytest.mark.parametrize("where", ["outside", "escape", "link"])
def test_a_staged_file_outside_the_staging_directory_is_refused(home: Path, where: str) -> None:
    stage(home, GOOD)
    (home / "elsewhere").write_bytes(GOOD)
    if where == "link":  # a symlink inside the staging root pointing out of it
        os.symlink(home / "elsewhere", home / STAGING / "r2")
    staged = {
        "outside": "elsewhere",
        "escape": f"{STAGING}/../elsewhere",
        "link": f"{STAGING}/r2",
    }[where]
    with pytest.raises(ValueError, match="is not inside ~/" + STAGING):
        write(staged)
    assert (home / "site" / "a.txt").read_bytes() == b"tampered\n"
