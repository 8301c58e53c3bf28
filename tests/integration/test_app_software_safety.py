"""An application's software copy replaces only what Shoal put there (issue 11 item 14).

``method: copy`` used to ``rm -rf`` whatever sat at ``sw/NAME`` (and at
``sw/NAME.new``) before renaming its copy in. It must replace only an earlier
copy (it holds the digest file) or a push's symlink, refuse anything else with
one line naming the path, and leave it as it was, as a push refuses a
directory that is not its deployment (item 10).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from shoal.app.software import DIGEST_FILE, Tree, copy_software, tree_digest
from shoal.fanout import RunOptions, run
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def _sh(nodes: list[Node], command: str) -> dict[str, str]:
    r = run(nodes, command, RunOptions())
    assert r.ok, [x.reason for x in r.failed]
    return {n.name: r[n.name].stdout for n in nodes}


def _tree(tmp_path: Path, text: str) -> Tree:
    src = tmp_path / f"tool-{secrets.token_hex(2)}"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "run").write_text(text + "\n")
    return Tree("tool", src, tree_digest(src))


def _copy(nodes: list[Node], tree: Tree, target: str) -> Any:
    return asyncio.run(copy_software(nodes, tree, {n.name: target for n in nodes}))


@pytest.fixture
def base(lab: Any) -> Any:
    nodes = lab.nodes()[:2]
    where = f"swsafety-{secrets.token_hex(3)}"
    _sh(nodes, f"mkdir -p {where}/sw")
    try:
        yield nodes, where
    finally:
        _sh(nodes, f"rm -rf {where}")


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        ("mkdir {t} && echo precious > {t}/notes", "a directory of the user's"),
        ("echo precious > {t}", "a file"),
        (
            "mkdir {t}.x && echo precious > {t}.x/notes && ln -s tool.x {t}",
            "a symlink Shoal did not make",
        ),
        ("mkdir {t}", "an empty directory"),
    ],
)
def test_what_shoal_did_not_put_there_is_refused_and_kept(
    base: Any, tmp_path: Path, setup: str, kind: str
) -> None:
    nodes, where = base
    target = f"{where}/sw/tool"
    _sh(nodes, setup.format(t=target))
    look = f"cd {where}/sw && ls -lAR --time-style=+ .; cat tool/notes tool 2>&1 || true"
    before = _sh(nodes, look)
    result = _copy(nodes, _tree(tmp_path, "v1"), target)
    after = _sh(nodes, look)
    for node in nodes:
        outcome = result[node.name]
        assert not outcome.ok, kind
        reason = outcome.reason
        assert f"refusing to replace {target}" in reason and "\n" not in reason, reason
    assert after == before, kind  # nothing replaced, no staging left behind


def test_an_earlier_copy_is_replaced_and_a_neighbour_named_like_staging_is_kept(
    base: Any, tmp_path: Path
) -> None:
    nodes, where = base
    target = f"{where}/sw/tool"
    _sh(nodes, f"mkdir {target}.new && echo precious > {target}.new/notes")
    first = _copy(nodes, _tree(tmp_path, "v1"), target)
    assert first.ok and {r.stdout for r in first} == {"copied"}, [r.reason for r in first]
    again = _copy(nodes, _tree(tmp_path, "v1"), target)
    assert again.ok and {r.stdout for r in again} == {"same"}
    v2 = _tree(tmp_path, "v2")
    second = _copy(nodes, v2, target)
    assert second.ok and {r.stdout for r in second} == {"copied"}, [r.reason for r in second]
    got = _sh(
        nodes, f"cat {target}/bin/run {target}/{DIGEST_FILE} {target}.new/notes; ls -A {where}/sw"
    )
    for text in got.values():
        assert text.split() == ["v2", v2.digest, "precious", "tool", "tool.new"], text
