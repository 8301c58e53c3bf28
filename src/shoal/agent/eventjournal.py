"""The agent's append-only event log, with sequence numbers.

Each event is ``{"seq", "time", "kind", "program", "detail"}``; ``seq`` grows
by one per event for the life of the working area (it survives agent
restarts). Kinds: ``agent_started``, ``agent_stopping``, ``started``,
``exited``, ``restarted``, ``backoff``, ``fatal``, ``stopped``,
``health_failed``, ``health_recovered``, ``stop_command``, ``spawn_failed``, ``io_error``,
``io_recovered``. Events are appended to ``events.jsonl``; when it passes
``max_bytes`` it becomes ``events.jsonl.1`` (one backup), so disk use is
bounded by twice ``max_bytes``. The latest ``keep`` events are also held in
memory, which is what :meth:`EventLog.since` serves: the controller pulls with
``since=<last seq it has>``. A write that fails (full disk) keeps the event in
memory and reports the error; nothing is raised. Subscribers
(:meth:`EventLog.subscribe`, the ``watch`` streams) are called with each event
as it is recorded (held in memory, before it is written to disk); a subscriber that raises is
dropped, never the event.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

Event = dict[str, Any]
ErrorHook = Callable[[str, Optional[OSError]], None]
Subscriber = Callable[[Event], None]


class EventLog:
    """Sequence-numbered events, in memory and on disk."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 1 << 20,
        keep: int = 2000,
        clock: Callable[[], float] = time.time,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.clock = clock
        self.on_error = on_error
        self.recent: deque[Event] = deque(maxlen=keep)
        self.seq = 0
        self._subscribers: list[Subscriber] = []
        self._load()

    @property
    def backup(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def _load(self) -> None:
        for path in (self.backup, self.path):
            try:
                with open(str(path), "rb") as handle:
                    lines = handle.read().splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    event = json.loads(line.decode("utf-8"))
                except ValueError:
                    continue  # a line cut short by a full disk or a crash
                if (
                    isinstance(event, dict)
                    and isinstance(event.get("seq"), int)
                    and event["seq"] > self.seq
                ):
                    self.seq = event["seq"]
                    self.recent.append(event)

    def record(self, kind: str, program: str | None = None, detail: str = "") -> Event:
        """Append one event; returns it (with its sequence number)."""
        self.seq += 1
        event: Event = {
            "seq": self.seq,
            "time": round(self.clock(), 3),
            "kind": kind,
            "program": program,
            "detail": detail,
        }
        self.recent.append(event)
        # before the write: an io_error it causes is recorded (and pushed) after this one
        for subscriber in tuple(self._subscribers):  # one may unsubscribe while called
            try:
                subscriber(event)
            except Exception:
                self.unsubscribe(subscriber)
        line = (json.dumps(event, sort_keys=True) + "\n").encode("utf-8")
        try:
            try:
                size = os.stat(str(self.path)).st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                os.replace(str(self.path), str(self.backup))
            fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.on_error is not None:
                self.on_error(str(self.path), exc)
        else:
            if self.on_error is not None:
                self.on_error(str(self.path), None)
        return event

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(event)`` for every event recorded from now on."""
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop calling ``subscriber`` (no error when it was not subscribed)."""
        try:
            self._subscribers.remove(subscriber)
        except ValueError:
            pass

    def since(self, seq: int, limit: int = 1000) -> dict[str, Any]:
        """Events with a sequence number above ``seq`` (oldest first, at most ``limit``).

        ``lost`` is true when events after ``seq`` were already dropped from memory.
        """
        oldest = self.recent[0]["seq"] if self.recent else self.seq + 1
        events: list[Event] = [e for e in self.recent if e["seq"] > seq][: max(0, limit)]
        return {"events": events, "last": self.seq, "lost": seq + 1 < oldest and seq < self.seq}
