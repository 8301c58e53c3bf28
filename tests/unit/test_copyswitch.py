"""The rename swap that switches a software copy (content/copyswitch.switch_command).

Run with /bin/sh on real directories: forward and back are the same switch, the
copy switched out is kept under its digest, a switch killed between its two
renames is finished by running it again, and what is not Shoal's is refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shoal.content.copyswitch import DIGEST_FILE, kept_dir, probe_command, switch_command


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)


def copy_at(path: Path, digest: str) -> None:
    path.mkdir(parents=True)
    (path / "VERSION").write_text(digest)
    (path / DIGEST_FILE).write_text(digest + "\n")


def test_switch_forward_and_back_keeps_the_other_copy(tmp_path: Path) -> None:
    target = tmp_path / "sw" / "tool"
    kept = Path(kept_dir(str(target)))
    copy_at(target, "a" * 16)
    copy_at(kept / ("b" * 16), "b" * 16)
    assert sh(probe_command(str(target), "b" * 16)).stdout.strip() == f"staged {'a' * 16}"

    assert sh(switch_command(str(target), "b" * 16)).returncode == 0
    assert (target / "VERSION").read_text() == "b" * 16
    assert (kept / ("a" * 16) / "VERSION").read_text() == "a" * 16  # kept for the rollback
    assert sh(switch_command(str(target), "b" * 16)).returncode == 0  # in place: nothing
    assert sh(switch_command(str(target), "a" * 16)).returncode == 0  # the rollback
    assert (target / "VERSION").read_text() == "a" * 16
    assert (kept / ("b" * 16) / "VERSION").read_text() == "b" * 16


def test_a_switch_cut_between_its_renames_is_finished_by_running_it_again(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sw" / "tool"
    kept = Path(kept_dir(str(target)))
    copy_at(kept / ("a" * 16), "a" * 16)
    copy_at(kept / ("b" * 16), "b" * 16)  # the running copy moved aside, the new not yet in
    assert sh(switch_command(str(target), "b" * 16)).returncode == 0
    assert (target / "VERSION").read_text() == "b" * 16


def test_a_missing_copy_or_a_foreign_directory_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sw" / "tool"
    copy_at(target, "a" * 16)
    missing = sh(switch_command(str(target), "c" * 16))
    assert missing.returncode != 0 and "no copy of " + "c" * 16 in missing.stderr
    assert (target / "VERSION").read_text() == "a" * 16

    (target / DIGEST_FILE).unlink()  # a directory of the user's
    copy_at(Path(kept_dir(str(target))) / ("c" * 16), "c" * 16)
    foreign = sh(switch_command(str(target), "c" * 16))
    assert foreign.returncode != 0 and "is not a software copy" in foreign.stderr
    assert (target / "VERSION").read_text() == "a" * 16


def test_a_pushed_version_in_place_is_switched_out_and_relinked_on_the_way_back(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sw" / "tool"
    kept = Path(kept_dir(str(target)))
    pushed = "p" * 16
    (kept / pushed).mkdir(parents=True)
    (kept / pushed / "VERSION").write_text("pushed")
    target.symlink_to(f".tool.shoal/versions/{pushed}")
    copy_at(kept / ("b" * 16), "b" * 16)
    current = sh(probe_command(str(target), "b" * 16)).stdout.strip()
    assert current == f"staged push:{pushed}"

    assert sh(switch_command(str(target), "b" * 16)).returncode == 0
    assert not target.is_symlink() and (target / "VERSION").read_text() == "b" * 16
    assert (kept / pushed / "VERSION").read_text() == "pushed"  # the push's area untouched
    back = sh(switch_command(str(target), current.split()[1]))
    assert back.returncode == 0, back.stderr
    assert str(target.readlink()) == f".tool.shoal/versions/{pushed}"
    assert (kept / ("b" * 16) / "VERSION").read_text() == "b" * 16
