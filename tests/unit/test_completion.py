"""Shell completion and the man page, generated from the parser, run in the real shells."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli.main import main

SHOAL_BIN = Path(sys.executable).parent / "shoal"


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A state directory with web1, web2, db1 (group db) and plan p1; the env to use it."""
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["nodes", "add", "web1", "web2"]) == 0
    assert main(["nodes", "add", "db1", "-g", "db"]) == 0
    assert main(["plan", "set", "p1", "web1"]) == 0
    env = dict(os.environ)
    env["PATH"] = f"{SHOAL_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _script(capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Path) -> Path:
    capsys.readouterr()
    assert main(["completion", shell]) == 0
    path = tmp_path / f"shoal.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def _bash_complete(script: Path, words: list[str], env: dict[str, str]) -> list[str]:
    """COMPREPLY of the generated function for ``words`` (the last one being completed)."""
    array = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}\n'
        "_shtab_shoal\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completes_commands_and_node_names(
    inventory: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = _script(capsys, "bash", tmp_path)
    assert _bash_complete(script, ["shoal", "ru"], inventory) == ["run"]
    assert "rollback" in _bash_complete(script, ["shoal", "ro"], inventory)
    assert _bash_complete(script, ["shoal", "run", "-s", "we"], inventory) == ["web1", "web2"]
    names = _bash_complete(script, ["shoal", "cp", "--select", ""], inventory)
    assert {"web1", "web2", "db1", "@db", "%p1", "all", "failed"} <= set(names)
    assert "--connect-timeout" in _bash_complete(script, ["shoal", "run", "--conn"], inventory)


def test_names_without_state_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "none"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    assert main(["completion", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["all", "failed", "healthy"]
    assert not (home / "state.db").exists()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = _script(capsys, "zsh", tmp_path)
    text = script.read_text()
    assert "#compdef shoal" in text and "shoal completion --names" in text
    out = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_and_node_names(
    inventory: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = _script(capsys, "fish", tmp_path)
    check = subprocess.run(["fish", "--no-execute", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    def complete(line: str) -> list[str]:
        out = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            env=inventory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return [ln.split("\t")[0] for ln in out.stdout.splitlines()]

    assert "run" in complete("shoal ru")
    assert {"web1", "web2"} <= set(complete("shoal run -s we"))


def test_man_page_renders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["man"]) == 0
    page = tmp_path / "shoal.1"
    page.write_text(capsys.readouterr().out)
    name = page.read_text().split(".SH NAME\n", 1)[1].splitlines()[0]
    assert name.startswith("shoal \\- deploy") and not name.endswith(".")  # man(7): no period
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P-cbou", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = out.stdout
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "ENVIRONMENT", "EXIT STATUS"):
        assert heading in text
    assert "--connect-timeout" in text and "nodes list" in text and "SHOAL_PARALLEL" in text
    assert "130" in text  # the exit statuses
