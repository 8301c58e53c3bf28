"""``shoal app``: applications (components, process blocks, barriers) and their lifecycle.

Adapters only: parse arguments, call :mod:`shoal.app`, render. See README
'Applications'.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from shoal.numeric import number

from . import viaservice
from .common import add_link_options
from .exitcodes import FAILED, OK, USAGE
from .render import JSON_HELP, ProgressLine, bar, print_object, print_records

#: The name argument of status, logs, monitor and down.
APP_HELP = "the application's name or its spec file (default: the only one)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "app",
        help="applications: up, status, logs, monitor, down (Plush-style specs)",
        description="Run an application described by a spec (YAML, or Plush XML): "
        "acquire nodes, configure them, start process blocks with barriers, monitor, clean up.",
    )
    s = p.add_subparsers(dest="app_command", metavar="ACTION")
    s.required = True

    up = s.add_parser("up", help="acquire, configure and start (re-run: converge)")
    up.add_argument("spec", help="spec file (.yaml, or Plush .xml)")
    up.add_argument(
        "-s",
        "--select",
        metavar="[COMPONENT=]EXPR",
        action="append",
        default=[],
        help="select the nodes from EXPR instead of the spec's select: (every component, "
        "or COMPONENT=EXPR for one; repeatable)",
    )
    add_link_options(up, connect_timeout=15.0)
    up.add_argument(
        "--detach",
        action="store_true",
        help="return once started; agents supervise, 'shoal sweep' revives them",
    )
    up.add_argument(
        "--for",
        dest="duration",
        type=number,
        default=None,
        metavar="SECONDS",
        help="monitor in the foreground for this long (default: until Ctrl-C)",
    )
    up.add_argument(
        "--interval", type=number, default=5.0, metavar="SECONDS", help="seconds between checks"
    )
    up.add_argument(
        "--json", action="store_true", help="print the report as one JSON object (no monitoring)"
    )
    up.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    up.add_argument(
        "--plain-data",
        action="store_true",
        help="software pushes: chunks and token in clear TCP, no TLS (trusted networks only)",
    )
    up.set_defaults(handler=cmd_up)

    st = s.add_parser("status", help="components x nodes x processes, barriers, versions")
    st.add_argument("name", nargs="?", help=APP_HELP)
    st.add_argument("--json", action="store_true", help=JSON_HELP)
    st.set_defaults(handler=cmd_status)

    lg = s.add_parser("logs", help="last lines of every step and service log")
    lg.add_argument("name", nargs="?", help=APP_HELP)
    lg.add_argument("-c", "--component", default=None, help="only this component's nodes")
    lg.add_argument("--node", default=None, metavar="NODE", help="only this node")
    lg.add_argument(
        "-n", "--lines", type=int, default=20, metavar="N", help="last N lines of each log (20)"
    )
    lg.add_argument("--json", action="store_true", help=JSON_HELP)
    lg.set_defaults(handler=cmd_logs)

    mo = s.add_parser("monitor", help="check and converge (replace lost nodes) in a loop")
    mo.add_argument("name", nargs="?", help=APP_HELP)
    mo.add_argument(
        "--for",
        dest="duration",
        type=number,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    )
    mo.add_argument(
        "--interval", type=number, default=5.0, metavar="SECONDS", help="between checks (5)"
    )
    mo.add_argument("--once", action="store_true", help="one check, then exit")
    mo.add_argument("--json", action="store_true", help=JSON_HELP)
    mo.set_defaults(handler=cmd_monitor)

    dn = s.add_parser("down", help="stop everything and remove what was installed")
    dn.add_argument("name", nargs="?", help=APP_HELP)
    dn.add_argument("--keep", action="store_true", help="keep software and files on the nodes")
    dn.add_argument(
        "--collect", type=Path, default=None, metavar="DIR", help="first copy logs to DIR/NODE/"
    )
    dn.add_argument("--json", action="store_true", help=JSON_HELP)
    dn.set_defaults(handler=cmd_down)

    ck = s.add_parser(
        "check",
        help="validate a spec (schema and cross-references)",
        description="Check a spec without touching a node: every schema problem is listed, "
        "one 'FILE:LINE: PATH: PROBLEM' line each, then the cross-references (steps, "
        "barriers, software, variables, cycles) are checked. Exit 0 when valid, 2 otherwise.",
    )
    ck.add_argument("spec", help="spec file (.yaml, or Plush .xml)")
    ck.add_argument("--json", action="store_true", help=JSON_HELP)
    ck.set_defaults(handler=cmd_check)

    ip = s.add_parser("import-plush", help="convert a Plush XML application to a Shoal spec")
    ip.add_argument("xml", help="the Plush XML file")
    ip.add_argument("-o", "--output", type=Path, default=None, help="write YAML here")
    ip.set_defaults(handler=cmd_import)

    ls = s.add_parser("list", help="applications known to this controller")
    ls.add_argument("--json", action="store_true", help=JSON_HELP)
    ls.set_defaults(handler=cmd_list)

    sc = s.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    sc.set_defaults(handler=cmd_schema)


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


class _UpLine:
    """``app up``'s live line (a terminal's stderr only): the phase and how many of its
    nodes are done (``agents [####------] 3/8``); text lines are printed above it."""

    def __init__(self, enabled: bool) -> None:
        self.line = ProgressLine(enabled)
        self.text = ""

    def progress(self, phase: str, done: int, total: int) -> None:
        self.text = f"{phase} {bar(done, total)}"
        self.line.show(self.text)
        if phase == "start" and done >= total:
            self.close()  # started: nothing left to count

    def say(self, text: str) -> None:
        self.line.close()
        _say(text)
        if self.text:
            self.line.show(self.text)

    def close(self) -> None:
        self.line.close()
        self.text = ""


def _name(args: argparse.Namespace) -> str:
    from shoal.app import store
    from shoal.errors import UsageError
    from shoal.state import State

    with State() as st:
        names = store.list_apps(st)
        if args.name:
            return _app_of(str(args.name), names, st)
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError("no application is up (shoal app up SPEC)")
    raise UsageError(f"several applications are up; name one: {', '.join(names)}")


def _app_of(given: str, names: list[str], st: Any) -> str:
    """The application ``given`` names: an app's name, else the spec file of one
    (the app brought up from that file, else the name the file declares)."""
    from shoal.app import store

    path = Path(given)
    if given in names or not path.is_file():
        return given
    for name in names:
        rec = store.get_app(st, name)
        if rec is not None and Path(rec.file).resolve() == path.resolve():
            return name
    from shoal.app.appspec import load

    return load(path).name


def _selections(items: list[str], components: Any) -> dict[str | None, str]:
    """``app up -s``: ``COMPONENT=EXPR`` for a component of the spec, else EXPR for all."""
    out: dict[str | None, str] = {}
    for item in items:
        comp, sep, expr = item.partition("=")
        if sep and comp in components:
            out[comp] = expr
        else:
            out[None] = item
    return out


def _render_up(report: Any) -> None:
    phases = "  ".join(f"{k} {v:.2f}s" for k, v in report.phases.items())
    print(f"app {report.app}: up in {report.wall:.2f}s ({phases})")
    for comp, nodes in report.members.items():
        print(f"  {comp}: {len(nodes)} node(s) {','.join(nodes)}")
    for comp, old, new in report.replaced:
        print(f"  {comp}: {new} replaced {old}")
    for node, why in report.failed.items():
        print(f"  failed: {node}: {why}")
    print(f"  steps: {report.steps_run} run, {report.steps_cached} already done")


def cmd_up(args: argparse.Namespace) -> int:
    from shoal.agentlink.fleet import AgentOptions
    from shoal.app import lifecycle
    from shoal.app.appspec import load, with_selections
    from shoal.app.runtime import UpOptions

    spec = load(args.spec)
    if args.select:
        spec = with_selections(spec, _selections(args.select, spec.components))
    agent = AgentOptions(connect_timeout=args.connect_timeout, host_keys=args.host_keys)
    live = _UpLine(not (args.json or args.no_progress))
    opts = UpOptions(
        say=None if args.json else live.say,
        on_progress=live.progress,
        agent=agent,
        connect_timeout=args.connect_timeout,
        plain_data=args.plain_data,
    )
    kept = viaservice.app_up(args, spec, _selections(args.select, spec.components))
    try:
        report = kept or asyncio.run(lifecycle.up_async(spec, opts))
    finally:
        live.close()
    if args.json:
        print_object(report.as_json())
    else:
        _render_up(report)
    if args.detach or args.json or (kept and viaservice.app_monitor(args, spec.name) == 0):
        return 0
    print(f"monitoring {spec.name} (Ctrl-C to stop; the application keeps running)")
    try:
        asyncio.run(
            lifecycle.monitor_async(spec.name, opts, interval=args.interval, duration=args.duration)
        )
    except KeyboardInterrupt:
        print(f"\nstopped monitoring; {spec.name} keeps running (shoal app down {spec.name})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shoal.app import lifecycle

    name = _name(args)
    status = viaservice.app_status(args, name) or asyncio.run(lifecycle.status_async(name))
    if args.json:
        print_object(status.as_json())
        return OK if status.healthy else FAILED
    print(f"app {status.name}: {status.status} (from {status.file})")
    if status.versions:
        print("  software: " + ", ".join(f"{k} {v}" for k, v in status.versions.items()))
    for b in status.barriers.values():
        when = time.strftime("%H:%M:%S", time.localtime(b.released)) if b.released else "waiting"
        print(f"  barrier {b.name}: {b.arrived}/{b.needed} arrived, released {when}")
    cw = max([9, *(len(n.component) for n in status.nodes)])
    nw = max([4, *(len(n.node) for n in status.nodes)])
    print(f"  {'COMPONENT':<{cw}} {'SLOT':>4} {'NODE':<{nw}} {'STATE':<8} {'STEPS':>5}  PROCESSES")
    for n in status.nodes:
        procs = ", ".join(
            f"{p['name'].split('.')[-1]} {p['state']}"
            + (f" pid {p['pid']}" if p.get("pid") else "")
            + (f" restarts {p['restarts']}" if p.get("restarts") else "")
            for p in n.programs
        )
        state = n.state if n.state != "active" or n.reachable else "lost"
        extra = procs or n.detail
        row = f"{n.component:<{cw}} {n.slot:>4} {n.node:<{nw}} {state:<8} {n.steps_done:>5}"
        print(f"  {row}  {extra}")
    return 0 if status.healthy else 1


def cmd_logs(args: argparse.Namespace) -> int:
    from shoal.app import lifecycle

    logs = asyncio.run(
        lifecycle.logs_async(
            _name(args), component=args.component, node=args.node, lines=args.lines
        )
    )
    for node, text in logs.items():
        if args.json:
            print_records({"node": node, "line": line} for line in text.splitlines())
            continue
        for line in text.splitlines():
            print(f"{node}: {line}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from shoal.app import lifecycle
    from shoal.app.runtime import UpOptions

    name = _name(args)
    if (code := viaservice.app_monitor(args, name)) is not None:
        return code  # shoal serve's keeper runs the rounds
    try:
        report = asyncio.run(
            lifecycle.monitor_async(
                name,
                UpOptions(say=None if args.json else _say),
                interval=args.interval,
                duration=args.duration,
                rounds=1 if args.once else None,
            )
        )
    except KeyboardInterrupt:
        if not args.json:
            print("stopped monitoring", file=sys.stderr)
        return OK  # the way a follow ends (exitcodes)
    if args.json:
        last = None if report.last is None else report.last.as_json()
        print_object(
            {"app": name, "rounds": report.rounds, "converged": report.converged, "last": last}
        )
        return OK
    print(f"{report.rounds} check(s), {report.converged} convergence(s)")
    if report.last is not None:
        _render_up(report.last)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from shoal.app import lifecycle

    name = _name(args)
    report = viaservice.app_down(args, name) or asyncio.run(
        lifecycle.down_async(name, keep=args.keep, collect=args.collect)
    )
    bad = {n: r for n, r in report.nodes.items() if r != "cleaned"}
    if args.json:
        print_records({"node": n, "app": name, "result": r} for n, r in report.nodes.items())
        return FAILED if bad else OK
    print(f"app {name}: down on {len(report.nodes) - len(bad)} node(s)")
    for node, why in bad.items():
        print(f"  {node}: {why}")
    if args.collect:
        print(f"  logs in {args.collect}/NODE/")
    return FAILED if bad else OK


def cmd_check(args: argparse.Namespace) -> int:
    from shoal.app.appspec import load

    problems = _schema_problems(Path(args.spec))
    if problems:
        if args.json:
            print_object({"spec": args.spec, "ok": False, "problems": problems})
        else:
            for p in problems:
                print(f"shoal: error: {p['where']}: {p['path']}: {p['message']}", file=sys.stderr)
        return USAGE
    spec = load(args.spec)  # the cross-references (first problem as a ConfigError)
    steps = sum(len(c.steps) for c in spec.components.values())
    if args.json:
        print_object(
            {
                "spec": args.spec,
                "ok": True,
                "app": spec.name,
                "components": len(spec.components),
                "steps": steps,
                "barriers": len(spec.barriers),
                "software": len(spec.software),
                "problems": [],
            }
        )
        return OK
    print(
        f"{args.spec}: ok — app {spec.name}: {len(spec.components)} component(s), "
        f"{steps} step(s), {len(spec.barriers)} barrier(s), {len(spec.software)} software tree(s)"
    )
    return OK


def _schema_problems(path: Path) -> list[dict[str, str]]:
    """Every schema violation of the spec at ``path``, in file order: where, path, message."""
    from shoal.app.located import load as load_yaml
    from shoal.app.validate import validate

    if path.suffix.lower() == ".xml":
        from shoal.app.plush import load_plush

        doc = load_plush(path)
    else:
        doc = load_yaml(path)
    found = sorted(validate(doc.value), key=lambda p: (doc.line(p.path), len(p.path)))
    return [{"where": doc.where(p.path), "path": p.dotted(), "message": p.message} for p in found]


def cmd_import(args: argparse.Namespace) -> int:
    import yaml

    from shoal.app.appspec import build
    from shoal.app.plush import load_plush

    located = load_plush(args.xml)
    build(located, Path(args.xml).resolve().parent)  # validate before writing
    text = yaml.safe_dump(located.value, sort_keys=False)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from shoal.app import store
    from shoal.state import State

    with State() as st:
        for name in store.list_apps(st):
            rec = store.get_app(st, name)
            assert rec is not None
            count = len(store.members(st, name, active_only=True))
            if args.json:
                print_records(
                    [{"app": name, "status": rec.status, "nodes": count, "file": rec.file}]
                )
                continue
            print(f"{name:<20} {rec.status:<9} {count:>4} node(s)  {rec.file}")
    return OK


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from shoal.app.validate import app_schema

    print(json.dumps(app_schema(), indent=1))  # the schema itself, for editors
    return OK
