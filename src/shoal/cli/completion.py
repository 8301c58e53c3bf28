"""``shoal completion bash|zsh|fish`` and ``shoal man``: generated from the parser.

Both walk the whole command parser (every command module registered), so
they stay true as commands change. Completion scripts come from shtab; the
arguments that take a selection or a host list (``-s``/``--select``, ``-w``)
complete node names, ``@group``, ``%plan`` and the built-in sets by calling
``shoal completion --names`` (hidden, fast: one SQLite read, nothing created
when no state exists yet). The man page is roff written here (shtab has none):
synopsis, global options, every command with its options, files, environment
(every ``SHOAL_*`` setting) and exit statuses.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from typing import Any

SHELLS = ("bash", "zsh", "fish")
#: The options whose value is a selection expression or a host list.
SELECTION_OPTIONS = frozenset({"-s", "--select", "-w", "--hosts"})
NAMES_COMMAND = "shoal completion --names"
BUILTIN_SETS = ("all", "failed", "healthy")


def register(sub: Any) -> None:
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script. bash: shoal completion bash > "
        "/etc/bash_completion.d/shoal (scripts/setup.sh installs it); zsh: into a "
        "directory of $fpath as _shoal; fish: ~/.config/fish/completions/shoal.fish.",
    )
    comp.add_argument("shell", nargs="?", choices=SHELLS, help="the shell")
    comp.add_argument("--names", action="store_true", help=argparse.SUPPRESS)
    comp.set_defaults(handler=cmd_completion)
    man = sub.add_parser(
        "man",
        help="print the manual page (roff): shoal man | man -l -",
        description="Print shoal(1) in roff, generated from the command parser.",
    )
    man.set_defaults(handler=cmd_man)


def cmd_completion(args: argparse.Namespace) -> int:
    from shoal.errors import UsageError

    if args.names:
        sys.stdout.write("".join(f"{name}\n" for name in completion_names()))
        return 0
    if args.shell is None:
        raise UsageError(f"completion needs a shell: {', '.join(SHELLS)}")
    sys.stdout.write(completion_script(args.shell))
    return 0


def cmd_man(args: argparse.Namespace) -> int:
    sys.stdout.write(man_page())
    return 0


def full_parser() -> argparse.ArgumentParser:
    """The ``shoal`` parser with every command module registered."""
    from .main import COMMANDS, _build_parser

    return _build_parser(list(COMMANDS.values()))


def completion_script(shell: str) -> str:
    """The completion script for ``shell``, selections completing inventory names."""
    import shtab

    from .configcmds import parsers

    parser = full_parser()
    for p in parsers(parser):
        for action in p._actions:
            if SELECTION_OPTIONS.intersection(action.option_strings):
                action.complete = shtab.cmd(NAMES_COMMAND)  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell=shell))


def completion_names() -> list[str]:
    """Node names, ``@group``, ``%plan`` and the built-in sets; [] without state."""
    from shoal.errors import ShoalError
    from shoal.paths import home_dir

    names = list(BUILTIN_SETS)
    if not (home_dir() / "state.db").exists():
        return names  # nothing imported yet, and completing must not create the state
    from shoal.nodes import inventory, plans
    from shoal.state import State

    try:
        with State() as state:
            names += sorted(inventory.all_names(state))
            names += [f"@{g.name}" for g in inventory.groups(state)]
            names += [f"%{p.name}" for p in plans.list_plans(state=state)]
    except ShoalError:
        pass  # a broken state completes the built-in sets only; commands say why
    return names


# -- the man page ------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text safe in roff: backslashes, hyphens, and a leading dot or quote escaped."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln if ln[:1] in (".", "'") else ln) for ln in out.split("\n"))


def _commands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """``(full name, parser, one-line help)`` of every leaf command, in registration order."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {c.dest: c.help or "" for c in action._choices_actions}
        for name, sub in action.choices.items():
            if helps.get(name) == argparse.SUPPRESS:
                continue
            full = f"{prefix} {name}"
            if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                yield from _commands(sub, full)
            else:
                yield full, sub, helps.get(name, "")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                names += f" \\fI{_roff(str(action.metavar or action.dest.upper()))}\\fR"
        else:
            names = f"\\fI{_roff(str(action.metavar or action.dest))}\\fR"
        help_text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        lines += [".TP", names, _roff(help_text.strip())]
    return lines


def man_page() -> str:
    """shoal(1) in roff."""
    from shoal import __version__
    from shoal.settings import SPECS

    from . import exitcodes

    parser = full_parser()
    lines = [
        f'.TH SHOAL 1 "" "shoal {_roff(__version__)}" "User Commands"',
        ".SH NAME",
        f"shoal \\- {_roff((parser.description or '').removeprefix('Shoal: ').rstrip('.'))}",
        ".SH SYNOPSIS",
        ".B shoal",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
        ".SH GLOBAL OPTIONS",
        *_options(parser),
        ".SH COMMANDS",
    ]
    for full, sub, summary in _commands(parser, "shoal"):
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines += [f'.SS "{_roff(full.removeprefix("shoal "))}"', _roff(usage), ".PP"]
        lines.append(_roff(sub.description or summary))
        lines += _options(sub)
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI$XDG_CONFIG_HOME/shoal/config.toml\\fR (\\fI~/.config/shoal/config.toml\\fR)",
        "the user's settings (TOML); \\fBshoal config show\\fR prints them with their origin",
        ".TP",
        "\\fI$SHOAL_HOME/config.toml\\fR",
        "the state directory's settings: they win over the user's file",
        ".TP",
        "\\fI$SHOAL_HOME/state.db\\fR",
        "the inventory, plans, the failed set, events (SQLite)",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBSHOAL_HOME\\fR",
        "the state directory (default \\fI~/.local/state/shoal\\fR)",
    ]
    for spec in SPECS:
        lines += [".TP", f"\\fB{_roff(spec.env)}\\fR", _roff(f"{spec.key}: {spec.help}")]
    lines.append(".SH EXIT STATUS")
    for paragraph in (exitcodes.__doc__ or "").strip().split("\n\n"):
        text = _roff(re.sub(r":\w+:|`", "", paragraph))
        table = "====" in paragraph  # an RST table: kept as laid out
        lines += [".PP", ".nf", text, ".fi"] if table else [".PP", text]
    return "\n".join(lines) + "\n"
