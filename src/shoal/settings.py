"""Settings: the defaults a user chooses once, and where each effective value came from.

Sources, lowest to highest: the built-in defaults; the user's file
``$XDG_CONFIG_HOME/shoal/config.toml`` (``~/.config/shoal/config.toml``); the
state directory's ``$SHOAL_HOME/config.toml`` (``~/.local/state/shoal``),
which wins over the user's; ``SHOAL_*`` environment variables (the key upper-
cased, a table's name joined with ``_``: ``serve.beat`` is ``SHOAL_SERVE_BEAT``;
an empty variable counts as unset). Command-line flags win over all of them:
the adapter applies settings as its flags' defaults (:data:`FLAGS`).

A file is read with :mod:`tomllib`, imported only when a file exists
(``shoal run`` pays for no parser it does not use). An unknown key, a value of
the wrong type or out of range is refused with a :class:`ConfigError` naming
``file:line`` and the key (tomllib reports no lines for values, so the key's
line is found in the text), or the variable. Nothing here prints, and nothing
is created: reading settings leaves the disk as it was.

Example ``config.toml``::

    parallel = 64
    user = "ubuntu"
    connect_timeout = 5
    timeout = 30              # command timeout, seconds
    host_keys = "accept-new"
    select = "all - failed"
    [serve]
    sweep_interval = 600
    [output]
    json = true               # --json by default
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError
from shoal.numeric import is_finite, number
from shoal.paths import home_dir

FILE_NAME = "config.toml"
ENV_PREFIX = "SHOAL_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Kind:
    """How one setting's value is checked: from TOML (typed) and from text (env, flags).

    (Plain classes here and in :class:`Spec`: a dataclass costs ~1 ms to create,
    and every ``shoal`` start imports this module.)
    """

    __slots__ = ("check", "describe", "parse")

    def __init__(
        self, describe: str, check: Callable[[Any], Any], parse: Callable[[str], Any]
    ) -> None:
        self.describe = describe
        self.check = check  # TOML value -> value; ValueError if refused
        self.parse = parse  # text -> TOML-typed value for ``check``


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError
    return value


def _seconds(value: Any) -> float:
    if not is_finite(value) or value <= 0:
        raise ValueError
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _flag_text(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError


def _choice(*options: str) -> Kind:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError
        return str(value)

    return Kind(" or ".join(options), check, str)


COUNT = Kind("an integer >= 1", _count, int)
SECONDS = Kind("a positive number of seconds", _seconds, number)
TEXT = Kind("a non-empty string", _text, str)
FLAG = Kind("true or false", _flag, _flag_text)


def _setting(default: Any, kind: Kind, help: str) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help})


@dataclass(frozen=True)
class ServeSettings:
    """``[serve]``: the standing controller's (``shoal serve``) knobs."""

    beat: float = _setting(1.0, SECONDS, "seconds between heartbeats to each agent")
    sweep_interval: float = _setting(300.0, SECONDS, "seconds between sweeps (start to start)")
    retention: float = _setting(7 * 86400.0, SECONDS, "seconds of events kept")
    audit_interval: float = _setting(86400.0, SECONDS, "seconds between file audits (shoal audit)")
    logs_max_bytes: int | None = _setting(
        None, COUNT, "bytes the central log store keeps (acked files go first; default: no limit)"
    )


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: how the CLI writes."""

    json: bool = _setting(False, FLAG, "--json by default")


@dataclass(frozen=True)
class Settings:
    """Every setting's effective value; ``origins`` says where each came from.

    An origin is ``default``, ``PATH:LINE``, ``env NAME`` or ``flag --NAME``,
    keyed by the dotted setting name (``serve.beat``).
    """

    parallel: int | None = _setting(None, COUNT, "connections open at once (default: sized)")
    user: str | None = _setting(None, TEXT, "SSH user when neither inventory nor ssh_config says")
    connect_timeout: float = _setting(10.0, SECONDS, "seconds to connect to a node")
    timeout: float | None = _setting(None, SECONDS, "command timeout per node, seconds")
    host_keys: str = _setting("verify", _choice("verify", "accept-new"), "host-key policy")
    select: str | None = _setting(None, TEXT, "selection when a fan-out has no -s")
    agent_home: str = _setting(".shoal", TEXT, "the agent's working area on the nodes")
    keepalive: float = _setting(5.0, SECONDS, "seconds between SSH keepalives")
    relay_tree: int | None = _setting(
        None, COUNT, "run selections this large through an automatic tree of relay gateways"
    )
    use_mq_nodes: bool = _setting(False, FLAG, "use the MQ_NODES file as the node list")
    serve: ServeSettings = field(default_factory=ServeSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str) -> Any:
        """The value of a dotted setting name (``serve.beat``)."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return value


#: The command-line options each setting is the default of, in fan-out commands.
FLAGS: dict[str, tuple[str, ...]] = {
    "parallel": ("--parallel",),
    "user": ("-l", "--user"),
    "connect_timeout": ("--connect-timeout",),
    "timeout": ("--timeout",),
    "host_keys": ("--host-keys",),
    "select": ("--select",),
    "agent_home": ("--home",),
    "keepalive": ("--keepalive",),
    "output.json": ("--json",),
}


class Spec:
    """One setting as the loader sees it: dotted key, kind, default, help, variable."""

    __slots__ = ("default", "env", "help", "key", "kind")

    def __init__(self, key: str, kind: Kind, default: Any, help: str) -> None:
        self.key = key
        self.kind = kind
        self.default = default
        self.help = help
        self.env = ENV_PREFIX + key.replace(".", "_").upper()

    def from_text(self, text: str) -> Any:
        """A value from an environment variable or a flag; ValueError if refused."""
        return self.kind.check(self.kind.parse(text))


def _specs(cls: type, prefix: str = "") -> list[Spec]:
    out: list[Spec] = []
    for f in fields(cls):
        if "kind" in f.metadata:
            out.append(Spec(prefix + f.name, f.metadata["kind"], f.default, f.metadata["help"]))
        elif f.name != "origins":
            table: type = f.default_factory  # type: ignore[assignment]
            out.extend(_specs(table, f"{prefix}{f.name}."))
    return out


SPECS: tuple[Spec, ...] = tuple(_specs(Settings))
_BY_KEY = {s.key: s for s in SPECS}
TABLES = frozenset(k.rpartition(".")[0] for k in _BY_KEY if "." in k)


def user_file(environ: Mapping[str, str] | None = None) -> Path:
    """The user's config file (``$XDG_CONFIG_HOME/shoal/config.toml``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shoal" / FILE_NAME


def home_file(environ: Mapping[str, str] | None = None) -> Path:
    """The state directory's config file (``$SHOAL_HOME/config.toml``)."""
    return home_dir(environ) / FILE_NAME


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The effective settings: defaults < user file < state directory's file < env."""
    env = os.environ if environ is None else environ
    return load_from([user_file(env), home_file(env)], env)


def load_from(files: list[Path], environ: Mapping[str, str]) -> Settings:
    """Settings from ``files`` (later ones win; missing ones skipped), then ``environ``."""
    values: dict[str, Any] = {}
    origins = {s.key: "default" for s in SPECS}
    for path in files:
        for key, (value, line) in _read_file(path).items():
            values[key] = value
            origins[key] = f"{path}:{line}"
    for spec in SPECS:
        text = environ.get(spec.env, "")
        if text.strip():
            try:
                values[spec.key] = spec.from_text(text)
            except ValueError:
                raise ConfigError(
                    f"{spec.env}: {spec.key} must be {spec.kind.describe}, got {text!r}"
                ) from None
            origins[spec.key] = f"env {spec.env}"
    return build(values, origins)


def build(values: Mapping[str, Any], origins: Mapping[str, str]) -> Settings:
    """A Settings from checked dotted values (the rest default) and their origins."""
    tables: dict[str, dict[str, Any]] = {t: {} for t in TABLES}
    top: dict[str, Any] = {}
    for key, value in values.items():
        table, _, name = key.rpartition(".")
        (tables[table] if table else top)[name] = value
    nested = {t: replace(getattr(Settings(), t), **kw) for t, kw in tables.items()}
    return Settings(**top, **nested, origins=dict(origins))


def with_flags(settings: Settings, given: Mapping[str, Any]) -> Settings:
    """``settings`` with the dotted values the command line gave (origin ``flag``)."""
    values = {s.key: settings.get(s.key) for s in SPECS}
    origins = dict(settings.origins)
    for key, value in given.items():
        values[key] = value
        origins[key] = f"flag {FLAGS[key][-1]}" if key in FLAGS else "flag"
    return build(values, origins)


def _read_file(path: Path) -> dict[str, tuple[Any, int]]:
    """``{dotted key: (checked value, line)}`` of one file; {} when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, from PyPI (a dependency on 3.10)
        import tomli as tomllib

    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_message(path, str(exc))) from None
    out: dict[str, tuple[Any, int]] = {}
    for key, value in _flatten(data):
        line = _line_of(text, key)
        spec = _BY_KEY.get(key)
        if spec is None:
            raise ConfigError(f"{path}:{line}: unknown setting {key!r}{_known_hint(key)}")
        try:
            out[key] = (spec.kind.check(value), line)
        except ValueError:
            raise ConfigError(
                f"{path}:{line}: {key} must be {spec.kind.describe}, got {value!r}"
            ) from None
    return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in data.items():
        key = prefix + name
        if isinstance(value, dict) and key in TABLES:
            out.extend(_flatten(value, key + "."))
        else:
            out.append((key, value))
    return out


def _known_hint(key: str) -> str:
    """The names a key's table knows (unknown tables are unknown top-level keys)."""
    table = key.rpartition(".")[0]
    names = [s.key.rpartition(".")[2] for s in SPECS if s.key.rpartition(".")[0] == table]
    names += sorted(TABLES) if not table else []
    return f" (known{f' in [{table}]' if table else ''}: {', '.join(names)})"


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _syntax_message(path: Path, message: str) -> str:
    match = _AT.search(message)
    if match is None:
        return f"{path}: {message}"
    return f"{path}:{match.group(1)}: {message[: match.start()]} (column {match.group(2)})"


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")


def _line_of(text: str, key: str) -> int:
    """The 1-based line that sets dotted ``key`` (in its table or as a dotted key); else 1."""
    current = ""
    fallback = 1
    for number_, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = _unquote_dotted(header.group(1))
            if current == key:
                fallback = number_  # a table where a value belongs
            continue
        left, eq, _ = line.partition("=")
        if not eq:
            continue
        if ".".join(filter(None, (current, _unquote_dotted(left)))) == key:
            return number_
    return fallback


def _unquote_dotted(text: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in text.split("."))
