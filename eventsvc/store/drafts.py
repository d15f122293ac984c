"""Turn caller input into draft envelopes: validated, defaulted and serialised before any lock.

Everything except the seq is known before the session lock is taken, so each draft keeps
its line as two pre-serialised halves and the seq is spliced in under the lock.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from marshmallow import ValidationError

from ..errors import ValidationFailed
from ..jsoncodec import canonical, dumps_compact
from ..schemas import ID_RULE, EventInputSchema, format_timestamp, is_valid_id, load_event_input


@dataclass
class Draft:
    position: int  # index in the caller's batch, for error details
    envelope: dict[str, Any]  # all 8 keys; seq is None until assigned
    expected_seq: int | None
    head: bytes  # '{"type":…,"run_id":…,"seq":'
    tail: bytes  # ',"source":…,"payload":{…}}\n'

    @property
    def event_id(self) -> str:
        return self.envelope["event_id"]

    @property
    def run_id(self) -> str | None:
        return self.envelope["run_id"]

    def line(self, seq: int) -> bytes:
        return b"%s%d%s" % (self.head, seq, self.tail)

    def stored(self, seq: int) -> dict[str, Any]:
        return {**self.envelope, "seq": seq}

    def same_content(self, stored: dict[str, Any]) -> bool:
        """The idempotency rule: a re-send matches when type, run_id, source and payload do."""
        mine = self.envelope
        return (mine["type"] == stored.get("type") and mine["run_id"] == stored.get("run_id")
                and mine["source"] == stored.get("source")
                and canonical(mine["payload"]) == canonical(stored.get("payload")))


def prepare(session_id: str, events: Sequence[Any], *, schema: EventInputSchema,
            default_source: str) -> list[Draft]:
    """Validate a batch in one pass; raises ValidationFailed (details keyed by batch index) or nothing."""
    if not is_valid_id(session_id):
        raise ValidationFailed("invalid session_id", {"session_id": [ID_RULE]})
    loaded = [load_event_input(event, schema.event_types) for event in events]
    if any(item is None for item in loaded):
        try:
            loaded = schema.load(list(events), many=True)
        except ValidationError as exc:
            raise ValidationFailed("invalid event", exc.messages) from None
    now = format_timestamp(datetime.now(timezone.utc))
    new_ids = iter(new_event_ids(sum(1 for item in loaded if not item["event_id"])))
    drafts: list[Draft] = []
    errors: dict[int, dict[str, list[str]]] = {}
    first_use: dict[str, int] = {}
    for position, item in enumerate(loaded):
        if item["session_id"] not in (None, session_id):
            errors[position] = {"session_id": [f"must equal the session in the URL ({session_id!r}) or be left out"]}
            continue
        envelope = {
            "type": item["type"],
            "timestamp": item["timestamp"] or now,
            "session_id": session_id,
            "run_id": item["run_id"],
            "seq": None,
            "source": item["source"] or default_source,
            "event_id": item["event_id"] or next(new_ids),
            "payload": item["payload"],
        }
        if envelope["event_id"] in first_use:
            errors[position] = {"event_id": [f"repeats the event_id of event {first_use[envelope['event_id']]}"
                                             " in this batch"]}
            continue
        first_use[envelope["event_id"]] = position
        try:
            drafts.append(_serialise(position, envelope, item["seq"]))
        except UnicodeEncodeError:
            errors[position] = {field: ["contains a lone surrogate: text must be valid Unicode"]
                                for field in ("source", "payload") if not _encodable(envelope[field])}
    if errors:
        raise ValidationFailed("invalid event", errors)
    return drafts


def new_event_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs, as uuid4() makes them, from one read of the OS's random source."""
    raw = os.urandom(16 * count)
    ids = []
    for start in range(0, len(raw), 16):
        value = (int.from_bytes(raw[start:start + 16], "big") & ~(0xF000 << 64 | 0xC000 << 48)
                 | (0x4000 << 64 | 0x8000 << 48))  # version 4, RFC 4122 variant
        digits = "%032x" % value
        ids.append(f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}")
    return ids


_SEQ_KEY = ',"seq":'
_NO_SEQ = _SEQ_KEY + "null,"


def _serialise(position: int, envelope: dict[str, Any], expected_seq: int | None) -> Draft:
    """One encode of the envelope (seq still None), cut where the seq goes.

    Only strings or null precede the seq key, and a quote inside a JSON string is escaped,
    so the first ``,"seq":null,`` in the text is the key itself.
    """
    text = dumps_compact(envelope)
    cut = text.index(_NO_SEQ)
    head = text[:cut + len(_SEQ_KEY)].encode("utf-8")
    tail = ("," + text[cut + len(_NO_SEQ):] + "\n").encode("utf-8")
    return Draft(position, envelope, expected_seq, head, tail)


def _encodable(value: Any) -> bool:
    try:
        dumps_compact(value).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def details_for_single(error: ValidationFailed) -> ValidationFailed:
    """A one-event append reports field messages directly, not keyed by batch index 0."""
    details = error.details
    if isinstance(details, dict) and set(details) == {0}:
        return ValidationFailed(error.message, details[0])
    return error


class AppendShortcuts:
    """The one-event and list forms of an append, derived from a backend's ``append_batch`` (one
    definition for every backend, so they cannot drift apart)."""

    def append_batch(self, session_id: str, events: Sequence[dict[str, Any]], *,
                     default_source: str = "api") -> Any:
        raise NotImplementedError

    def append(self, session_id: str, event: dict[str, Any], *, default_source: str = "api") -> dict[str, Any]:
        """Append one event; returns the stored envelope (the stored one for an idempotent re-send).

        Raises ValidationFailed, EventTooLarge, SeqConflict, EventIdConflict, RunSessionConflict or
        StorageError; in every case nothing is written.
        """
        return self.append_one(session_id, event, default_source=default_source).events[0]

    def append_one(self, session_id: str, event: dict[str, Any], *, default_source: str = "api") -> Any:
        """``append`` that also says whether the event was new; field errors are not keyed by index."""
        try:
            return self.append_batch(session_id, [event], default_source=default_source)
        except ValidationFailed as exc:
            raise details_for_single(exc) from None

    def append_many(self, session_id: str, events: Sequence[dict[str, Any]], *,
                    default_source: str = "api") -> list[dict[str, Any]]:
        """Append a batch atomically (all or none); returns the stored envelopes in input order."""
        return self.append_batch(session_id, events, default_source=default_source).events
