"""What reaches the operator's terminal: node bytes shown, never obeyed.

Anything a node sends (output, names, facts, reasons, event messages) may
carry terminal escapes: OSC 52 writes the clipboard, CSI sequences move the
cursor and repaint earlier lines, bidi overrides reorder what is read. When a
stream is a terminal, :class:`EscapingStream` shows such characters as
``\\x1b``, ``\\u202e`` (newline, tab and every other printable character,
UTF-8 included, pass unchanged). A pipe or a file gets the bytes as they are,
as ``ssh`` does; JSON output is escaped by ``json`` whatever the stream.
The CLI installs it for stdout and stderr in one place (``shoal --raw``
turns it off); its own terminal controls (progress lines) go to ``raw``.
"""

from __future__ import annotations

from typing import TextIO

#: Bidi embeddings, overrides and isolates (the "Trojan Source" characters).
BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))

#: Character -> its escape: C0 controls but newline and tab, DEL, C1 controls, bidi.
_ESCAPES = {
    code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in (*range(0x20), *range(0x7F, 0xA0), *BIDI)
    if code not in (0x09, 0x0A)
}


def escape_controls(text: str) -> str:
    """``text`` with control characters (see module docstring) written as escapes."""
    return text.translate(_ESCAPES)


class EscapingStream:
    """A text stream that writes to ``raw`` with :func:`escape_controls` applied."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(escape_controls(text))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)  # flush, isatty, fileno, encoding, ...


def unescaped(stream: TextIO) -> TextIO:
    """The stream under an :class:`EscapingStream`, for the CLI's own terminal controls."""
    return stream.raw if isinstance(stream, EscapingStream) else stream
