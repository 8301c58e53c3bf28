"""``State.ensure`` inside a caller's transaction commits nothing behind its back.

It ran ``executescript``, which COMMITs an open transaction first: a write made
before the first use of a subsystem became visible (and durable) half-way
through the caller's transaction, and the caller's COMMIT then failed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.state import State

DDL = """
CREATE TABLE IF NOT EXISTS a (x INTEGER);
CREATE TABLE IF NOT EXISTS b (y TEXT DEFAULT ';');
CREATE TRIGGER IF NOT EXISTS a_to_b AFTER INSERT ON a BEGIN
    INSERT INTO b (y) VALUES ('from a; ' || NEW.x);
END;
"""


def test_ensure_inside_a_transaction_keeps_it_open_and_whole(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st, State(tmp_path / "state.db") as other:
        st.db.execute("CREATE TABLE IF NOT EXISTS base (v INTEGER)")
        with pytest.raises(RuntimeError), st.transaction() as db:
            db.execute("INSERT INTO base VALUES (1)")
            st.ensure("ab", DDL)
            assert db.in_transaction
            assert other.db.execute("SELECT count(*) FROM base").fetchone()[0] == 0
            raise RuntimeError("roll back")
        assert st.db.execute("SELECT count(*) FROM base").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError):
            st.db.execute("SELECT * FROM a")  # rolled back with the transaction
        st.ensure("ab", DDL)  # not remembered as created: created now
        st.db.execute("INSERT INTO a VALUES (7)")
        assert [r[0] for r in st.db.execute("SELECT y FROM b")] == ["from a; 7"]
