"""The service's half of ``shoal run``'s fast path: the command line in, the CLI's bytes out.

``POST /api/v1/cli/run`` ``{"argv", "env", "tty": [stdout, stderr], "columns"}`` (routed by
:mod:`.runroutes`) is what
:mod:`shoal.cli.fastpath` sends before the CLI has imported anything. Here the
command line is parsed by the CLI's own parser with the settings ``env``
decides (:func:`shoal.cli.configcmds.apply_settings`; one parser per distinct
environment and config files, kept), checked by ``run``'s own code
(:func:`shoal.cli.runcmds.run_command`), run over the held connections as
``POST /api/v1/runs`` runs it (the same options, health recorded the same
way) and rendered by the CLI's own code (:func:`shoal.cli.runcmds.render_run`,
:func:`shoal.cli.main.report` for an error that stops the command), with
stdout and stderr escaped as the CLI escapes a terminal. What it writes is
recorded in order and answered as frames (see :mod:`shoal.cli.fastpath`): one
rendering, whichever process runs it, so the bytes are the direct path's.

It declines (one ``f`` frame, before anything runs, and the CLI then runs as
before) what the CLI must do itself: a command line its parser refuses or
``--help``, a settings error, logging flags, what only the direct path
honours (:func:`shoal.cli.viaservice.direct_only`), ``--stream``,
``--out-dir`` (files in the client's directory). A progress line (stderr a
terminal, as the CLI decides) is the CLI's :class:`~shoal.cli.render.NodeProgress`
drawn into the answer as nodes finish, ``columns`` wide (the client's terminal).
A client that goes away
(Ctrl-C) ends the nodes' commands, as a closed ``/runs`` stream does.

Rendering swaps ``sys.stdout``/``sys.stderr`` while it runs: it is synchronous
on the event loop's thread (no await in between) and the library never
prints, so nothing else writes there meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from shoal.errors import ConfigError, ShoalError, UsageError

from .routes import controller

#: The answer's content type (the CLI reads nothing else as frames).
FRAMES = "application/x-shoal-frames"
#: Parsers kept, one per (environment, config files' stamps).
PARSERS_KEPT = 8

_parsers: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def frame(tag: bytes, payload: bytes) -> bytes:
    return tag + b"%08x" % len(payload) + payload


class _Recorder:
    """A text stream that records what is written, in order, as frames of ``tag``."""

    def __init__(self, tag: bytes, frames: list[tuple[bytes, str]], tty: bool) -> None:
        self.tag, self.frames, self.tty = tag, frames, tty
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        if text:
            self.frames.append((self.tag, text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


def _body(frames: list[tuple[bytes, str]], code: int | None) -> bytes:
    """The recorded writes as frames, runs of one stream joined; the exit status last
    (``code`` None: none)."""
    out: list[bytes] = []
    for tag, text in frames:
        data = text.encode("utf-8", "surrogateescape")
        if out and out[-1][:1] == tag:
            data = out.pop()[9:] + data
        out.append(frame(tag, data))
    return b"".join(out) + (b"" if code is None else frame(b"x", b"%d" % code))


@contextlib.contextmanager
def _captured(frames: list[tuple[bytes, str]], tty: tuple[bool, bool]) -> Any:
    """sys.stdout/stderr recorded (escaped as the CLI's terminal streams are)."""
    from shoal.cli.terminal import EscapingStream

    streams: list[Any] = [_Recorder(b"o", frames, tty[0]), _Recorder(b"e", frames, tty[1])]
    out, err = (EscapingStream(s) if s.tty else s for s in streams)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
        yield


def _declined(why: str) -> Response:
    return Response(frame(b"f", why.encode()), media_type=FRAMES)


def _stamp(path: Any) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size


def _parser(env: dict[str, str]) -> tuple[Any, Any]:
    """The CLI's ``run`` parser with ``env``'s settings as defaults, and the settings."""
    from shoal import settings

    files = (settings.user_file(env), settings.home_file(env))
    key = (tuple(sorted(env.items())), tuple(_stamp(f) for f in files))
    if key not in _parsers:
        from shoal.cli import configcmds
        from shoal.cli.main import _build_parser

        parser = _build_parser(["runcmds"])
        made = parser, configcmds.apply_settings(parser, env)
        while len(_parsers) >= PARSERS_KEPT:
            _parsers.pop(next(iter(_parsers)))
        _parsers[key] = made
    return _parsers[key]


def _parse(argv: list[str], env: dict[str, str]) -> Any:
    """The parsed command line, or the reason to decline (a str)."""
    from shoal.cli import viaservice

    try:
        parser, settings = _parser(env)
    except ConfigError:
        return "settings refused"  # the CLI says why, as it always does
    told = io.StringIO()
    try:
        with contextlib.redirect_stdout(told), contextlib.redirect_stderr(told):
            args = parser.parse_args(argv)
    except SystemExit:
        return "usage"  # refused or --help: the CLI prints it
    args.settings = settings
    from shoal.cli.runcmds import cmd_run

    if getattr(args, "handler", None) is not cmd_run or args.raw or args.no_service:
        return "not a plain run"
    if args.verbose or args.debug or args.log_file:
        return "logging"
    if args.stream or args.out_dir or viaservice.direct_only(args):
        return "direct"
    return args


def _checked(raw: Any) -> tuple[list[str], dict[str, str], tuple[bool, bool], int]:
    if not isinstance(raw, dict):
        raise UsageError("bad request: a JSON object expected")
    argv, env, tty = raw.get("argv"), raw.get("env"), raw.get("tty")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise UsageError("bad request: argv must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise UsageError("bad request: env must map names to strings")
    if not (isinstance(tty, list) and len(tty) == 2 and all(isinstance(t, bool) for t in tty)):
        raise UsageError("bad request: tty must be [stdout, stderr] booleans")
    columns = raw.get("columns", 80)
    if not isinstance(columns, int) or isinstance(columns, bool) or columns < 1:
        raise UsageError("bad request: columns must be a positive integer")
    return argv, env, (tty[0], tty[1]), columns


async def cli_run(request: Request) -> Response:
    """``shoal run ARGV`` parsed, run and rendered as the CLI would (module docstring)."""
    try:
        raw = json.loads(await request.body())
    except ValueError:
        raise UsageError("bad request: not JSON") from None
    argv, env, tty, columns = _checked(raw)
    args = _parse(argv, env)
    if isinstance(args, str):
        return _declined(args)
    ctl = controller(request)
    frames: list[tuple[bytes, str]] = []
    with _captured(frames, tty):
        start = _start(args, ctl)
    if isinstance(start, int):
        return Response(_body(frames, start), media_type=FRAMES)
    shown = not (args.no_progress or args.json) and tty[1]  # as the CLI decides it
    progress = _Progress(start[1], columns) if shown else None
    return StreamingResponse(_answer(args, ctl, start[0], tty, progress), media_type=FRAMES)


class _Progress:
    """The CLI's progress line, drawn into frames the answer sends as they come."""

    def __init__(self, total: int, columns: int) -> None:
        from shoal.cli.render import NodeProgress

        self.frames: list[tuple[bytes, str]] = []
        self.drawn = asyncio.Event()
        self.bar = NodeProgress(total, True, _Recorder(b"e", self.frames, True))  # type: ignore[arg-type]
        self.bar.line.columns = columns  # the client's terminal, not the service's

    def update(self, outcome: Any) -> None:
        self.bar.update(outcome)
        self.drawn.set()

    def take(self) -> bytes:
        """The frames drawn since the last call (no exit frame)."""
        data = _body(self.frames, None)
        self.frames.clear()
        self.drawn.clear()
        return data


def _start(args: Any, ctl: Any) -> int | tuple[Callable[..., Any], int]:
    """The run to await (not started; it takes ``on_result``) and how many nodes, or the
    exit status of the error that stopped it."""
    from shoal.cli import viaservice
    from shoal.cli.main import report
    from shoal.cli.runcmds import run_command
    from shoal.fanout.commands import run_async
    from shoal.nodes.select import resolve

    from .noderoutes import run_options

    try:
        command, options = run_command(args)
        warm = run_options(viaservice.service_options(options))
        nodes = resolve(args.select, state=ctl.state)
    except ShoalError as exc:
        return report(exc, as_json=args.json)
    transport = ctl.transport

    def started(on_result: Any = None) -> Any:
        return run_async(nodes, command, warm, transport=transport, on_result=on_result)

    return started, len(nodes)


async def _answer(
    args: Any,
    ctl: Any,
    start: Callable[..., Any],
    tty: tuple[bool, bool],
    progress: _Progress | None,
) -> AsyncIterator[bytes]:
    """The progress line as nodes finish, then the run's frames once it ends; a client
    gone away cancels it (the nodes' commands too)."""
    from shoal.cli.main import report, report_unexpected
    from shoal.cli.runcmds import render_run
    from shoal.nodes import health

    task = asyncio.ensure_future(start(progress.update if progress else None))
    frames: list[tuple[bytes, str]] = []
    try:
        while progress is not None and not task.done():
            drawn = asyncio.ensure_future(progress.drawn.wait())
            await asyncio.wait([task, drawn], return_when=asyncio.FIRST_COMPLETED)
            drawn.cancel()
            if progress.frames:
                yield progress.take()
        if progress is not None:
            progress.bar.close()  # blanked before anything else is written, as the CLI does
            if progress.frames:
                yield progress.take()
        try:
            results = await asyncio.shield(task)
        except ShoalError as exc:
            with _captured(frames, tty):
                code = report(exc, as_json=args.json)
        except Exception as exc:  # a bug: the CLI's one line for it
            with _captured(frames, tty):
                code = report_unexpected(exc)
        else:
            await ctl.record_health(results, health.Policy.OUTCOME)  # by the writer thread
            with _captured(frames, tty):
                code = render_run(args, results)
        yield _body(frames, code)
    finally:
        if not task.done():  # the client went away: stop the nodes' work
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
