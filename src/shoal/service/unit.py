"""The systemd unit ``shoal serve install`` writes: text, place, and a careful write.

The unit runs ``shoal serve`` in the foreground (``Type=simple``: systemd
supervises the process itself, ``Restart=on-failure``), with this
installation's ``shoal`` executable and ``Environment=SHOAL_HOME=...`` so the
service serves the state directory the installing user meant. A system unit
goes to ``/etc/systemd/system/shoal.service`` (with ``User=`` when the
installer is not root), a user unit to ``~/.config/systemd/user/shoal.service``.
An existing unit with other contents is never overwritten unless forced.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import ConfigError

UNIT_NAME = "shoal.service"


@dataclass(frozen=True)
class UnitSpec:
    """What the unit says."""

    exec_start: list[str]  # the shoal executable and its arguments
    state_dir: Path
    user_unit: bool
    run_as: str | None = None  # User= of a system unit (None: root)


def quote(word: str) -> str:
    """One word of an ExecStart= line, escaped for systemd (specifiers, variables, quotes)."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c in word for c in " \t\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(spec: UnitSpec) -> str:
    """The unit file's text."""
    env = quote(f"SHOAL_HOME={spec.state_dir}")
    lines = [
        "[Unit]",
        "Description=Shoal standing controller (shoal serve)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(quote(w) for w in spec.exec_start),
        f"Environment={env}",
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
    ]
    if not spec.user_unit and spec.run_as:
        lines.append(f"User={spec.run_as}")
    lines += ["", "[Install]", f"WantedBy={'default' if spec.user_unit else 'multi-user'}.target"]
    return "\n".join(lines) + "\n"


def unit_path(user_unit: bool) -> Path:
    if user_unit:
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(config) / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def current_user() -> str | None:
    """The installing user's name for ``User=`` (None when root: the default)."""
    uid = os.geteuid()
    return None if uid == 0 else pwd.getpwuid(uid).pw_name


def install(path: Path, text: str, *, force: bool = False) -> bool:
    """Write the unit at ``path`` atomically; False when the same unit is already there.

    Raises ConfigError when a different unit exists and ``force`` is not given,
    or when the directory cannot be written.
    """
    try:
        existing = path.read_text()
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if existing == text:
        return False
    if existing is not None and not force:
        raise ConfigError(f"{path} exists with other contents: --force replaces it")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    return True


def systemctl_hint(user_unit: bool) -> list[str]:
    """The commands that enable and start the installed unit."""
    ctl = "systemctl --user" if user_unit else "systemctl"
    hint = [f"{ctl} daemon-reload", f"{ctl} enable --now {UNIT_NAME}"]
    if user_unit:
        hint.append("loginctl enable-linger  # keep it running while you are logged out")
    return hint
