"""The audit's pure decision (shoal.ops.audit.decide / plan_repairs) and the agent's scan."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from shoal.agent.filehash import FileAudit
from shoal.errors import UsageError
from shoal.ops.audit import AuditReport, Entry, NodeScan, Quorum, decide, plan_repairs

GOOD = Entry("f", "a" * 64, 0o644, 3)
BAD = Entry("f", "b" * 64, 0o644, 3)


def fleet(n: int, **overrides: Entry | None) -> dict[str, dict[str, Entry]]:
    """``n`` nodes holding GOOD at /x, some overridden (None: the file is absent)."""
    out: dict[str, dict[str, Entry]] = {}
    for i in range(1, n + 1):
        name = f"n{i}"
        entry = overrides.get(name, GOOD)
        out[name] = {} if entry is None else {"/x": entry}
    return out


def test_all_agree_gives_no_verdict() -> None:
    assert decide(fleet(8)) == []


def test_three_of_eight_differ_are_the_minority_with_what_differs() -> None:
    listings = fleet(8, n2=BAD, n5=None, n7=Entry("f", "a" * 64, 0o600, 3))
    (verdict,) = decide(listings)
    assert verdict.quorum and verdict.majority == GOOD and verdict.votes == 5
    assert verdict.minority == {"n2": ["digest"], "n5": ["missing"], "n7": ["mode"]}
    assert verdict.agreeing == ("n1", "n3", "n4", "n6", "n8")


def test_four_of_eight_is_a_tie_without_quorum() -> None:
    listings = fleet(8, n1=BAD, n2=BAD, n3=BAD, n4=BAD)
    (verdict,) = decide(listings)
    assert verdict.tied and not verdict.quorum
    report = AuditReport({"/x": [verdict]}, {}, {})
    fixes, left = plan_repairs(report)
    assert fixes == [] and left == [verdict]


def test_extra_file_against_an_absent_majority() -> None:
    listings = fleet(5, n1=None, n2=None, n3=None)
    (verdict,) = decide(listings)
    assert verdict.majority is None and verdict.quorum
    assert verdict.minority == {"n4": ["extra"], "n5": ["extra"]}


def test_quorum_needs_more_than_half_and_a_minimum() -> None:
    assert Quorum().needed(8) == 5 and Quorum().needed(7) == 4
    assert Quorum().needed(2) == 2 and Quorum().needed(1) == 2  # one node never decides
    assert Quorum(count=3).needed(8) == 3
    assert Quorum(share=0.75).needed(8) == 7
    (verdict,) = decide(fleet(3, n3=BAD), Quorum(share=0.7))
    assert verdict.needed == 3 and not verdict.quorum  # 2 of 3 is not more than 70 %
    with pytest.raises(UsageError):
        Quorum(share=1.0)


def test_plan_repairs_writes_from_a_majority_node() -> None:
    listings = fleet(5, n2=BAD, n3=Entry("f", "a" * 64, 0o600, 3))
    verdicts = decide(listings)
    scan = NodeScan({}, 0, 0, 0, 0, [], [])
    report = AuditReport({"/x": verdicts}, {n: scan for n in listings}, {})
    fixes, left = plan_repairs(report)
    assert left == []
    actions = {(f.node, f.action, f.source) for f in fixes}
    assert actions == {("n2", "write", "n1"), ("n3", "chmod", None)}


def test_agent_scan_rehashes_only_what_changed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / "sub" / f"f{i}").write_text(f"file {i}\n")
    os.symlink("/etc/passwd", tree / "link")
    os.mkfifo(tree / "fifo")
    time.sleep(0.2)  # past the racy window
    audit = FileAudit(tmp_path / "home", lambda *a: None)
    (tmp_path / "home").mkdir()

    async def scan() -> dict:
        first = await audit.dispatch("audit.scan", {"paths": [str(tree)], "page": 7})
        entries = list(first["entries"])
        page = first
        while page["next"] is not None:
            page = await audit.dispatch(
                "audit.page", {"scan": first["scan"], "offset": page["next"], "page": 7}
            )
            entries += page["entries"]
        first["entries"] = entries
        return first

    one = asyncio.run(scan())
    kinds = {Path(e["p"]).name: e["t"] for e in one["entries"]}
    assert one["hashed"] == 20 and one["cached"] == 0 and one["total"] == 24
    assert kinds["link"] == "l" and kinds["fifo"] == "s" and kinds["sub"] == "d"
    (tree / "sub" / "f3").write_text("changed\n")
    time.sleep(0.2)
    two = asyncio.run(scan())
    assert (two["hashed"], two["cached"]) == (1, 19)
    for _ in range(2):  # nothing changed: the cache is kept as it is
        again = asyncio.run(scan())
        assert (again["hashed"], again["cached"]) == (0, 20)


def test_bucket_digests_point_at_the_one_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = [tmp_path / "one" / "t", tmp_path / "two" / "t"]
    for tree in trees:
        tree.mkdir(parents=True)
        for i in range(50):
            (tree / f"f{i}").write_text(f"file {i}\n")
    (trees[1] / "f7").write_text("other\n")
    time.sleep(0.2)

    async def buckets(tree: Path) -> tuple[FileAudit, dict]:
        (tree.parent / "home").mkdir()
        audit = FileAudit(tree.parent / "home", lambda *a: None)
        monkeypatch.setenv("HOME", str(tree.parent))  # the same relative path on both "nodes"
        return audit, await audit.dispatch("audit.scan", {"paths": ["t"], "buckets": 64})

    async def both() -> list[list[dict]]:
        one, two = [await buckets(t) for t in trees]
        assert one[1]["entries"] == [] and len(one[1]["buckets"]) == 64
        differ = [i for i in range(64) if one[1]["buckets"][i] != two[1]["buckets"][i]]
        assert len(differ) == 1
        pages = []
        for audit, reply in (one, two):
            args = {"scan": reply["scan"], "buckets": differ, "offset": 0}
            pages.append((await audit.dispatch("audit.page", args))["entries"])
        return pages

    pages = asyncio.run(both())
    for entries in pages:
        assert str(trees[0] / "f7").endswith(
            next(e["p"] for e in entries if e["p"].endswith("/f7"))
        )
        assert len(entries) < 10  # the bucket's few entries, not the 51 of the tree
