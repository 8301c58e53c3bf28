"""transport/sshconfig.py agrees with OpenSSH's own resolution (``ssh -G``).

Each case of the corpus is a fake home (``.ssh/config`` and what it includes)
and a fake system directory (``ssh_config``, ``ssh_config.d``). Both sides read
them where OpenSSH looks: a private mount namespace (``unshare -m``) binds the
fake system directory over ``/etc/ssh`` and a copy of ``/etc/passwd`` that
gives root the fake home (ssh takes ``~`` from the password database, not
``$HOME``), and runs this file as a script, which prints, per host, Shoal's
resolution and ``ssh -G``'s, normalised to the same fields. Nothing outside the
namespace sees the mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: ~/.ssh/config and /etc/ssh/ssh_config of Debian, as shipped (the case that matters most).
DEBIAN_SYSTEM = """\
# This is the ssh client system-wide configuration file.
Include /etc/ssh/ssh_config.d/*.conf

Host *
#   ForwardAgent no
#   IdentityFile ~/.ssh/id_rsa
#   Port 22
    SendEnv LANG LC_*
    HashKnownHosts yes
    GSSAPIAuthentication yes
"""

# name -> (files relative to the fake home or system dir, hosts as (name, ssh argv, shoal args))
CASES: dict[str, dict[str, Any]] = {
    "debian-stock-plus-site-dropin": {
        "etc": {
            "ssh_config": DEBIAN_SYSTEM,
            "ssh_config.d/20-cluster.conf": "Host *.cluster\n  User ops\n  Port 2200\n"
            "  GlobalKnownHostsFile /etc/ssh/cluster_known_hosts\n",
            "ssh_config.d/10-first.conf": "Host gpu*.cluster\n  Port 2300\n",
            "ssh_config.d/README": "Host *\n  Port 9999\n",  # not *.conf: never read
        },
        "home": {
            ".ssh/config": "Host web?\n  User www\n  IdentityFile ~/.ssh/web_%r\n"
            "  IdentitiesOnly yes\nHost *\n  ServerAliveInterval 15\n",
        },
        "hosts": ["web1", "gpu3.cluster", "db.cluster", "plain"],
    },
    "user-includes-relative-globs-and-conditional": {
        "etc": {"ssh_config": DEBIAN_SYSTEM},
        "home": {
            ".ssh/config": "Include conf.d/*\nHost bastion\n  Include bastion.conf\n"
            "  User stillbastion\nHost *\n  User default\n",
            ".ssh/conf.d/b-second": "Host n*\n  Port 2002\n  User second\n",
            ".ssh/conf.d/a-first": "Host n1\n  Port 2001\n",
            ".ssh/bastion.conf": "HostName bastion.example.org\nPort 2222\n"
            "Match host nomatch\n  User fromincludedmatch\n",
        },
        "hosts": ["n1", "n7", "bastion", "other"],
    },
    "match-host-user-originalhost-all": {
        "etc": {"ssh_config": "Match all\n  ConnectTimeout 7\n"},
        "home": {
            ".ssh/config": "Host db*\n  HostName %h.internal.example\n"
            "Match host *.internal.example\n  User dba\n  IdentityFile ~/.ssh/internal\n"
            "Match originalhost db2 !user admin\n  Port 5432\n"
            "Match user admin\n  IdentityFile ~/.ssh/admin_key\n  IdentitiesOnly yes\n"
            "Match !host *.example,*.org localuser root\n  ServerAliveInterval 30\n"
            "Host *\n  User fallback\n",
        },
        "hosts": ["db1", "db2", ["db2", ["-l", "admin"], {"user": "admin"}], "app", "x.org"],
    },
    "proxyjump-chains-and-per-host-identity": {
        "etc": {"ssh_config": DEBIAN_SYSTEM},
        "home": {
            ".ssh/config": "Host inner-*\n  ProxyJump jump1,ops@jump2:2022\n"
            "  IdentityFile ~/.ssh/inner\nHost inner-special\n  ProxyJump none\n"
            "  IdentityFile ~/.ssh/special\nHost jump?\n  ProxyJump bastion\n"
            "  IdentityFile ~/.ssh/jump\n  IdentitiesOnly yes\nHost bastion\n  ProxyJump none\n"
            "Host *\n  IdentityFile ~/.ssh/id_ed25519\n"
            "  UserKnownHostsFile ~/.ssh/kh_%h /dev/null\n",
        },
        "hosts": ["inner-a", "inner-special", "jump1", "bastion", "elsewhere"],
    },
    "command-line-options-win": {
        "etc": {"ssh_config": "Host *\n  Port 2000\n  User sysuser\n  ConnectTimeout 3\n"},
        "home": {
            ".ssh/config": "Host n1\n  User cfguser\n  Port 1000\n  IdentityFile ~/.ssh/n1\n",
            ".ssh/cli_key": "",  # ssh -i skips a file that does not exist
        },
        "hosts": [
            ["n1", ["-l", "u1", "-p", "4444"], {"user": "u1", "port": 4444}],
            [
                "n1",
                ["-o", "User=opt", "-o", "Port 5555", "-i", "~/.ssh/cli_key"],
                {"options": ["User=opt", "Port 5555", "IdentityFile ~/.ssh/cli_key"]},
            ],
            [
                "n2",
                [
                    "-o",
                    "ConnectTimeout=9",
                    "-o",
                    "IdentitiesOnly yes",
                    "-o",
                    "UserKnownHostsFile /kh/cli",
                    "-o",
                    "ProxyJump gw",
                ],
                {
                    "options": [
                        "ConnectTimeout=9",
                        "IdentitiesOnly yes",
                        "UserKnownHostsFile /kh/cli",
                        "ProxyJump gw",
                    ]
                },
            ],
        ],
    },
    "include-in-inactive-block-never-matches": {
        "etc": {"ssh_config": DEBIAN_SYSTEM},
        "home": {
            ".ssh/config": "Host special\n  Include inc.conf\nHost *\n  Port 1234\n",
            ".ssh/inc.conf": "Port 4321\nMatch all\n  User fromall\nHost *\n  User fromstar\n",
        },
        "hosts": ["special", "ordinary"],
    },
    "wildcards-negation-and-first-value-wins": {
        "etc": {"ssh_config": "Host *\n  User sys\n  IdentityFile /etc/sys_key\n"},
        "home": {
            ".ssh/config": "Host *.prod !bad.prod\n  User prod\n  IdentityFile ~/.ssh/prod\n"
            "Host ?.prod\n  Port 2022\nHost *\n  IdentityFile ~/.ssh/all\n  Port 22\n",
        },
        "hosts": ["a.prod", "bad.prod", "long.prod", "x"],
    },
}


def _normalise_ssh(text: str) -> dict[str, Any]:
    raw: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        raw.setdefault(key, []).append(value)
    user, host = raw["user"][0], raw["hostname"][0]

    def expand(path: str) -> str:
        home = str(Path.home())
        for token, value in (("%r", user), ("%h", host), ("%u", "root"), ("%d", home)):
            path = path.replace(token, value)
        return os.path.expanduser(path)

    return {
        "hostname": host.lower(),
        "user": user,
        "port": int(raw["port"][0]),
        "identityfile": [expand(p) for p in raw.get("identityfile", [])],
        "identitiesonly": raw["identitiesonly"][0],
        "proxyjump": raw.get("proxyjump", [None])[0],
        "userknownhostsfile": [p for p in raw["userknownhostsfile"][0].split() if p != "/dev/null"],
        "globalknownhostsfile": [
            p for p in raw["globalknownhostsfile"][0].split() if p != "/dev/null"
        ],
        "connecttimeout": raw["connecttimeout"][0],
        "serveraliveinterval": raw["serveraliveinterval"][0],
    }


DEFAULT_KEYS = ["id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss",
                "id_dsa"]  # fmt: skip


def _normalise_shoal(host: str, args: dict[str, Any]) -> dict[str, Any] | None:
    from shoal.transport import sshconfig

    options = [sshconfig.parse_option(o) for o in args.get("options", [])]
    r = sshconfig.resolve(
        [str(Path.home() / ".ssh" / "config")],
        host,
        args.get("user"),
        args.get("port"),
        options=options,
        system="/etc/ssh",
    )
    if r is None:
        return None
    return {
        "hostname": r.hostname.lower(),
        "user": r.user,
        "port": r.port,
        "identityfile": r.identity_files or [str(Path.home() / ".ssh" / k) for k in DEFAULT_KEYS],
        "identitiesonly": "yes" if r.identities_only else "no",
        "proxyjump": r.proxy_jump,
        "userknownhostsfile": r.known_hosts,
        "globalknownhostsfile": r.global_known_hosts,
        "connecttimeout": "none" if r.connect_timeout is None else f"{r.connect_timeout:g}",
        "serveraliveinterval": r.options.get("serveraliveinterval", "0"),
    }


def _inside(case_name: str, home: str) -> None:
    """Run in the mount namespace: print both resolutions of every host as JSON."""
    os.environ["HOME"] = home
    out = []
    for entry in CASES[case_name]["hosts"]:
        host, argv, args = (entry, [], {}) if isinstance(entry, str) else entry
        ssh = subprocess.run(
            ["ssh", "-G", *argv, host], capture_output=True, text=True, check=True
        ).stdout
        out.append({"host": host, "argv": argv, "ssh": _normalise_ssh(ssh),
                    "shoal": _normalise_shoal(host, args)})  # fmt: skip
    print(json.dumps(out))


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace binds the corpus over /root and /etc/ssh)"
    for tool in ("unshare", "ssh", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("case", sorted(CASES))
def test_resolution_agrees_with_ssh_G(case: str, tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    home, etc = tmp_path / "home", tmp_path / "etc"
    _write(home, CASES[case]["home"])
    _write(etc, CASES[case]["etc"])
    (home / ".ssh").chmod(0o700)
    passwd = tmp_path / "passwd"
    lines = Path("/etc/passwd").read_text().splitlines()
    passwd.write_text("".join(
        ":".join([*f[:5], str(home), *f[6:]]) + "\n" if (f := line.split(":"))[2] == "0"
        else line + "\n" for line in lines
    ))  # fmt: skip
    script = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {etc} /etc/ssh && "
        f"exec {sys.executable} {Path(__file__).resolve()} {case} {home}"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(CASES[case]["hosts"])
    for r in results:
        assert r["shoal"] is not None, f"{r['host']}: Shoal fell back to asyncssh"
        assert r["shoal"] == r["ssh"], f"{case}: {r['host']} {r['argv']}"


if __name__ == "__main__":
    _inside(sys.argv[1], sys.argv[2])
