"""One command's output as the controller keeps it: each stream up to a limit, lines
handed on as they complete, and what a node sends beyond the limit counted, not kept.

A node may be hostile (DESIGN, "Threat model"): nothing it prints may exhaust the
controller. Every way a command's output reaches us (SSH, the agent, a local
process) goes through :class:`OutputCapture`; a relay gateway caps its subtree's
output with the same limit (``agent/relayrun.py``).
"""

from __future__ import annotations

from .base import MAX_OUTPUT, LineCallback

#: A line longer than this is handed to the line callback in pieces of this size, so
#: a stream without newlines is never held whole (``--stream``).
LINE_PIECE = 1 << 20

STREAMS = ("stdout", "stderr")


class OutputCapture:
    """Both streams of one command: the first ``limit`` bytes of each are kept."""

    __slots__ = ("_on_line", "_partial", "dropped", "kept", "limit")

    def __init__(self, limit: int = MAX_OUTPUT, on_line: LineCallback | None = None) -> None:
        self.limit = limit
        self.kept = {s: bytearray() for s in STREAMS}
        self.dropped = 0  # bytes of either stream beyond the limit
        self._on_line = on_line
        self._partial = {s: b"" for s in STREAMS}

    def add(self, stream: str, data: bytes) -> None:
        kept = self.kept[stream]
        room = len(data) if self.limit <= 0 else self.limit - len(kept)
        if room >= len(data):
            kept += data
        else:
            if room > 0:
                kept += data[:room]
            self.dropped += len(data) - max(room, 0)
        if self._on_line is not None:
            *lines, rest = (self._partial[stream] + data).split(b"\n")
            for line in lines:
                self._on_line(stream, line)
            while len(rest) > LINE_PIECE:
                self._on_line(stream, rest[:LINE_PIECE])
                rest = rest[LINE_PIECE:]
            self._partial[stream] = rest

    def flush_lines(self) -> None:
        """Hand on each stream's last line when it did not end with a newline."""
        if self._on_line is None:
            return
        for stream, rest in self._partial.items():
            if rest:
                self._on_line(stream, rest)
        self._partial = {s: b"" for s in STREAMS}

    @property
    def stdout(self) -> bytes:
        return bytes(self.kept["stdout"])

    @property
    def stderr(self) -> bytes:
        return bytes(self.kept["stderr"])
