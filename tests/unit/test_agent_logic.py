"""Pure logic of the node agent: backoff, protocol, specs, rotation, persistence, events."""

from __future__ import annotations

import json
import os
import random
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import protocol
from shoal.agent.backoff import Backoff
from shoal.agent.build import build
from shoal.agent.eventjournal import EventLog
from shoal.agent.persist import read_json, write_json
from shoal.agent.progspec import ProgramSpec
from shoal.agent.rotate import RotatingLog


def test_backoff_grows_exponentially_to_the_cap() -> None:
    b = Backoff(base=0.5, factor=2.0, cap=5.0, jitter=0.0)
    assert [b.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.delay(10_000) == 5.0


def test_backoff_jitter_stays_within_bounds_and_varies() -> None:
    b = Backoff(base=1.0, factor=2.0, cap=3.0, jitter=0.25)
    rng = random.Random(7)
    delays = [b.delay(2, rng) for _ in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100
    assert all(d <= 3.0 for d in (b.delay(3, rng) for _ in range(200)))


def test_protocol_round_trip_and_validation() -> None:
    req = protocol.request("proc.status", 3, name="web")
    line = protocol.encode(req)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    checked = protocol.check_request(protocol.decode(line))
    assert checked == {"v": 1, "id": 3, "op": "proc.status", "args": {"name": "web"}}
    with pytest.raises(protocol.ProtocolError, match="unknown operation 'shell'"):
        protocol.check_request({"v": 1, "id": 1, "op": "shell"})
    with pytest.raises(protocol.ProtocolError, match="'id' must be"):
        protocol.check_request({"v": 1, "id": True, "op": "hello"})
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.decode(b"\x80garbage\n")
    with pytest.raises(protocol.ProtocolError, match="not a JSON object"):
        protocol.decode(b"[1, 2]\n")


def test_protocol_version_mismatch_has_the_exact_message() -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.check_request({"v": 99, "id": 1, "op": "hello"})
    assert str(info.value) == "version mismatch: agent 1, controller 99"
    assert info.value.kind == "version"
    # and the controller's view of an agent of another version
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.check_reply({"v": 7, "id": 1, "ok": True, "result": {}}, 1)
    assert str(info.value) == "version mismatch: agent 7, controller 1"


def test_check_reply_returns_result_or_raises_the_agents_error() -> None:
    assert protocol.check_reply(protocol.reply(4, {"a": 1}), 4) == {"a": 1}
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.check_reply(protocol.failure(4, "no program named 'x'", "agent"), 4)
    assert str(info.value) == "no program named 'x'" and info.value.kind == "agent"
    with pytest.raises(protocol.ProtocolError, match="expected 5"):
        protocol.check_reply(protocol.reply(4, None), 5)


def test_spec_defaults_shell_wrapping_and_errors() -> None:
    spec = ProgramSpec.from_dict({"name": "web", "command": ["sleep", "5"]})
    assert spec.restart == "always" and spec.command == ["sleep", "5"]
    wrapped = ProgramSpec.from_dict({"name": "w", "command": "sleep 5 && echo hi"})
    assert wrapped.command == ["/bin/sh", "-c", "sleep 5 && echo hi"]
    plain = ProgramSpec.from_dict({"name": "w", "command": "true"})
    assert plain.command == ["true"]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"name": "../x", "command": ["a"]}, "bad program name"),
        ({"name": "x", "command": []}, "command must be"),
        ({"name": "x", "command": ["a"], "restart": "sometimes"}, "restart must be"),
        ({"name": "x", "command": ["a"], "stop_signal": "NOPE"}, "unknown stop signal"),
        ({"name": "x", "command": ["a"], "fatal_after": 0}, "fatal_after"),
        ({"name": "x", "command": ["a"], "colour": "red"}, "unknown program field 'colour'"),
        ({"name": "x", "command": ["a"], "env": {"A": 1}}, "env must map"),
    ]
    for data, message in bad:
        with pytest.raises(ValueError, match=message):
            ProgramSpec.from_dict(data)
    assert ProgramSpec.from_dict(spec.to_dict()) == spec


def test_rotation_bounds_disk_use_exactly(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "p.log", max_bytes=1000, backups=2)
    for i in range(500):
        log.write(f"line {i:05d}\n".encode())  # 11 bytes a line, 5500 bytes in all
    files = log.files()
    assert [f.name for f in files] == ["p.log.2", "p.log.1", "p.log"]
    assert all(f.stat().st_size <= 1000 for f in files)
    assert log.disk_usage() <= 3000
    assert not (tmp_path / "p.log.3").exists()
    assert log.tail(2) == b"line 00498\nline 00499\n"
    assert log.offset == 5500
    data, offset = log.read_from(5500 - 11)
    assert data == b"line 00499\n" and offset == 5500
    log.close()


def test_rotation_with_no_backups_truncates(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "p.log", max_bytes=10, backups=0)
    log.write(b"0123456789abc")
    assert (tmp_path / "p.log").read_bytes() == b"abc"
    assert log.files() == [tmp_path / "p.log"]


def test_rotation_reports_write_errors_without_raising(tmp_path: Path) -> None:
    seen: list[tuple[str, OSError | None]] = []
    log = RotatingLog(tmp_path / "missing" / "p.log", on_error=lambda w, e: seen.append((w, e)))
    log.write(b"hello\n")
    assert log.dropped == 6
    assert seen and isinstance(seen[-1][1], OSError)


def test_persisted_state_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "programs.json"
    assert read_json(path, {"empty": True}) == {"empty": True}
    write_json(path, {"programs": {"a": 1}})
    write_json(path, {"programs": {"a": 2}})
    assert read_json(path, None) == {"programs": {"a": 2}}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["programs.json"]  # no temp files left
    path.write_text("{half")
    assert read_json(path, "default") == "default"


def test_events_sequence_survives_reload_and_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=2000, keep=10, clock=lambda: 100.0)
    for i in range(40):
        log.record("started", "p", f"pid {i}")
    assert log.seq == 40
    assert os.path.getsize(path) <= 2000
    assert os.path.getsize(str(path) + ".1") <= 2000
    page = log.since(35)
    assert [e["seq"] for e in page["events"]] == [36, 37, 38, 39, 40]
    assert page["lost"] is False and page["last"] == 40
    assert log.since(0)["lost"] is True  # older events fell out of memory
    assert [e["seq"] for e in log.since(30, limit=3)["events"]] == [31, 32, 33]
    again = EventLog(path, keep=10)
    assert again.seq == 40
    assert again.record("exited", "p", "exit code 1")["seq"] == 41
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 42, "kin')  # torn last line
    assert EventLog(path).seq == 41


def test_build_is_deterministic_and_self_contained() -> None:
    first, second = build(), build()
    assert first.data == second.data and first.build_id == second.build_id
    assert len(first.build_id) == 16
    with zipfile.ZipFile(BytesIO(first.data)) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert "__main__.py" in names and "shoal/agent/server.py" in names
        assert "shoal/agent/build.py" not in names
        assert archive.read("shoal/agent/BUILD").decode().strip() == first.build_id
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        for name in names:
            if name.endswith(".py"):
                text = archive.read(name).decode()
                # the agent imports nothing from Shoal outside shoal.agent
                for line in text.splitlines():
                    stripped = line.strip()
                    if stripped.startswith(("import shoal", "from shoal")):
                        assert stripped.startswith("from shoal.agent"), (name, stripped)
    assert json.loads(json.dumps({"id": first.build_id}))["id"] == first.build_id
