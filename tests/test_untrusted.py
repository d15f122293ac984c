"""Reading files from elsewhere: bounded lines, no links, no special files, escaped names (issue 12)."""
from __future__ import annotations

import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventsvc.store.files import untrusted


def reference(data: bytes, max_line: int) -> list[tuple[int, bytes | None, int, bool]]:
    lines, offset = [], 0
    pieces = data.split(b"\n")
    for number, piece in enumerate(pieces):
        complete = number < len(pieces) - 1
        if complete or piece:
            lines.append((offset, piece if len(piece) <= max_line else None, len(piece), complete))
        offset += len(piece) + 1
    return lines


@given(data=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"x" * 7]), max_size=60).map(b"".join),
       max_line=st.integers(1, 12), chunk=st.integers(1, 9))
def test_bounded_lines_match_a_plain_split_whatever_the_chunking(data, max_line, chunk):
    original = untrusted.CHUNK
    untrusted.CHUNK = chunk
    try:
        seen: list[bytes] = []
        got = list(untrusted.bounded_lines(io.BytesIO(data), max_line=max_line, on_chunk=seen.append))
    finally:
        untrusted.CHUNK = original
    assert got == reference(data, max_line)
    assert b"".join(seen) == data


@pytest.mark.parametrize(("make", "what"), [
    (lambda path: os.symlink("/dev/zero", path), "a symbolic link"),
    (os.mkfifo, "a FIFO"),
    (os.mkdir, "a directory"),
])
def test_open_regular_refuses_links_and_special_files_without_blocking(tmp_path, make, what):
    path = tmp_path / "segment.jsonl"
    make(path)
    with pytest.raises(untrusted.NotRegular) as refused:
        untrusted.open_regular(path)
    assert refused.value.what == what


def test_decode_bounds_nesting_even_when_brackets_never_close():
    for line in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 70 + b"1" + b"}" * 70):
        with pytest.raises(untrusted.TooDeep):
            untrusted.decode(line)
    assert untrusted.decode(b'{"a":[[1]],"b":"[[[["}') == {"a": [[1]], "b": "[[[["}


def test_printable_escapes_what_could_forge_output_or_drive_a_terminal():
    assert untrusted.printable("plain é") == "plain é"
    assert untrusted.printable("x\n\naudited\x1b[2J\udcff") == "x\\n\\naudited\\x1b[2J\\udcff"
