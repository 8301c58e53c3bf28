"""``shoal config show``, and the settings applied as the defaults of the CLI's flags.

:func:`apply_settings` runs before every command line is parsed (main.py): a
setting that did not come from its default becomes the default of the flag it
names (:data:`shoal.settings.FLAGS`), so the flag given on the command line
still wins, and its help says so (``--help`` shows "(default 32, from FILE:LINE)"
in place of the built-in default). Connection settings (parallelism, user, timeouts, host keys,
selection, agent home, keepalive) are applied only to fan-out commands, those
with ``--parallel``: ``nodes list`` keeps listing every node and ``nodes add
--user`` keeps storing only what it is told; ``output.json`` applies to every
``--json``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping
from typing import Any

from shoal.settings import FLAGS, SPECS, Settings, load, with_flags


def apply_settings(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load the settings (from ``environ``, default this process's) and make each
    non-default one its flags' default; the settings."""
    settings = load(environ)
    chosen = [key for key in FLAGS if settings.origins.get(key, "default") != "default"]
    if not chosen:
        return settings
    for p in parsers(parser):
        options = p._option_string_actions
        fanout = "--parallel" in options
        for key in chosen:
            if not fanout and key != "output.json":
                continue
            action = next((options[o] for o in FLAGS[key] if o in options), None)
            if action is not None and action.default is not argparse.SUPPRESS:
                action.default = settings.get(key)
                action.help = _help_with_default(
                    action.help, settings.get(key), settings.origins[key]
                )
    return settings


_BUILT_IN = re.compile(r"\s*\(default\b[^)]*\)")


def _help_with_default(text: str | None, value: Any, origin: str) -> str:
    """A flag's help with the built-in "(default ...)" replaced by the effective one."""
    import os

    home = os.path.expanduser("~")
    where = "~" + origin[len(home) :] if origin.startswith(home + os.sep) else origin
    shown = f"(default {_shown(value)}, from {where})".replace("%", "%%")
    rest = _BUILT_IN.sub("", text or "").strip()
    return f"{rest} {shown}" if rest else shown


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from parsers(sub)


def register(sub: Any) -> None:
    config = sub.add_parser(
        "config",
        help="the effective settings and where each came from",
        description="Settings come from ~/.config/shoal/config.toml (XDG_CONFIG_HOME), "
        "then $SHOAL_HOME/config.toml, then SHOAL_* environment variables; a command's "
        "flags win over all of them.",
    )
    csub = config.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    show = csub.add_parser(
        "show",
        help="every setting: value and origin (default, file:line, env, flag)",
        description="Print every setting's effective value and where it came from. The "
        "flags below stand for the same flags of the fan-out commands, to see how a "
        "command line would combine with the files.",
    )
    show.add_argument("--json", action="store_true", help="one JSON object per setting")
    for spec in SPECS:
        if spec.key in FLAGS and spec.key != "output.json":
            show.add_argument(
                *FLAGS[spec.key],
                dest=f"flag:{spec.key}",
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=spec.help,
            )
    show.set_defaults(handler=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    from shoal.errors import UsageError

    given: dict[str, Any] = {}
    for name, text in vars(args).items():
        if name.startswith("flag:"):
            key = name[len("flag:") :]
            spec = next(s for s in SPECS if s.key == key)
            try:
                given[key] = spec.from_text(text)
            except ValueError:
                raise UsageError(
                    f"{FLAGS[key][-1]}: {key} must be {spec.kind.describe}, got {text!r}"
                ) from None
    if args.json and args.settings.origins.get("output.json", "default") == "default":
        # --json's default is True when a file or the environment turned JSON on:
        # then it is their value, not a flag, that made the output JSON
        given["output.json"] = True
    settings = with_flags(args.settings, given)
    rows = [(s.key, settings.get(s.key), settings.origins[s.key]) for s in SPECS]
    if args.json:
        from .render import print_records

        print_records({"key": k, "value": v, "origin": o} for k, v, o in rows)
        return 0
    from .render import print_table

    print_table([(k, _shown(v), o) for k, v, o in rows], ("SETTING", "VALUE", "ORIGIN"))
    return 0


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
