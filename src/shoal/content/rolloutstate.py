"""A rollout's state machine in SQLite: the rollout, its stages, each node's step.

Every transition is written before the action it names (``stopping`` before
the node's programs are stopped, ``rolling_back`` before the switch back), in
one transaction each, so a controller killed at any point leaves a record that
says what may be half done; :mod:`.rollout` redoes that step (every step is
idempotent: stop, activate, restart) and carries on.

Rollout states: ``staging`` (content going to every target, nothing switched)
→ ``running`` ⇄ ``paused`` (a human gate between stages) → ``done``; or
``rolling_back`` → ``rolled_back`` (a failed gate, an exhausted budget,
``abort``); an unfinished one whose nodes and directories a newer rollout
takes over (``app up`` redoing the rollout of a killed controller) ends
``superseded``: nothing resumes or aborts it later. Node steps: ``pending``
→ ``stopping`` → ``switching`` → ``starting`` → ``gating`` → ``healthy``;
``failed`` (its gate failed or it died: counted against the budget);
``rolling_back`` → ``rolled_back``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import LocalError
from shoal.state import State

DDL = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    version TEXT NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    stage INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_stages (
    rollout TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL,
    finished REAL,
    PRIMARY KEY (rollout, idx)
);
CREATE TABLE IF NOT EXISTS rollout_nodes (
    rollout TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    stage INTEGER NOT NULL,
    previous TEXT,
    step TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    stopped_at REAL,
    healthy_at REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (rollout, node)
);
"""

#: Node steps after which the node runs something the rollout put there (or may).
TOUCHED = ("stopping", "switching", "starting", "gating", "healthy", "failed", "rolling_back")
#: Rollout states in which ``resume`` has work to do.
UNFINISHED = ("staging", "running", "paused", "rolling_back")


@dataclass
class NodeStep:
    node: str
    stage: int
    previous: str | None
    step: str
    detail: str = ""
    stopped_at: float | None = None
    healthy_at: float | None = None


@dataclass
class Record:
    """One rollout as stored."""

    id: str
    target: str
    version: str
    plan: dict[str, Any]
    state: str
    stage: int
    reason: str
    created: float
    stages: list[tuple[str, str]] = field(default_factory=list)  # (label, state)
    nodes: dict[str, NodeStep] = field(default_factory=dict)

    def in_stage(self, idx: int) -> list[NodeStep]:
        return [n for n in self.nodes.values() if n.stage == idx]


class RolloutStore:
    """Reads and writes rollouts in the controller's state database."""

    def __init__(self, state: State) -> None:
        self.st = state
        state.ensure("rollouts", DDL)

    def create(
        self,
        target: str,
        version: str,
        plan: dict[str, Any],
        stages: list[tuple[str, list[str]]],
    ) -> str:
        """A new rollout in state ``staging`` with its stages and nodes (all ``pending``)."""
        rid = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        now = time.time()
        with self.st.transaction() as db:
            db.execute(
                "INSERT INTO rollouts (id, target, version, plan, state, created, updated)"
                " VALUES (?, ?, ?, ?, 'staging', ?, ?)",
                (rid, target, version, json.dumps(plan), now, now),
            )
            for idx, (label, names) in enumerate(stages):
                db.execute(
                    "INSERT INTO rollout_stages (rollout, idx, label, state)"
                    " VALUES (?, ?, ?, 'pending')",
                    (rid, idx, label),
                )
                db.executemany(
                    "INSERT INTO rollout_nodes (rollout, node, stage, step, updated)"
                    " VALUES (?, ?, ?, 'pending', ?)",
                    [(rid, name, idx, now) for name in names],
                )
        return rid

    def get(self, rid: str) -> Record:
        row = self.st.db.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise LocalError(f"no rollout {rid!r} (see: shoal rollout status)")
        rec = Record(
            row["id"],
            row["target"],
            row["version"],
            json.loads(row["plan"]),
            row["state"],
            row["stage"],
            row["reason"],
            row["created"],
        )
        rec.stages = [
            (r["label"], r["state"])
            for r in self.st.db.execute(
                "SELECT label, state FROM rollout_stages WHERE rollout = ? ORDER BY idx", (rid,)
            )
        ]
        for r in self.st.db.execute(
            "SELECT * FROM rollout_nodes WHERE rollout = ? ORDER BY stage, node", (rid,)
        ):
            rec.nodes[r["node"]] = NodeStep(
                r["node"],
                r["stage"],
                r["previous"],
                r["step"],
                r["detail"],
                r["stopped_at"],
                r["healthy_at"],
            )
        return rec

    def latest(self, target: str | None = None, unfinished: bool = False) -> str | None:
        """The newest rollout (of ``target``; only one that has work left)."""
        sql, args = "SELECT id, state, target FROM rollouts ORDER BY created DESC", ()
        for row in self.st.db.execute(sql, args):
            if target is not None and row["target"] != target:
                continue
            if unfinished and row["state"] not in UNFINISHED:
                continue
            return str(row["id"])
        return None

    def supersede(self, dirs: dict[str, str], reason: str, keep: str = "") -> list[str]:
        """End ``superseded`` (for ``reason``) every unfinished rollout but ``keep`` that
        shares a (node, directory) with ``dirs``; their ids."""
        ended: list[str] = []
        with self.st.transaction() as db:
            placeholders = ",".join("?" * len(UNFINISHED))
            rows = db.execute(
                f"SELECT id, plan FROM rollouts WHERE id != ? AND state IN ({placeholders})",
                (keep, *UNFINISHED),
            ).fetchall()
            for row in rows:
                theirs = json.loads(row["plan"]).get("dirs", {})
                if any(dirs.get(node) == d for node, d in theirs.items()):
                    db.execute(
                        "UPDATE rollouts SET state = 'superseded', reason = ?, updated = ?"
                        " WHERE id = ?",
                        (reason, time.time(), row["id"]),
                    )
                    ended.append(str(row["id"]))
        return ended

    def list(self, limit: int = 20) -> list[Record]:
        rows = self.st.db.execute(
            "SELECT id FROM rollouts ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self.get(r["id"]) for r in rows]

    def set_state(
        self, rid: str, state: str, *, stage: int | None = None, reason: str = ""
    ) -> None:
        with self.st.transaction() as db:
            db.execute(
                "UPDATE rollouts SET state = ?, reason = CASE WHEN ? = '' THEN reason ELSE ? END,"
                " stage = COALESCE(?, stage), updated = ? WHERE id = ?",
                (state, reason, reason, stage, time.time(), rid),
            )

    def set_stage(self, rid: str, idx: int, state: str) -> None:
        now = time.time()
        with self.st.transaction() as db:
            db.execute(
                "UPDATE rollout_stages SET state = ?,"
                " started = CASE WHEN ? = 'running' THEN COALESCE(started, ?) ELSE started END,"
                " finished = CASE WHEN ? IN ('passed', 'failed') THEN ? ELSE finished END"
                " WHERE rollout = ? AND idx = ?",
                (state, state, now, state, now, rid, idx),
            )

    def set_previous(self, rid: str, previous: dict[str, str | None]) -> None:
        with self.st.transaction() as db:
            db.executemany(
                "UPDATE rollout_nodes SET previous = COALESCE(previous, ?)"
                " WHERE rollout = ? AND node = ?",
                [(v, rid, node) for node, v in previous.items()],
            )

    def step(self, rid: str, node: str, step: str, detail: str = "") -> None:
        """Node ``node`` enters ``step`` (written before the step is carried out)."""
        now = time.time()
        with self.st.transaction() as db:
            db.execute(
                "UPDATE rollout_nodes SET step = ?, detail = ?, updated = ?,"
                " stopped_at = CASE WHEN ? = 'stopping' THEN ? ELSE stopped_at END,"
                " healthy_at = CASE WHEN ? = 'healthy' THEN ? ELSE healthy_at END"
                " WHERE rollout = ? AND node = ?",
                (step, detail, now, step, now, step, now, rid, node),
            )
