"""Keys and SSH files of a lab: generation of keys, rendering of every config.

Owns the lab's ed25519 host key and user key (made with ``ssh-keygen``), the
``sshd_config`` the nodes run, the client ``ssh_config`` and ``known_hosts``
the controller uses, the inventory, and the shell script that starts one
node's sshd inside its namespaces. Rendering is pure (strings in, strings out)
and unit tested; only :func:`generate_keys` and :func:`write_private` touch
the disk.

Only ed25519 keys and curve25519 key exchange are offered: on this machine
they make a fan-out of ``true`` to 32 nodes 2-3× faster than the defaults.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import LabError

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
KEX = "curve25519-sha256,curve25519-sha256@libssh.org"
HOSTKEY_ALGS = "ssh-ed25519"
HOST_KEY = "ssh_host_ed25519_key"
USER_KEY = "id_ed25519"

#: Environment variable every process of a rootless node inherits (lab/node),
#: so an emulated kill finds them even when they leave their SSH session.
NODE_TAG = "SHOAL_LAB_NODE"


@dataclass(frozen=True)
class Endpoint:
    """How the controller reaches one node: name, address, port."""

    name: str
    addr: str
    port: int


def generate_keys(etc: Path, labdir: Path, comment: str) -> None:
    """Make the lab's host key in ``etc/`` and user key in ``labdir/``."""
    for path in (etc / HOST_KEY, labdir / USER_KEY):
        if path.exists():
            continue
        proc = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise LabError(f"ssh-keygen for {path}: {msg}")


def public_key(path: Path) -> str:
    """``ssh-ed25519 AAAA...`` (type and key, no comment) of a ``.pub`` file."""
    try:
        fields = path.read_text().split()
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror}") from None
    if len(fields) < 2:
        raise LabError(f"{path} is not an OpenSSH public key")
    return f"{fields[0]} {fields[1]}"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically with ``mode``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


_COMMON_SSHD = f"""\
HostKeyAlgorithms {HOSTKEY_ALGS}
KexAlgorithms {KEX}
PubkeyAcceptedAlgorithms ssh-ed25519
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
Banner none
PidFile none
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 64
LogLevel INFO
Subsystem sftp {SFTP_SERVER}
"""


#: ForceCommand that starts every command, shell and sftp session in ``$HOME``, in the
#: user's own shell (sshd itself starts them in the home of the password database).
FORCE_HOME = (
    'cd "$HOME" || exit 1; '
    'if [ -z "$SSH_ORIGINAL_COMMAND" ]; then exec "$SHELL" -l; fi; '
    'eval "$SSH_ORIGINAL_COMMAND"'
)


def config_word(text: str) -> str:
    """``text`` as one sshd_config argument: as is when plain, else in double quotes
    (with ``"`` and ``\\`` escaped)."""
    if not any(c in text for c in " \t\"'\\#"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_sshd_config_netns(home: str = "") -> str:
    """sshd_config for a node in its own namespaces.

    Inside the node's mount namespace the lab's ``etc`` directory is mounted
    on ``/etc/ssh`` and the node's home on ``/root``, so ordinary paths work.
    With ``home`` (see :attr:`LabSpec.home`) sessions get ``/root/HOME`` as
    ``$HOME`` and start there.
    """
    odd = f"SetEnv {config_word('HOME=/root/' + home)}\nForceCommand {FORCE_HOME}\n" if home else ""
    return (
        "# Shoal lab node (network namespace); generated, do not edit.\n"
        "ListenAddress 0.0.0.0:22\n"
        f"HostKey /etc/ssh/{HOST_KEY}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "StrictModes yes\n" + odd + _COMMON_SSHD
    )


def render_sshd_config_rootless(
    *, port: int, host_key: Path, home: Path, lab: str, node: str, auth_keys: Path | None = None
) -> str:
    """sshd_config for a rootless node: its own loopback port and home.

    ``SetEnv HOME`` gives sessions the node's home (so the node's empty
    ``.bashrc`` is read, not the user's) and ``ForceCommand`` starts every
    command, shell and subsystem from that home, in the user's own shell.
    ``auth_keys`` defaults to ``home/.ssh/authorized_keys``. ``StrictModes``
    is off because the lab may live under a world-writable ``/tmp`` parent;
    authentication stays key-only.
    """
    keys = str(auth_keys or home / ".ssh" / "authorized_keys").replace("%", "%%")
    return (
        f"# Shoal rootless lab node {node}; generated, do not edit.\n"
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {config_word(str(host_key))}\n"
        f"AuthorizedKeysFile {config_word(keys)}\n"
        "StrictModes no\n"
        f"SetEnv {config_word(f'HOME={home}')} {NODE_TAG}={lab}/{node}\n"
        f"ForceCommand {FORCE_HOME}\n" + _COMMON_SSHD
    )


def render_ssh_config(endpoints: Sequence[Endpoint], labdir: Path, user: str) -> str:
    """Client config: one block per node, matching its name and its address.

    Blocks match the node's name *and* address, so a client that connects to
    the address (as Shoal's transport does with ``Node.host``) gets the same
    key, user and known_hosts as ``ssh -F ssh_config n1``. No ``Host *``: the
    file is safe to ``Include`` from ``~/.ssh/config``.
    """
    lines = ["# Shoal lab; generated, do not edit. Use: ssh -F THIS_FILE n1", ""]
    identity = labdir / USER_KEY
    known = labdir / "known_hosts"
    loopback = any(e.addr.startswith("127.") for e in endpoints)
    keys_and_trust = [  # the lab's key only, its known_hosts only, strictly checked
        f"  IdentityFile {config_word(str(identity))}",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        f"  UserKnownHostsFile {config_word(str(known))}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
        "  UpdateHostKeys no",
        f"  HostKeyAlgorithms {HOSTKEY_ALGS}",
        f"  KexAlgorithms {KEX}",
        "  PubkeyAcceptedAlgorithms ssh-ed25519",
    ]
    for e in endpoints:
        patterns = e.name if loopback else f"{e.name} {e.addr}"
        lines += [
            f"Host {patterns}",
            f"  HostName {e.addr}",
            f"  Port {e.port}",
            f"  User {user}",
            *keys_and_trust,
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  ConnectTimeout 10",
            "  LogLevel ERROR",
            "",
        ]
    if loopback:
        # Rootless nodes share 127.0.0.1 and differ by port (which the Node
        # record carries): one block serves a client that connects by address.
        lines += [
            "Host 127.0.0.1",
            f"  User {user}",
            *keys_and_trust,
            "  LogLevel ERROR",
            "",
        ]
    return "\n".join(lines)


def render_known_hosts(endpoints: Sequence[Endpoint], host_pub: str) -> str:
    """One line per node: its name and address (``[addr]:port`` off port 22)."""
    out = []
    for e in endpoints:
        addr = e.addr if e.port == 22 else f"[{e.addr}]:{e.port}"
        name = e.name if e.port == 22 else f"[{e.name}]:{e.port}"
        out.append(f"{name},{addr} {host_pub}")
    return "\n".join(out) + "\n"


def render_inventory(names: Sequence[str]) -> str:
    return "".join(f"{n}\n" for n in names)


def render_node_script_netns(
    *,
    node: str,
    addr: str,
    prefixlen: int,
    labdir: Path,
    neighbors: Sequence[tuple[str, str]] = (),
    ipv6_off: bool = True,
) -> str:
    """The shell script that boots one node inside ``ip netns exec NS unshare ...``.

    It runs with the node's directory as working directory and binds by
    *relative* paths, so it works wherever the lab directory is (even under
    ``/root`` or ``/tmp``, which it then hides). It prints sshd's pid.
    """
    q = shlex.quote
    hide = q(str(labdir))
    neigh = "".join(f"neigh replace {a} lladdr {m} dev eth0 nud permanent\n" for a, m in neighbors)
    return f"""set -e
{"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6" if ipv6_off else ":"}
ip -b - <<'EOF'
addr replace {addr}/{prefixlen} dev eth0
link set lo up
link set eth0 up
{neigh}EOF
hostname {q(node)}
mount --bind ../../etc /etc/ssh
mount -o remount,bind,ro /etc/ssh
mount --bind ./tmp /tmp
mount --bind ./log /var/log
mount --bind ./home /root
mount -t tmpfs -o size=1m,mode=0755 shoal-run /run
mkdir -m 0755 /run/sshd
if [ -d {hide} ]; then mount -t tmpfs -o size=4k,mode=0700 shoal-hidden {hide}; fi
cd /root
{SSHD} -D -f /etc/ssh/sshd_config -E /var/log/sshd.log </dev/null >/dev/null 2>&1 &
echo $!
"""


def render_node_script_rootless(*, config: Path, log: Path) -> str:
    """Start one rootless node's sshd detached (reaped by init); print its pid.

    An sshd started by root insists on its privilege-separation directory, which
    only exists once the system's sshd has run (the rootless lab run as root, as
    the tests do); started by anyone else it needs none.
    """
    q = shlex.quote
    return (
        '[ "$(id -u)" -ne 0 ] || mkdir -p -m 0755 /run/sshd\n'
        f"{SSHD} -D -f {q(str(config))} -E {q(str(log))} </dev/null >/dev/null 2>&1 &\necho $!\n"
    )
