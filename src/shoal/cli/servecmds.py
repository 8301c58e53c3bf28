"""``shoal serve`` and ``shoal serve status|stop|install|token``: parse, call, render.

``shoal serve`` runs the standing controller in the foreground
(:mod:`shoal.service.servedaemon`); ``status`` asks it over its socket (exit 0
when it answers, 3 when none runs, as systemd's LSB ``status`` does); ``stop``
asks it to stop, waits until its lock is free, and falls back to SIGTERM of the
lock holder's pid; ``install`` writes a systemd unit (:mod:`shoal.service.unit`);
``token`` prints the token TCP clients present (:mod:`shoal.service.access`).
The config file's ``[serve]`` table (``beat``, ``sweep_interval``,
``retention``) gives the defaults of ``--beat-interval``, ``--sweep-interval``
and ``--keep-days``; a flag given wins.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from shoal.numeric import number

#: ``shoal serve status`` when no service runs (LSB: "program is not running").
NOT_RUNNING = 3


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="the standing controller (foreground; status, stop, install)")
    _config_options(p)
    p.set_defaults(handler=cmd_serve)
    actions = p.add_subparsers(dest="serve_command", metavar="ACTION")
    st = actions.add_parser("status", help="is a service running for the state directory")
    st.add_argument("--json", action="store_true", help="the service's status as JSON")
    st.set_defaults(handler=cmd_status)
    sp = actions.add_parser("stop", help="stop the running service and wait until it is gone")
    sp.add_argument(
        "--timeout", type=number, default=30.0, metavar="SECONDS", help="wait this long"
    )
    sp.set_defaults(handler=cmd_stop)
    ins = actions.add_parser("install", help="write a systemd unit that runs shoal serve")
    ins.add_argument("--user", action="store_true", help="a user unit (~/.config/systemd/user)")
    ins.add_argument("--force", action="store_true", help="replace a different existing unit")
    ins.add_argument("--path", type=Path, help=argparse.SUPPRESS)  # tests: write elsewhere
    ins.set_defaults(handler=cmd_install)
    tok = actions.add_parser(
        "token",
        help="print the token that TCP clients (--listen) must present",
        description="Print the service's token for HTTP over TCP (made when missing; kept "
        "0600 in the state directory). A browser logs in by opening "
        "http://HOST:PORT/?token=TOKEN. --rotate makes a new one: the old one is refused "
        "at once, by a running service too.",
    )
    tok.add_argument("--rotate", action="store_true", help="replace it (the old one stops working)")
    tok.add_argument(
        "--read-only",
        action="store_true",
        help="the read-only token (reads: starts and changes nothing)",
    )
    tok.set_defaults(handler=cmd_token)


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--select", metavar="EXPR", help="the managed nodes (default: all)")
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="serve HTTP on TCP too, every request needing a token (shoal serve token); "
        "[ADDR]:PORT for IPv6; repeatable (default: the Unix socket only)",
    )
    p.add_argument(
        "--beat-interval",
        type=number,
        metavar="SECONDS",
        help="heartbeat interval on the held channels (default: the serve.beat setting, 1)",
    )
    p.add_argument(
        "--sweep-interval",
        type=number,
        metavar="SECONDS",
        help="seconds between sweeps, 0 for none (default: serve.sweep_interval, 300)",
    )
    p.add_argument(
        "--attach-rate",
        type=number,
        metavar="PER_SECOND",
        help="new SSH connections per second while attaching (default 50)",
    )
    p.add_argument(
        "--keep-events",
        type=int,
        metavar="N",
        help="events kept at most, 0 for no limit (default 1000000)",
    )
    p.add_argument(
        "--keep-days",
        type=number,
        metavar="DAYS",
        help="events kept this long, 0 for no limit (default: serve.retention, 7 days)",
    )
    p.add_argument(
        "--busy-timeout",
        type=number,
        metavar="SECONDS",
        help="wait this long for another process's lock on the state (default 5)",
    )
    p.add_argument(
        "--heartbeat",
        type=number,
        metavar="SECONDS",
        help="heartbeat line interval on idle event streams (default 15)",
    )


_OPTION_FIELDS = (
    ("select", "--select"),
    ("listen", "--listen"),
    ("beat_interval", "--beat-interval"),
    ("sweep_interval", "--sweep-interval"),
    ("attach_rate", "--attach-rate"),
    ("keep_events", "--keep-events"),
    ("keep_days", "--keep-days"),
    ("busy_timeout", "--busy-timeout"),
    ("heartbeat", "--heartbeat"),
)


def _state_dir() -> Path:
    from shoal.paths import shoal_home

    return shoal_home()


def _config(args: argparse.Namespace) -> Any:
    """The service's config: the flags given, else ``[serve]`` settings, else the defaults."""
    from shoal.control.controller import ServiceConfig

    serve = args.settings.serve
    given = {
        "select": args.select,
        "attach_rate": args.attach_rate,
        "keep_events": args.keep_events,
        "busy_timeout": args.busy_timeout,
        "stream_heartbeat": args.heartbeat,
    }
    return ServiceConfig(
        state_dir=_state_dir(),
        beat_interval=serve.beat if args.beat_interval is None else args.beat_interval,
        sweep_interval=serve.sweep_interval if args.sweep_interval is None else args.sweep_interval,
        keep_seconds=serve.retention if args.keep_days is None else args.keep_days * 86400.0,
        audit_interval=serve.audit_interval,
        logs_max_bytes=serve.logs_max_bytes or 0,
        **{k: v for k, v in given.items() if v is not None},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from shoal.service.servedaemon import serve

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="shoal serve: %(message)s")
    from shoal.service.access import parse_listen

    config = _config(args)
    listen = [parse_listen(a) for a in args.listen or ()]

    def ready(path: Path, urls: list[str]) -> None:
        tcp = "".join(f" and {u}/" for u in urls)
        print(
            f"shoal serve: pid {os.getpid()} serving {config.state_dir} on {path}{tcp}",
            file=sys.stderr,
            flush=True,
        )
        if urls:
            print(
                "shoal serve: TCP needs a token: 'shoal serve token' prints it",
                file=sys.stderr,
                flush=True,
            )

    serve(config, on_ready=ready, listen=listen)
    print("shoal serve: stopped", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shoal.client import ServiceClient
    from shoal.errors import ServiceError
    from shoal.service.servelock import lock_holder

    from .render import print_object, uptime

    home = _state_dir()
    client = ServiceClient.locate(home, timeout=10)
    if client is None:
        pid = lock_holder(home)
        if pid is None:
            print(f"no shoal serve runs for {home}")
            return NOT_RUNNING
        raise ServiceError(f"shoal serve (pid {pid}) holds {home} but does not answer")
    st = client.status()
    if args.json:
        print_object(st)
        return 0
    print(
        f"shoal serve pid {st['pid']} version {st['version']} protocol {st['protocol']}, "
        f"up {uptime(st.get('uptime'))}, state {st.get('state_dir')}"
    )
    ev = st.get("events") or {}
    print(f"events: last seq {ev.get('last', 0)}, pruned through {ev.get('pruned_through', 0)}")
    for job in st.get("schedules") or []:
        due = max(0.0, float(job["next_run"]) - time.time())
        last = job.get("last_status") or "never run"
        print(f"job {job['name']}: every {job['interval']:g}s, next in {due:.0f}s, last: {last}")
    if st.get("problem"):
        print(f"problem: {st['problem']}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from shoal.client import ServiceClient
    from shoal.errors import ServiceError
    from shoal.service.servelock import lock_holder

    home = _state_dir()
    pid = lock_holder(home)
    client = ServiceClient.locate(home, timeout=10)
    if client is None and pid is None:
        print(f"no shoal serve runs for {home}")
        return 0
    asked = False
    if client is not None:
        try:
            pid = int(client.stop()["pid"])
            asked = True
        except ServiceError:
            pass  # not answering: the signal below
    if not asked and pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + args.timeout
    while lock_holder(home) is not None or (pid and _alive(pid)):
        if time.monotonic() > deadline:
            raise ServiceError(f"shoal serve (pid {pid}) still runs after {args.timeout:g}s")
        time.sleep(0.05)
    print(f"shoal serve (pid {pid}) stopped")
    return 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def cmd_token(args: argparse.Namespace) -> int:
    from shoal.service.access import TokenStore

    store = TokenStore(_state_dir())
    print(store.token("read" if args.read_only else "admin", rotate=args.rotate))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from shoal.service import unit

    exe = Path(sys.executable).with_name("shoal")
    command = [str(exe if exe.exists() else Path(sys.argv[0]).resolve()), "serve"]
    for field, flag in _OPTION_FIELDS:
        value = getattr(args, field)
        for one in value if isinstance(value, list) else [] if value is None else [value]:
            command += [flag, f"{one:g}" if isinstance(one, float) else str(one)]
    spec = unit.UnitSpec(
        exec_start=command,
        state_dir=_state_dir(),
        user_unit=args.user,
        run_as=None if args.user else unit.current_user(),
    )
    path = args.path or unit.unit_path(args.user)
    wrote = unit.install(path, unit.render(spec), force=args.force)
    print(f"{'wrote' if wrote else 'unchanged:'} {path}")
    for line in unit.systemctl_hint(args.user):
        print(f"  {line}")
    return 0
