"""Marshmallow schemas: the one source of truth for what an envelope and a query may hold.

``EventInputSchema`` checks what a caller may send to append; ``StoredEnvelopeSchema``
checks a line read back from a segment (the audit uses it). Both share the field
rules, so the service and the auditor can never disagree about validity.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from .jsoncodec import MAX_DEPTH
from .types import EVENT_TYPES, EventTypeSet

ENVELOPE_KEYS = ("type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_ID = re.compile(ID_PATTERN + r"\Z")
ID_CHARACTERS = "1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-', starting with a letter or digit"
ID_RULE = f"must be {ID_CHARACTERS}"
MAX_SOURCE_CHARS = 64
_RFC3339 = re.compile(
    # [0-9], not \d: \d also matches other scripts' digits, which int() would then accept.
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; fractions only when present, without trailing zeros."""
    moment = moment.astimezone(timezone.utc)
    # Not strftime: its %Y does not pad years before 1000 to four digits.
    text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_timestamp(value: str) -> datetime:
    """Parse RFC 3339 (an offset is required); raises ValueError otherwise."""
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("not RFC 3339")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("bad offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    return moment.astimezone(timezone.utc)


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not plain, finite JSON (None when it is)."""
    if depth > MAX_DEPTH:
        return f"nests deeper than {MAX_DEPTH} levels"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains a non-finite number (NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a non-string key {key!r}"
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"contains a value that is not JSON ({type(value).__name__})"


class Identifier(fields.String):
    default_error_messages = {"invalid_id": ID_RULE}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if _ID.match(text) is None:
            raise self.make_error("invalid_id")
        return text


class Timestamp(fields.String):
    default_error_messages = {"invalid_timestamp": "must be an RFC 3339 timestamp with an offset, "
                              "for example 2026-02-06T10:00:00Z"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return format_timestamp(parse_timestamp(text))
        except (ValueError, OverflowError):
            raise self.make_error("invalid_timestamp") from None


class Seq(fields.Integer):
    """A positive integer; booleans and floats such as 3.0 are not seqs."""

    default_error_messages = {"invalid_seq": "must be an integer >= 1"}

    def __init__(self, **kwargs):
        super().__init__(strict=True, validate=validate.Range(min=1, error="must be an integer >= 1"), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid_seq")
        return super()._deserialize(value, attr, data, **kwargs)


class Payload(fields.Field):
    default_error_messages = {
        "not_object": "must be a JSON object",
        "null": "must be a JSON object",
        "not_json": "{problem}",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise self.make_error("not_object")
        problem = json_problem(value)
        if problem:
            raise self.make_error("not_json", problem=f"payload {problem}")
        return value


class _EnvelopeRules(Schema):
    """Rules shared by input and stored envelopes; ``event_types`` is the deployment's registry."""

    error_messages = {"unknown": "unknown envelope key: an event has only the keys " + ", ".join(ENVELOPE_KEYS)
                      + "; custom data goes in payload"}

    class Meta:
        unknown = RAISE

    def __init__(self, *, event_types: EventTypeSet = EVENT_TYPES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_types = event_types

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _type_and_run(self, data: dict, original: Any, **kwargs: Any) -> None:
        name = data.get("type")
        if not isinstance(name, str):
            return
        if name not in self.event_types:
            raise ValidationError(f"unknown event type {name!r}; GET /api/event-types lists them", "type")
        # A malformed run_id already has its own message; only a missing or null one is reported here.
        if self.event_types.is_run_scoped(name) and original.get("run_id") is None:
            raise ValidationError(f"required: {name} is a run-scoped event type", "run_id")


class EventInputSchema(_EnvelopeRules):
    """What a caller may send to append. The store fills what is missing."""

    # Left out means "fill it in"; an explicit null is an error (except run_id, which may be null).
    type = fields.String(required=True)
    timestamp = Timestamp(load_default=None, allow_none=False)
    session_id = Identifier(load_default=None, allow_none=False)
    run_id = Identifier(load_default=None, allow_none=True)
    seq = Seq(load_default=None, allow_none=False)
    source = fields.String(load_default=None, allow_none=False, validate=validate.Length(
        min=1, max=MAX_SOURCE_CHARS, error=f"must be 1-{MAX_SOURCE_CHARS} characters"))
    event_id = Identifier(load_default=None, allow_none=False)
    payload = Payload(load_default=dict, allow_none=False)


class StoredEnvelopeSchema(_EnvelopeRules):
    """A complete envelope as it stands in a segment: all 8 keys, nothing else."""

    type = fields.String(required=True)
    timestamp = Timestamp(required=True)
    session_id = Identifier(required=True)
    run_id = Identifier(required=True, allow_none=True)
    seq = Seq(required=True)
    source = fields.String(required=True, validate=validate.Length(
        min=1, max=MAX_SOURCE_CHARS, error=f"must be 1-{MAX_SOURCE_CHARS} characters"))
    event_id = Identifier(required=True)
    payload = Payload(required=True)


_STORED_KEYS = frozenset(ENVELOPE_KEYS)
_FLAT_JSON = frozenset({str, int, bool, type(None)})
_registries: dict[int, tuple[EventTypeSet, frozenset[str], frozenset[str]]] = {}
_valid_dates: dict[str, bool] = {}
# Session ids, run ids and timestamps repeat from line to line; remembering a few thousand
# that passed saves their regexes. Validity is a function of the string alone, so this is safe,
# as long as ids and timestamps are remembered apart ("2026-02-06T10:00:00Z" is a valid id).
_recent_ids: set[str] = set()
_recent_timestamps: set[str] = set()
_RECENT_LIMIT = 4096


def _type_names(event_types: EventTypeSet) -> tuple[frozenset[str], frozenset[str]]:
    """(all names, run-scoped names) of a registry, computed once per registry object."""
    cached = _registries.get(id(event_types))
    if cached is None or cached[0] is not event_types:
        cached = (event_types, frozenset(event_types),
                  frozenset(name for name in event_types if event_types.is_run_scoped(name)))
        _registries[id(event_types)] = cached
    return cached[1], cached[2]


def _remember(recent: set[str], value: str) -> None:
    if len(recent) >= _RECENT_LIMIT:
        recent.clear()
    recent.add(value)


def _stored_timestamp_is_valid(text: str) -> bool:
    """What the Timestamp field accepts; an ASCII UTC ('Z') timestamp is checked without datetime."""
    match = _RFC3339.match(text)
    if match is None:
        return False
    if text.isascii() and text[-1] in "Zz":
        # The regex fixes the positions; only the calendar and the clock ranges remain to check.
        date = text[:10]
        valid = _valid_dates.get(date)
        if valid is None:
            try:
                datetime(int(date[:4]), int(date[5:7]), int(date[8:10]))
                valid = True
            except ValueError:
                valid = False
            if len(_valid_dates) > _RECENT_LIMIT:
                _valid_dates.clear()
            _valid_dates[date] = valid
        return valid and text[11:13] <= "23" and text[14:16] <= "59" and text[17:19] <= "59"
    try:
        format_timestamp(parse_timestamp(text))
    except (ValueError, OverflowError):
        return False
    return True


def stored_envelope_is_valid(obj: Any, event_types: EventTypeSet = EVENT_TYPES) -> bool:
    """Whether ``StoredEnvelopeSchema(event_types=event_types).load(obj)`` would succeed, ~10x faster.

    The same rules in plain Python, for the auditor's hot loop: a caller that needs the messages
    loads the schema only for objects this rejects. Exact for anything ``json.loads`` returns
    (tests/test_schemas_fast.py holds the two to agreement); for other Python objects it may say
    False where the schema would accept (a str subclass, a Mapping that is not a dict), never
    the reverse.
    """
    if type(obj) is not dict or obj.keys() != _STORED_KEYS:
        return False
    names, run_scoped = _type_names(event_types)
    name = obj["type"]
    if type(name) is not str or name not in names:
        return False
    timestamp = obj["timestamp"]
    if type(timestamp) is not str:
        return False
    if timestamp not in _recent_timestamps:
        if not _stored_timestamp_is_valid(timestamp):
            return False
        _remember(_recent_timestamps, timestamp)
    recent = _recent_ids
    session_id = obj["session_id"]
    if type(session_id) is not str:
        return False
    if session_id not in recent:
        if _ID.match(session_id) is None:
            return False
        _remember(recent, session_id)
    run_id = obj["run_id"]
    if run_id is None:
        if name in run_scoped:
            return False
    elif type(run_id) is not str:
        return False
    elif run_id not in recent:
        if _ID.match(run_id) is None:
            return False
        _remember(recent, run_id)
    event_id = obj["event_id"]  # unique per line: not worth remembering
    if type(event_id) is not str or _ID.match(event_id) is None:
        return False
    seq = obj["seq"]
    if type(seq) is not int or seq < 1:
        return False
    source = obj["source"]
    if type(source) is not str or not 1 <= len(source) <= MAX_SOURCE_CHARS:
        return False
    payload = obj["payload"]
    if type(payload) is not dict:
        return False
    for key, value in payload.items():
        if type(key) is not str or type(value) not in _FLAT_JSON:
            return json_problem(payload) is None
    return True


_INPUT_KEYS = frozenset(ENVELOPE_KEYS)
_MISSING = object()


def load_event_input(obj: Any, event_types: EventTypeSet = EVENT_TYPES) -> dict[str, Any] | None:
    """What ``EventInputSchema(event_types=event_types).load(obj)`` returns, for the common case.

    Plain Python for the append hot path. It answers only when it is sure: None means "ask the
    schema", which stays the one source of truth for the rules and the only one to word an error
    (tests/test_schemas_fast.py holds the two to agreement).
    """
    if type(obj) is not dict or "type" not in obj or not obj.keys() <= _INPUT_KEYS:
        return None
    names, run_scoped = _type_names(event_types)
    name = obj["type"]
    if type(name) is not str or name not in names:
        return None
    loaded: dict[str, Any] = {"type": name}
    timestamp = obj.get("timestamp", _MISSING)
    if timestamp is _MISSING:
        loaded["timestamp"] = None
    elif type(timestamp) is str:
        try:
            loaded["timestamp"] = format_timestamp(parse_timestamp(timestamp))
        except (ValueError, OverflowError):
            return None
    else:
        return None
    for key in ("session_id", "event_id"):
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            loaded[key] = None
        elif type(value) is str and _ID.match(value) is not None:
            loaded[key] = value
        else:
            return None
    run_id = obj.get("run_id")
    if run_id is None:
        if name in run_scoped:
            return None
    elif type(run_id) is not str or _ID.match(run_id) is None:
        return None
    loaded["run_id"] = run_id
    seq = obj.get("seq", _MISSING)
    if seq is _MISSING:
        loaded["seq"] = None
    elif type(seq) is int and seq >= 1:
        loaded["seq"] = seq
    else:
        return None
    source = obj.get("source", _MISSING)
    if source is _MISSING:
        loaded["source"] = None
    elif type(source) is str and 1 <= len(source) <= MAX_SOURCE_CHARS:
        loaded["source"] = source
    else:
        return None
    payload = obj.get("payload", _MISSING)
    if payload is _MISSING:
        loaded["payload"] = {}
    elif type(payload) is dict and json_problem(payload) is None:
        loaded["payload"] = payload
    else:
        return None
    return loaded


class QueryInteger(fields.Integer):
    """Plain decimal digits only: int() would also take ' 5', '+5' and '5_000'."""

    _DIGITS = re.compile(r"[0-9]{1,18}\Z")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or self._DIGITS.match(value) is None:
            raise self.make_error("invalid")
        return int(value)


class QuerySeconds(fields.Float):
    """A duration in seconds from a query string: digits with an optional fraction."""

    _NUMBER = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?\Z")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or self._NUMBER.match(value) is None:
            raise self.make_error("invalid")
        return float(value)


class QueryNames(fields.Field):
    """A comma-separated list of names (event types, run statuses); which names exist is the store's to say."""

    _NAMES = re.compile(r"[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63}){0,63}\Z")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or self._NAMES.match(value) is None:
            raise ValidationError("must be a comma-separated list of names (lower-case letters, digits and '_')")
        return list(dict.fromkeys(value.split(",")))


MAX_WAIT_SECONDS = 60


class PageQuerySchema(Schema):
    """``since_seq``, ``limit`` and the long-poll ``wait`` for paged reads.

    Unknown parameters are errors, not silently ignored: a typo must not change the answer.
    """

    error_messages = {"unknown": "unknown query parameter"}

    class Meta:
        unknown = RAISE

    since_seq = QueryInteger(load_default=0, validate=validate.Range(min=0, error="must be an integer >= 0"),
                             error_messages={"invalid": "must be an integer >= 0"})
    limit = QueryInteger(load_default=100,
                         validate=validate.Range(min=1, max=1000, error="must be an integer from 1 to 1000"),
                         error_messages={"invalid": "must be an integer from 1 to 1000"})
    wait = QuerySeconds(load_default=0.0, validate=validate.Range(
        min=0, max=MAX_WAIT_SECONDS, error=f"must be a number of seconds from 0 to {MAX_WAIT_SECONDS}"),
        error_messages={"invalid": f"must be a number of seconds from 0 to {MAX_WAIT_SECONDS}"})
    types = QueryNames()  # no default: the fast path above answers only for queries without it


_PAGE_DEFAULTS = {"since_seq": 0, "limit": 100, "wait": 0.0}


def load_page_query(args: dict[str, str]) -> dict[str, Any] | None:
    """What ``PageQuerySchema().load(args)`` returns for plain digits in range (every read asks).

    None means "ask the schema", which words every error; the two are held equal by a test.
    """
    loaded = dict(_PAGE_DEFAULTS)
    for name, value in args.items():
        if name not in _PAGE_DEFAULTS or type(value) is not str or not value.isascii() or not value.isdigit():
            return None
        if not 1 <= len(value) <= (6 if name == "wait" else 18):
            return None
        number = int(value)
        if name == "limit" and not 1 <= number <= 1000 or name == "wait" and number > MAX_WAIT_SECONDS:
            return None
        loaded[name] = float(number) if name == "wait" else number
    return loaded


class StreamQuerySchema(Schema):
    """``since_seq``, ``until_seq`` and ``wait`` (0 or 1: wait for a session that does not exist yet)."""

    error_messages = {"unknown": "unknown query parameter"}

    class Meta:
        unknown = RAISE

    since_seq = QueryInteger(load_default=0, validate=validate.Range(min=0, error="must be an integer >= 0"),
                             error_messages={"invalid": "must be an integer >= 0"})
    until_seq = QueryInteger(load_default=None, validate=validate.Range(min=1, error="must be an integer >= 1"),
                             error_messages={"invalid": "must be an integer >= 1"})
    wait = QueryInteger(load_default=0, validate=validate.OneOf([0, 1], error="must be 0 or 1"),
                        error_messages={"invalid": "must be 0 or 1"})
    types = QueryNames(load_default=None)


class ListingQuerySchema(Schema):
    """``limit`` and ``cursor`` of a summary listing (sessions, a session's runs)."""

    error_messages = {"unknown": "unknown query parameter"}

    class Meta:
        unknown = RAISE

    limit = QueryInteger(load_default=100,
                         validate=validate.Range(min=1, max=1000, error="must be an integer from 1 to 1000"),
                         error_messages={"invalid": "must be an integer from 1 to 1000"})
    cursor = fields.String(load_default=None, validate=validate.Length(min=1, max=200))


class RunListingQuerySchema(ListingQuerySchema):
    """``GET /api/runs``: the listing's ``limit`` and ``cursor``, and its two optional filters."""

    status = QueryNames(load_default=None)
    session_id = fields.String(load_default=None)
