"""A rollout left unfinished (a killed controller) ends ``superseded`` when a newer
rollout or a converged ``app up`` takes over its nodes' directories, so that a later
``shoal rollout resume|abort`` (the latest unfinished by default) cannot switch the
converged nodes back (issue 15 item 1). Real SQLite state, no nodes."""

from __future__ import annotations

from pathlib import Path

from shoal.content.rolloutstate import RolloutStore
from shoal.state import State


def _make(store: RolloutStore, dirs: dict[str, str], state: str) -> str:
    rid = store.create("t", "v1", {"dirs": dirs}, [("100%", sorted(dirs))])
    store.set_state(rid, state)
    return rid


def test_only_unfinished_rollouts_sharing_a_node_directory_are_superseded(
    tmp_path: Path,
) -> None:
    with State(tmp_path / "state.db") as st:
        store = RolloutStore(st)
        killed = _make(store, {"n1": "/a/sw/x", "n2": "/a/sw/x"}, "running")
        paused = _make(store, {"n2": "/a/sw/x"}, "paused")
        other_dir = _make(store, {"n1": "/a/sw/y"}, "running")
        other_node = _make(store, {"n3": "/a/sw/x"}, "running")
        finished = _make(store, {"n1": "/a/sw/x"}, "rolled_back")
        new = _make(store, {"n1": "/a/sw/x", "n2": "/a/sw/x"}, "staging")

        ended = store.supersede({"n1": "/a/sw/x", "n2": "/a/sw/x"}, "by new", keep=new)

        assert sorted(ended) == sorted([killed, paused])
        states = {rid: store.get(rid).state for rid in (killed, paused, other_dir)}
        states |= {rid: store.get(rid).state for rid in (other_node, finished, new)}
        assert states == {
            killed: "superseded",
            paused: "superseded",
            other_dir: "running",
            other_node: "running",
            finished: "rolled_back",
            new: "staging",
        }
        assert store.get(killed).reason == "by new"
        assert store.latest(unfinished=True) in (new, other_dir, other_node)
        assert store.supersede({"n1": "/a/sw/x"}, "again", keep=new) == []
