"""A ``lifecycle:`` step and the DSMT scripts a package carries (issue 16 item 1)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shoal.agent.progspec import ProgramSpec
from shoal.app.appspec import load
from shoal.app.pkgscripts import PackageScripts, script_command
from shoal.errors import ConfigError
from shoal.state import State

NO_STATE = State.__new__(State)  # local sources never read the state (only depot: ones do)


def spec_file(tmp_path: Path, scripts: list[str], software: str = "[pkg]") -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in scripts:
        (pkg / name).write_text("#!/bin/sh\n")
    path = tmp_path / "app.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            app: lc
            software:
              pkg: {{source: pkg, install: ["make"]}}
            components:
              c:
                select: all
                software: {software}
                processes:
                  - {{name: svc, lifecycle: pkg}}
            """
        )
    )
    return path


def test_only_the_scripts_the_package_has_are_used(tmp_path: Path) -> None:
    spec = load(spec_file(tmp_path, ["start.sh", "stop.sh"]))
    step = spec.components["c"].steps[0]
    assert (step.kind, step.command) == ("service", "${sw.pkg}/start.sh")
    scripts = PackageScripts(spec, NO_STATE)
    assert scripts.service_fields(step) == {
        "command": script_command("pkg", "start.sh", "${sw.pkg}"),
        "health": None,
        "stop_command": script_command("pkg", "stop.sh", "${sw.pkg}"),
    }
    assert scripts.install_commands("pkg") == ("make",)


def test_status_is_the_health_check_and_install_runs_first(tmp_path: Path) -> None:
    spec = load(spec_file(tmp_path, ["install.sh", "start.sh", "status.sh"]))
    scripts = PackageScripts(spec, NO_STATE)
    fields = scripts.service_fields(spec.components["c"].steps[0])
    assert fields["health"] == script_command("pkg", "status.sh", "${sw.pkg}")
    assert fields["stop_command"] is None
    assert scripts.install_commands("pkg") == (script_command("pkg", "install.sh", "."), "make")


def test_a_package_without_start_sh_is_refused_with_the_step_line(tmp_path: Path) -> None:
    spec = load(spec_file(tmp_path, ["stop.sh"]))
    scripts = PackageScripts(spec, NO_STATE)
    with pytest.raises(ConfigError, match=r"app.yaml:9: lifecycle: software pkg .* no start.sh"):
        scripts.service_fields(spec.components["c"].steps[0])


def test_lifecycle_software_must_be_the_components(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"app.yaml:9: lifecycle: software 'pkg' is not in"):
        load(spec_file(tmp_path, ["start.sh"], software="[]"))


def test_stop_command_must_be_a_string() -> None:
    assert ProgramSpec.from_dict({"name": "p", "command": ["x"], "stop_command": "s"})
    with pytest.raises(ValueError, match="stop_command must be a shell command string"):
        ProgramSpec.from_dict({"name": "p", "command": ["x"], "stop_command": 3})


@pytest.mark.parametrize("mode", [0o755, 0o644])
def test_a_script_runs_executable_or_not_its_status_kept_and_named(
    tmp_path: Path, mode: int
) -> None:
    import subprocess

    (tmp_path / "stop.sh").write_text("echo stopping; exit 3\n")
    (tmp_path / "stop.sh").chmod(mode)
    line = script_command("pkg", "stop.sh", str(tmp_path))
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert done.stdout == "stopping\n"
    assert done.stderr == "package pkg: stop.sh failed with exit status 3\n"
    (tmp_path / "stop.sh").write_text("echo ok\n")
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_a_missing_script_says_which_package_lacks_it(tmp_path: Path) -> None:
    import subprocess

    line = script_command("pkg", "status.sh", str(tmp_path))
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert done.returncode == 127
    assert done.stderr == f"package pkg: status.sh is missing ({tmp_path}/status.sh)\n"
