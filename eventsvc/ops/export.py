"""Export one session from its segments alone: no index, no server, no Flask, no click.

``session_events`` streams a session's stored envelopes in seq order, filtered by run, seq and
type; the writers turn that stream into JSON lines (the log's own bytes), CSV, or CloudEvents 1.0.
Memory stays flat: one line is held at a time, whatever the size of the session.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import EventSvcError, SessionNotFound
from ..jsoncodec import dumps_compact
from ..schemas import ENVELOPE_KEYS, ID_RULE, is_valid_id
from ..store.files import segments, untrusted

CLOUDEVENTS_SOURCE_PREFIX = "eventsvc/"
_KEYS = frozenset(ENVELOPE_KEYS)
# OWASP's CSV injection advice: a cell starting with one of these is a formula (or becomes one) in
# a spreadsheet, so it is written with a leading single quote, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class NotADataFolder(EventSvcError):
    code = "not_a_data_folder"


class UnreadableLine(EventSvcError):
    """A complete line of a segment that is not a JSON object: the log is damaged."""

    code = "unreadable_line"


@dataclass(frozen=True)
class StoredEvent:
    """One envelope as the log holds it: its bytes (without the newline) and their parsed form."""

    line: bytes
    envelope: dict[str, Any]


def segments_root(data_dir: Path) -> Path:
    """``<data_dir>/segments``; raises NotADataFolder when it is not a directory, untrusted.NotRegular
    when it is a link or special file."""
    root = Path(data_dir) / segments.SEGMENTS_DIR
    untrusted.check_directory(root)  # a link to a folder elsewhere is refused, never followed
    if not root.is_dir():
        raise NotADataFolder(f"{data_dir} is not an eventsvc data folder (no segments/ inside)")
    return root


def session_segments(data_dir: Path, session_id: str) -> list[Path]:
    """The session's segment files in seq order; raises NotADataFolder or SessionNotFound."""
    root = segments_root(data_dir)
    # The id rule also keeps a session id from naming a path outside segments/ ("..", "a/b").
    if not is_valid_id(session_id):
        raise SessionNotFound(f"session {session_id!r} not found: a session id {ID_RULE}")
    session_dir = root / session_id
    untrusted.check_directory(session_dir)  # a link to a folder elsewhere is refused, never followed
    bases = segments.list_bases(session_dir)
    if not bases:
        raise SessionNotFound(f"session {session_id!r} not found in {root}")
    return [session_dir / segments.segment_name(base) for base in bases]


def session_events(data_dir: Path, session_id: str, *, run_id: str | None = None, since_seq: int = 0,
                   types: Collection[str] = (), on_bytes: Callable[[int], None] | None = None,
                   runs_seen: set[str] | None = None, max_line: int = untrusted.DEFAULT_MAX_LINE,
                   ) -> Iterator[StoredEvent]:
    """The session's events with ``seq > since_seq`` in log order (seq order), optionally only
    ``run_id``'s and only those of ``types``.

    Raises NotADataFolder or SessionNotFound at the call, before any event is read. The stream
    reads the segments only: an incomplete last line (a torn or in-flight write) is skipped, and a
    complete line that is not a stored envelope (or longer than ``max_line``) raises UnreadableLine.
    ``on_bytes`` hears each chunk read (for progress); with ``run_id``, ``runs_seen`` gets it once
    a line of that run was read (whatever its seq), so a caller can tell an unknown run.
    """
    paths = session_segments(data_dir, session_id)
    return _stream(paths, run_id=run_id, since_seq=since_seq, types=frozenset(types), on_bytes=on_bytes,
                   runs_seen=runs_seen if runs_seen is not None else set(), max_line=max_line)


def _stream(paths: list[Path], *, run_id: str | None, since_seq: int, types: frozenset[str],
            on_bytes: Callable[[int], None] | None, runs_seen: set[str], max_line: int) -> Iterator[StoredEvent]:
    on_chunk = (lambda chunk: on_bytes(len(chunk))) if on_bytes is not None else None
    for number, path in enumerate(paths):
        following = paths[number + 1] if number + 1 < len(paths) else None
        # A segment holds the seqs from its base up to the next segment's base: skip whole files
        # that end at or before since_seq instead of parsing every line of them (unless a run is
        # asked for: whether it exists at all is known only once every line was read).
        if run_id is not None or following is None or segments.parse_base(following.name) - 1 > since_seq:
            for line_number, (_, line, complete) in enumerate(segments.scan(path, max_line=max_line,
                                                                            on_chunk=on_chunk), 1):
                if not complete:
                    break
                envelope = _envelope(path, line_number, line)
                if run_id is not None:
                    if envelope["run_id"] != run_id:
                        continue
                    runs_seen.add(run_id)
                if envelope["seq"] <= since_seq:
                    continue
                if types and envelope["type"] not in types:
                    continue
                yield StoredEvent(line, envelope)
        elif on_bytes is not None:
            on_bytes(segments.file_size(path))


_FIELD_TYPES = {"seq": (int,), "session_id": (str,), "event_id": (str,), "run_id": (str, type(None)),
                "type": (str,), "timestamp": (str,), "source": (str,)}


def _envelope(path: Path, line_number: int, line: bytes | None) -> dict[str, Any]:
    try:
        envelope = untrusted.decode(line) if line is not None else None
    except ValueError:
        envelope = None
    if (not isinstance(envelope, dict) or envelope.keys() != _KEYS
            or any(type(envelope[key]) not in kinds for key, kinds in _FIELD_TYPES.items())):
        raise UnreadableLine(f"{path}:{line_number}: not a stored envelope; run `eventsvc audit` on it")
    return envelope


# -- writers: each takes the event stream and a binary output, and returns how many it wrote ---------


def write_jsonl(events: Iterable[StoredEvent], out: BinaryIO) -> int:
    """The stored lines byte-for-byte, one per line."""
    count = 0
    for event in events:
        out.write(event.line + b"\n")
        count += 1
    return count


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would take for a formula gets a leading single quote (OWASP)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(events: Iterable[StoredEvent], out: BinaryIO) -> int:
    """A header row of the envelope keys, then one row per event: payload as compact JSON text,
    run_id empty when null. UTF-8, RFC 4180 quoting and line ends; a text cell starting with
    ``=``, ``+``, ``-``, ``@``, tab or carriage return is prefixed with ``'`` (see FORMULA_STARTS)."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(ENVELOPE_KEYS)
        count = 0
        for event in events:
            # The csv module writes None (a null run_id) as an empty cell.
            writer.writerow([csv_cell(dumps_compact(event.envelope[key]) if key == "payload" else event.envelope[key])
                             for key in ENVELOPE_KEYS])
            count += 1
        text.flush()
        return count
    finally:
        text.detach()  # the caller owns ``out``; closing the wrapper would close it


def cloudevent(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope as a CloudEvents 1.0 event (JSON format).

    Extension attribute names must be lowercase alphanumeric, so the envelope's ``source`` travels
    as ``eventsource`` (the CloudEvents ``source`` names the session), and the seq as the
    ``sequence`` extension, zero-padded to 20 digits so that its string order is seq order.
    """
    event = {
        "specversion": "1.0",
        "id": envelope["event_id"],
        "source": CLOUDEVENTS_SOURCE_PREFIX + envelope["session_id"],
        "type": envelope["type"],
        "time": envelope["timestamp"],
    }
    if envelope["run_id"] is not None:
        event["subject"] = envelope["run_id"]
    event["datacontenttype"] = "application/json"
    event["eventsource"] = envelope["source"]
    event["sequence"] = f"{envelope['seq']:020d}"
    event["data"] = envelope["payload"]
    return event


def write_cloudevents(events: Iterable[StoredEvent], out: BinaryIO) -> int:
    """One CloudEvents 1.0 JSON object per line."""
    count = 0
    for event in events:
        out.write(dumps_compact(cloudevent(event.envelope)).encode("utf-8") + b"\n")
        count += 1
    return count


WRITERS: dict[str, Callable[[Iterable[StoredEvent], BinaryIO], int]] = {
    "jsonl": write_jsonl,
    "csv": write_csv,
    "cloudevents": write_cloudevents,
}
