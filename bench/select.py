"""Benchmark: evaluate ``(@a | @b) - failed & [attr>=x]`` over a 100,000-node inventory.

Usage: ``.venv/bin/python bench/select.py [--nodes 100000] [--repeat 5] [--no-clustershell]``

What is measured (wall time, best of ``--repeat``, each run on a freshly opened
state database so nothing is cached in Python):

* ``select``  open the SQLite state, parse the expression, load the two groups,
  the failed set and attribute ``attr`` from SQLite, evaluate, and fold the
  result into its compact string. This is the figure the goal (< 1 s) is about.
* ``resolve`` the same plus materialising the selected :class:`Node` records
  (what ``shoal run -s EXPR`` does before connecting).
* ``algebra`` the set algebra alone on in-memory name lists: build node sets
  from lists, ``(a | b) - failed & filtered``, fold to a string. The same
  steps are timed with ClusterShell's NodeSet, installed by this script into
  a temporary virtualenv (``pip install ClusterShell``); the ratio is printed.

The inventory is built in a temporary SHOAL_HOME (not timed): names
``n1..nN``; group ``a`` the first 40 %, group ``b`` every third node; 5 % of
nodes failed; ``attr`` an integer 0..99 on every node.
"""

from __future__ import annotations

import os
import sys

# This file is named select.py: drop its folder from the path so that the
# standard library's ``select`` (imported by subprocess) is not shadowed.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import venv  # noqa: E402
from pathlib import Path  # noqa: E402

EXPR = "(@a | @b) - failed & [attr>=50]"

CLUSTERSHELL_SCRIPT = r"""
import json, sys, time
from ClusterShell.NodeSet import NodeSet
data = json.load(open(sys.argv[1]))
best = None
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    a = NodeSet.fromlist(data["a"]); b = NodeSet.fromlist(data["b"])
    failed = NodeSet.fromlist(data["failed"]); keep = NodeSet.fromlist(data["keep"])
    result = ((a | b) - failed) & keep
    text = str(result)
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "count": len(result), "text": text}))
"""


def build(home: Path, n: int) -> dict[str, list[str]]:
    os.environ["SHOAL_HOME"] = str(home)
    from shoal.nodes.health import mark_failed
    from shoal.nodes.inventory import import_nodes
    from shoal.nodes.model import Node

    rng = random.Random(42)
    nodes = []
    sets: dict[str, list[str]] = {"a": [], "b": [], "failed": [], "keep": []}
    for i in range(1, n + 1):
        name = f"n{i}"
        groups = []
        if i <= n * 0.4:
            groups.append("a")
            sets["a"].append(name)
        if i % 3 == 0:
            groups.append("b")
            sets["b"].append(name)
        attr = rng.randrange(100)
        if attr >= 50:
            sets["keep"].append(name)
        nodes.append(Node(name=name, groups=tuple(groups), attrs={"attr": attr, "site": "eu"}))
    import_nodes(nodes)
    failed = rng.sample(range(1, n + 1), n // 20)
    sets["failed"] = [f"n{i}" for i in failed]
    mark_failed({name: "unreachable" for name in sets["failed"]})
    return sets


def best_of(repeat: int, fn: object) -> tuple[float, object]:
    best = float("inf")
    value: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, value


def clustershell(sets: dict[str, list[str]], repeat: int, work: Path) -> dict[str, object] | None:
    env_dir = work / "venv"
    try:
        venv.create(env_dir, with_pip=True)
        py = env_dir / "bin" / "python"
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "ClusterShell"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"ClusterShell: not installed ({exc}); comparison skipped")
        return None
    data = work / "sets.json"
    data.write_text(json.dumps(sets))
    script = work / "cs.py"
    script.write_text(CLUSTERSHELL_SCRIPT)
    out = subprocess.run(
        [str(py), str(script), str(data), str(repeat)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-clustershell", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        sets = build(work / "home", args.nodes)
        print(f"inventory: {args.nodes} nodes built in {time.perf_counter() - t0:.1f}s (not timed)")

        from shoal.nodes.nodeset import NodeSet, fold
        from shoal.nodes.select import resolve, select
        from shoal.state import State

        def run_select() -> str:
            with State() as st:
                return fold(select(EXPR, state=st))

        def run_resolve() -> int:
            with State() as st:
                return len(resolve(EXPR, state=st))

        def run_algebra() -> str:
            a, b = NodeSet(sets["a"]), NodeSet(sets["b"])
            failed, keep = NodeSet(sets["failed"]), NodeSet(sets["keep"])
            return str(((a | b) - failed) & keep)

        t_sel, text = best_of(args.repeat, run_select)
        t_res, count = best_of(args.repeat, run_resolve)
        t_alg, alg_text = best_of(args.repeat, run_algebra)
        assert alg_text == text, "algebra and selection disagree"
        print(f"expression: {EXPR}")
        print(f"result: {count} nodes, compact form {len(str(text))} chars")
        print(f"select  (SQLite load + evaluate + fold): {t_sel * 1000:8.1f} ms  (goal < 1000 ms)")
        print(f"resolve (select + Node records):        {t_res * 1000:8.1f} ms")
        print(f"algebra (in-memory sets + fold):        {t_alg * 1000:8.1f} ms")
        if not args.no_clustershell:
            cs = clustershell(sets, args.repeat, work)
            if cs is not None:
                cs_seconds = float(str(cs["seconds"]))
                same = NodeSet(str(cs["text"])) == NodeSet(str(text))
                print(
                    f"ClusterShell NodeSet, same algebra:      {cs_seconds * 1000:8.1f} ms"
                    f"  (same result: {same})"
                )
                print(f"ratio ClusterShell / Shoal (algebra):   {cs_seconds / t_alg:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
