"""Shell words the controller builds from paths and values (issue 11 item 17).

Each case is checked by a real ``/bin/sh`` with ``HOME`` set to a directory
named ``it's home``: what the shell sees must be exactly one word, and a
leading ``~`` must still mean that home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.agentlink.agentclient import probe_command
from shoal.app.naming import expand
from shoal.errors import UsageError
from shoal.lab.labspec import LabSpec, validate_home
from shoal.lab.sshd import (
    Endpoint,
    config_word,
    render_ssh_config,
    render_sshd_config_netns,
    render_sshd_config_rootless,
)
from shoal.transport.base import shell_path

ODD = "it's home"


def sh(command: str, home: Path) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    proc = subprocess.run(
        ["/bin/sh", "-c", command], cwd=home, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / ODD
    h.mkdir()
    return h


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("~", "{home}"),
        ("~/", "{home}/"),
        ("~/a b/it's", "{home}/a b/it's"),
        ("/abs/it's home/$x `y`", "/abs/it's home/$x `y`"),
        ("rel dir", "rel dir"),
        ("~user/x", "~user/x"),
        ("a~/b", "a~/b"),
    ],
)
def test_shell_path_is_one_word_and_keeps_the_home(path: str, want: str, home: Path) -> None:
    out = sh(f"printf '%s|' {shell_path(path)}", home)
    assert out == want.format(home=home) + "|"


@pytest.mark.parametrize("area", [".shoal", "~/ag it's", "~", f"{ODD}/x"])
def test_probe_command_creates_and_resolves_odd_working_areas(area: str, home: Path) -> None:
    lines = sh(probe_command(area, create=True), home).splitlines()
    expected = home / area[2:] if area.startswith("~/") else home if area == "~" else home / area
    assert lines == [str(expected)] and expected.is_dir()


def test_expanded_variables_are_one_shell_word_each(home: Path) -> None:
    values = {"dir": f"{home}/apps/x", "node": "n1", "addrs.web": "10.0.0.2,10.0.0.3", "e": ""}
    command = expand("printf '%s|' ${dir} ${node} ${addrs.web} ${e} ${unknown}", values)
    # plain values are substituted as before; empty ones still vanish; unknown ones stay
    assert "${unknown}" in command and " n1 10.0.0.2,10.0.0.3 " in command
    out = sh(command.replace("${unknown}", ""), home)
    assert out == f"{home}/apps/x|n1|10.0.0.2,10.0.0.3|"
    assert expand("${dir}/x", values, shell=False) == f"{home}/apps/x/x"


def test_lab_home_option_is_validated() -> None:
    assert LabSpec(n=1, home=ODD).home == ODD
    for bad in ("/abs", "a/../b", ".", "a/", 'a"b', "a\\b", "a%b", "a\nb"):
        with pytest.raises(UsageError, match="bad lab home"):
            validate_home(bad)


def test_sshd_config_words_for_odd_paths() -> None:
    assert config_word("/plain/path") == "/plain/path"
    assert config_word("HOME=/root/it's home") == '"HOME=/root/it\'s home"'
    assert config_word('a"b\\c') == '"a\\"b\\\\c"'
    assert "SetEnv" not in render_sshd_config_netns()
    text = render_sshd_config_netns(ODD)
    assert 'SetEnv "HOME=/root/it\'s home"\n' in text and 'ForceCommand cd "$HOME"' in text
    client = render_ssh_config([Endpoint("n1", "10.0.0.2", 22)], Path("/s it's/labs/x"), "root")
    assert '  IdentityFile "/s it\'s/labs/x/id_ed25519"\n' in client
    assert '  UserKnownHostsFile "/s it\'s/labs/x/known_hosts"\n' in client


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access("/usr/sbin/sshd", os.X_OK) or not shutil.which("unshare"),
    reason="sshd -T needs root (a private /run for its privilege separation directory)",
)
def test_sshd_reads_the_rootless_config_of_an_odd_home_as_meant(tmp_path: Path) -> None:
    base = tmp_path / "lab dir's"
    base.mkdir()
    key = base / "host key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = base / "sshd_config"
    home = base / "home" / ODD
    keys = base / "home" / ".ssh" / "authorized_keys"
    config.write_text(
        render_sshd_config_rootless(
            port=2222, host_key=key, home=home, lab="l.1", node="n1", auth_keys=keys
        )
    )
    script = 'mount -t tmpfs shoal-run /run && mkdir /run/sshd && exec /usr/sbin/sshd -T -f "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    effective = proc.stdout.splitlines()
    assert f"hostkey {key}" in effective
    assert f"authorizedkeysfile {keys}" in effective
    assert f"setenv HOME={home}" in effective and "setenv SHOAL_LAB_NODE=l.1/n1" in effective
