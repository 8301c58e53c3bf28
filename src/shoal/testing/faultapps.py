"""Fault scenarios around applications (issue 17 part 2): the rows of the fault
suite that need ``shoal app up`` (see :mod:`.faultsuite` for the row type).

- a controller SIGKILLed mid-``app up`` and mid-rollout (``app up`` after a
  software change), then ``app up`` again: every member on a whole version,
  its software link good, its service running the code on disk;
- ``shoal run`` and ``shoal app up`` at once on one state directory: the state
  intact, no failed-set entry lost.

Each scenario brings its application down at the end (``finally``)::

    row = controller_killed_mid_app_up(lab, fleet, work, reps=2, env=env)
    assert row.ok, row
"""

from __future__ import annotations

import asyncio
import random
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from shoal.app import lifecycle, store
from shoal.lab.labctl import Lab
from shoal.nodes.model import Node
from shoal.state import State

from .faultsuite import FaultRow, _shoal_argv, sh

SPEC = """\
app: {name}
software:
  tool:
    source: tool
rollout:
  min_healthy_time: 0.5
  stage_deadline: 30
components:
  svc:
    select: "{nodes}"
    count: {count}
    software: [tool]
    processes:
      - {{name: server, service: "exec ${{sw.tool}}/run.sh ${{dir}}"}}
"""

# the service notes which version it started from and its pid, then stays up
RUN = """#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd -P)"
cat "$here/VERSION" > "$1/running"
echo $$ > "$1/pid"
exec sleep 600
"""


def write_app(work: Path, name: str, nodes: Sequence[Node], version: str) -> Path:
    """The spec file of app ``name`` on ``nodes``, its software at ``version`` (a 1 MB blob)."""
    tool = work / "tool"
    tool.mkdir(parents=True, exist_ok=True)
    (tool / "run.sh").write_text(RUN)
    (tool / "run.sh").chmod(0o755)
    (tool / "VERSION").write_text(f"{version}\n")
    (tool / "blob.bin").write_bytes(random.Random(version).randbytes(1_000_000))
    spec = work / "app.yaml"
    names = ",".join(n.name for n in nodes)
    spec.write_text(SPEC.format(name=name, nodes=names, count=len(nodes)))
    return spec


def member_state(nodes: Sequence[Node], name: str) -> dict[str, str]:
    """Per node: ``VERSION`` behind the software link, the version the service started
    from and whether it runs, as ``"v2 v2 up"``; ``broken`` where the link does not resolve
    (or holds no VERSION), ``absent`` where there is none yet."""
    adir = f".shoal/apps/{name}"
    out = sh(
        nodes,
        f"cd; if [ -e {adir}/sw/tool/VERSION ]; then cat {adir}/sw/tool/VERSION; "
        f"elif [ -e {adir}/sw/tool ] || [ -L {adir}/sw/tool ]; then echo broken; "
        f"else echo absent; fi; cat {adir}/running 2>/dev/null || echo none; "
        f'if kill -0 "$(cat {adir}/pid 2>/dev/null)" 2>/dev/null; then echo up; '
        "else echo down; fi",
    )
    return {n: " ".join((t or "unreachable").split()) for n, t in out.items()}


def _up(spec: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_shoal_argv(), "app", "up", "--detach", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _killed_up(spec: Path, env: dict[str, str], after: float) -> float | None:
    """``shoal app up`` SIGKILLed ``after`` seconds in (or let finish if it was faster:
    then the seconds it took)."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [*_shoal_argv(), "app", "up", "--detach", str(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return None
    return time.monotonic() - began


def _down(name: str) -> None:
    with State() as st:
        known = store.get_app(st, name) is not None
    if known:
        asyncio.run(lifecycle.down_async(name))


def controller_killed_mid_app_up(
    lab: Lab, fleet: Sequence[Node], work: Path, reps: int, env: dict[str, str]
) -> FaultRow:
    """``shoal app up`` SIGKILLed at a random moment of a first start (odd reps: of a
    rollout after a software change), then run again, ``reps`` times."""
    row = FaultRow(
        "controller SIGKILLed mid-`app up` / mid-rollout",
        f"SIGKILL of `shoal app up` at a random moment, {reps} times (first start, then "
        "the rollout of changed software, alternately), then `shoal app up` again",
        "re-run completes; every member on the new version, link good, service running it",
    )
    began = time.monotonic()
    name = f"fk{random.randrange(1 << 24):06x}"
    nodes = list(fleet[:4])
    rng = random.Random(31)
    bad_after_kill, reruns_failed, not_converged = 0, 0, 0
    interrupted = {False: 0, True: 0}  # kills that left work for the re-run, by kind
    span = {False: 6.0, True: 4.0}  # kill within this many seconds, by kind
    try:
        for rep in range(reps):
            rollout = rep % 2 == 1
            version = f"v{rep + 1}"
            spec = write_app(work, name, nodes, version)
            if not rollout:
                _down(name)
            took = _killed_up(spec, env, rng.uniform(min(0.5, span[rollout] / 2), span[rollout]))
            if took is not None:  # it finished first: the next kill of its kind comes sooner
                span[rollout] = min(span[rollout], took)
            # right after the kill: a link is whole or absent, never broken or half
            want = f"{version} {version} up"
            after = member_state(nodes, name)
            interrupted[rollout] += any(got != want for got in after.values())
            for node, got in after.items():
                if got.startswith("broken"):
                    bad_after_kill += 1
                    row.details.append(f"rep {rep} after kill {node}: {got}")
            again = _up(spec, env)
            if again.returncode != 0:
                reruns_failed += 1
                row.details.append(f"rep {rep} re-run: {(again.stdout + again.stderr)[-300:]}")
            for node, got in member_state(nodes, name).items():
                if got != want:
                    not_converged += 1
                    row.details.append(f"rep {rep} {node}: {got!r}, want {want!r}")
    finally:
        _down(name)
    row.seconds = time.monotonic() - began
    row.observed = (
        f"{reps} kills ({(reps + 1) // 2} first start, {reps // 2} rollout; work left "
        f"undone by {interrupted[False]} and {interrupted[True]}): broken links after "
        f"a kill {bad_after_kill}, re-runs failed {reruns_failed}, members not on the new "
        f"version and running {not_converged}"
    )
    row.ok = not row.details
    row.lost = "nothing" if row.ok else f"{not_converged + bad_after_kill} members"
    return row


def run_beside_app_up(
    lab: Lab, fleet: Sequence[Node], work: Path, reps: int, env: dict[str, str]
) -> FaultRow:
    """A failing ``shoal run`` on half the nodes and ``shoal app up`` on the other half,
    at once on one state directory, ``reps`` times."""
    from shoal.nodes.health import clear_failed, failed_names

    row = FaultRow(
        "`run` and `app up` on one state dir",
        f"`shoal run` (failing on 1 node) and `shoal app up` at once, {reps} times",
        "no corrupted state; the failing node in the failed set; the app up completes",
    )
    began = time.monotonic()
    name = f"fr{random.randrange(1 << 24):06x}"
    half = len(fleet) // 2
    app_nodes, run_nodes = list(fleet[:half]), [n.name for n in fleet[half:]]
    lost = 0
    try:
        for rep in range(reps):
            clear_failed()
            spec = write_app(work, name, app_nodes, f"r{rep}")
            failing = run_nodes[rep % len(run_nodes)]
            cmd = f'sleep 0.$((RANDOM % 5)); [ "$SHOAL_NODE" != {shlex.quote(failing)} ]'
            runner = subprocess.Popen(
                [*_shoal_argv(), "run", "-w", ",".join(run_nodes), cmd],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            up = _up(spec, env)
            run_err = runner.communicate(timeout=120)[1]
            with State() as st:
                check = st.db.execute("PRAGMA integrity_check").fetchone()[0]
                failed = failed_names(st)
                record = store.get_app(st, name)
            states = member_state(app_nodes, name)
            want = f"r{rep} r{rep} up"
            problems = [f"{n}: {s}" for n, s in states.items() if s != want]
            if failing not in failed:
                lost += 1
                problems.append(f"{failing} not in the failed set {sorted(failed)}")
            if check != "ok" or record is None or up.returncode != 0:
                problems.append(f"integrity {check}, app {record is not None}, up {up.returncode}")
                problems.append((up.stdout + up.stderr)[-300:])
            if "Traceback" in run_err:
                problems.append(run_err[-300:])
            row.details += [f"rep {rep}: {p}" for p in problems]
    finally:
        clear_failed()
        _down(name)
    row.seconds = time.monotonic() - began
    row.ok = not row.details
    row.observed = (
        f"{reps} pairs: integrity {'ok' if row.ok else 'see details'}, "
        f"failed-set entries lost {lost}, app up complete in {reps - len(row.details)}"
    )
    row.lost = "nothing" if row.ok else "; ".join(row.details)[:120]
    return row
