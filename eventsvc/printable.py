"""Escaping text that came from outside before it is printed (stdlib only: the client's CLI uses it too)."""
from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every control, format or unpaired-surrogate character escaped (``\\n``,
    ``\\x1b``, ``\\udcff`` for a byte of a name that is not UTF-8), so output from a folder
    cannot forge lines or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
