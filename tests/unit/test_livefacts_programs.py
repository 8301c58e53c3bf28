"""Programs per state in the metrics come from the agents' beats (LiveFacts), not from events."""

from __future__ import annotations

from pathlib import Path

from shoal.agentlink.agentwatch import Beat
from shoal.control.journal import Journal
from shoal.control.links import Links
from shoal.nodes.model import Node
from shoal.state import State


def beat(programs: dict[str, int], *, fresh: bool = True) -> Beat:
    return Beat(1.0, 0, 0.1, 100.0, 100.0, programs, fresh=fresh)


def test_a_fresh_beat_replaces_the_node_programs_and_a_short_one_keeps_them(
    tmp_path: Path,
) -> None:
    with State(tmp_path / "state.db") as st:
        links = Links([Node("a"), Node("b")], state=st, journal=Journal(st))
        a, b = links.links["a"], links.links["b"]
        links._beat(a, beat({"RUNNING": 2, "FATAL": 1}))
        links._beat(b, beat({"RUNNING": 1}))
        states = links.facts.program_states(["a", "b"])
        assert states["RUNNING"] == 3 and states["FATAL"] == 1 and states["STOPPED"] == 0
        links._beat(a, beat({"RUNNING": 9}, fresh=False))  # repeats what was last received
        assert links.facts.program_states(["a"])["RUNNING"] == 2
        links._beat(a, beat({}))  # its agent holds none now (reaped, removed): none counted
        assert links.facts.program_states(["a", "b"])["RUNNING"] == 1
        assert links.facts.program_states(["b"]) == {
            "BACKOFF": 0, "EXITED": 0, "FATAL": 0, "RUNNING": 1, "STARTING": 0, "STOPPED": 0,
            "STOPPING": 0,
        }  # fmt: skip
        assert links.facts.program_states([])["RUNNING"] == 0
