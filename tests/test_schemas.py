"""The envelope rules, as EventInputSchema and StoredEnvelopeSchema enforce them, and strict JSON."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from eventsvc.errors import BadRequest
from eventsvc.jsoncodec import MAX_DEPTH, loads_strict, nesting_depth_exceeds
from eventsvc.schemas import ENVELOPE_KEYS, EventInputSchema, StoredEnvelopeSchema

ID_FIELDS = ("session_id", "run_id", "event_id")

BAD_IDS = [
    ("a/b",),            # slash: ids become folder names and URL segments
    ("/ab",),
    (".hidden",),        # leading dot
    ("..",),
    ("-leading-dash",),
    ("a" * 129,),        # one too long
    ("abc\n",),          # newline at the end
    ("ab c",),           # space
    ("",),               # empty
    ("é",),              # outside the alphabet
    (5,),                # not a string
    (["abc"],),
    ({"id": "abc"},),
]
GOOD_IDS = [("a",), ("0",), ("a" * 128,), ("Run-1.2_3:4",), ("9f1c2d3e-aaaa-4bbb-8ccc-000000000000",)]


def stored(**changes):
    """A complete, valid stored envelope with ``changes`` applied."""
    envelope = {
        "type": "user_message",
        "timestamp": "2026-02-06T10:00:00Z",
        "session_id": "s1",
        "run_id": None,
        "seq": 1,
        "source": "api",
        "event_id": "e1",
        "payload": {"text": "hi"},
    }
    envelope.update(changes)
    return envelope


def load_input(**fields):
    return EventInputSchema().load({"type": "user_message", **fields})


def input_errors(**fields) -> dict:
    with pytest.raises(ValidationError) as caught:
        load_input(**fields)
    return caught.value.messages


def stored_errors(envelope: dict) -> dict:
    with pytest.raises(ValidationError) as caught:
        StoredEnvelopeSchema().load(envelope)
    return caught.value.messages


# -- ids ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("bad_id",), BAD_IDS)
def test_input_rejects_bad_ids(field, bad_id):
    assert field in input_errors(**{field: bad_id})


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("bad_id",), BAD_IDS)
def test_stored_envelope_rejects_bad_ids(field, bad_id):
    assert field in stored_errors(stored(**{field: bad_id}))


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("good_id",), GOOD_IDS)
def test_input_accepts_good_ids(field, good_id):
    assert load_input(**{field: good_id})[field] == good_id


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("good_id",), GOOD_IDS)
def test_stored_envelope_accepts_good_ids(field, good_id):
    assert StoredEnvelopeSchema().load(stored(**{field: good_id}))[field] == good_id


# -- run_id and run-scoped types -----------------------------------------------------------------

@pytest.mark.parametrize("schema", [EventInputSchema, StoredEnvelopeSchema])
def test_run_scoped_type_without_run_id_is_rejected(schema):
    with pytest.raises(ValidationError) as caught:
        schema().load(stored(type="run_started", run_id=None))
    assert "run_id" in caught.value.messages


def test_run_scoped_input_with_run_id_left_out_is_rejected():
    assert "run_id" in input_errors(type="verify_pass")


def test_run_scoped_input_with_run_id_is_accepted():
    assert load_input(type="run_started", run_id="r1")["run_id"] == "r1"


def test_legacy_event_without_run_id_is_accepted():
    assert load_input()["run_id"] is None
    assert StoredEnvelopeSchema().load(stored(run_id=None))["run_id"] is None


def test_legacy_event_may_carry_a_run_id():
    assert load_input(type="tool_call", run_id="r1")["run_id"] == "r1"


@pytest.mark.parametrize(("bad_type",), [("bogus",), ("",), ("USER_MESSAGE",), (5,), (None,)])
def test_unknown_or_non_string_type_is_rejected(bad_type):
    assert "type" in input_errors(type=bad_type)


def test_missing_type_is_rejected():
    with pytest.raises(ValidationError) as caught:
        EventInputSchema().load({"payload": {}})
    assert "type" in caught.value.messages


# -- timestamp -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "normalised"), [
    ("2026-02-06T10:00:00Z", "2026-02-06T10:00:00Z"),
    ("2026-02-06T10:00:00z", "2026-02-06T10:00:00Z"),
    ("2026-02-06T12:00:00+02:00", "2026-02-06T10:00:00Z"),
    ("2026-02-06T04:30:00-05:30", "2026-02-06T10:00:00Z"),
    ("2026-02-06T23:30:00-01:00", "2026-02-07T00:30:00Z"),   # crosses midnight
    ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00Z"),   # crosses a year
    ("2026-02-06T10:00:00.250Z", "2026-02-06T10:00:00.25Z"),
    ("2026-02-06T11:00:00.123456+01:00", "2026-02-06T10:00:00.123456Z"),
    ("2026-02-06T10:00:00+00:00", "2026-02-06T10:00:00Z"),
])
def test_timestamp_is_normalised_to_the_same_instant_in_utc_with_z(given, normalised):
    assert load_input(timestamp=given)["timestamp"] == normalised
    assert StoredEnvelopeSchema().load(stored(timestamp=given))["timestamp"] == normalised


@pytest.mark.parametrize(("bad_timestamp",), [
    ("2026-02-06T10:00:00",),          # naive: no offset
    ("2026-02-06T10:00:00.5",),        # naive with a fraction
    ("2026-02-06",),                   # a date only
    ("10:00:00Z",),                    # a time only
    ("2026-13-06T10:00:00Z",),         # month 13
    ("2026-02-30T10:00:00Z",),         # no such day
    ("2026-02-06T25:00:00Z",),         # hour 25
    ("2026-02-06T10:00:00+24:00",),    # no such offset
    ("yesterday",),
    ("",),
    (1770372000,),                     # epoch seconds are not RFC 3339
])
def test_bad_timestamps_are_rejected(bad_timestamp):
    assert "timestamp" in input_errors(timestamp=bad_timestamp)
    assert "timestamp" in stored_errors(stored(timestamp=bad_timestamp))


@pytest.mark.parametrize("field", ["timestamp", "source"])
def test_stored_envelope_rejects_null_timestamp_and_source(field):
    assert field in stored_errors(stored(**{field: None}))


def test_input_timestamp_may_be_left_out():
    assert load_input()["timestamp"] is None


# -- payload ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad_payload",), [
    ("text",),
    (["a", "b"],),
    ([],),
    (5,),
    (1.5,),
    (True,),
    (None,),
])
def test_payload_must_be_an_object(bad_payload):
    assert "payload" in input_errors(payload=bad_payload)
    assert "payload" in stored_errors(stored(payload=bad_payload))


def test_payload_defaults_to_an_empty_object():
    assert load_input()["payload"] == {}


def test_payload_object_is_kept_as_given():
    payload = {"text": "hi", "n": 1, "nested": {"list": [1, 2.5, None, True, "x"]}}
    assert load_input(payload=payload)["payload"] == payload


@pytest.mark.parametrize(("bad_payload",), [
    ({"x": float("nan")},),
    ({"x": float("inf")},),
    ({"x": [1, float("-inf")]},),
    ({"x": {"y": float("nan")}},),
])
def test_payload_with_non_finite_number_is_rejected(bad_payload):
    assert "payload" in input_errors(payload=bad_payload)


def test_payload_nested_too_deep_is_rejected():
    payload: dict = {}
    for _ in range(MAX_DEPTH + 5):
        payload = {"a": payload}
    assert "payload" in input_errors(payload=payload)


# -- seq -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad_seq",), [
    (True,),
    (False,),
    (1.0,),
    (2.5,),
    (0,),
    (-1,),
    ("1",),
])
def test_bad_seq_is_rejected(bad_seq):
    assert "seq" in input_errors(seq=bad_seq)
    assert "seq" in stored_errors(stored(seq=bad_seq))


def test_seq_expectation_is_accepted_on_input():
    assert load_input(seq=7)["seq"] == 7


def test_stored_envelope_requires_a_seq():
    assert "seq" in stored_errors(stored(seq=None))


# -- keys and source -------------------------------------------------------------------------------

def test_envelope_keys_are_the_eight_in_order():
    assert ENVELOPE_KEYS == ("type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload")


@pytest.mark.parametrize(("unknown_key",), [("data",), ("Type",), ("extra",), ("runId",)])
def test_unknown_keys_are_rejected(unknown_key):
    assert unknown_key in input_errors(**{unknown_key: 1})
    assert unknown_key in stored_errors(stored(**{unknown_key: 1}))


@pytest.mark.parametrize("missing", ENVELOPE_KEYS)
def test_stored_envelope_requires_all_eight_keys(missing):
    envelope = stored()
    del envelope[missing]
    assert missing in stored_errors(envelope)


def test_a_complete_stored_envelope_loads_unchanged():
    envelope = stored(run_id="r1", type="run_started", seq=42)
    assert StoredEnvelopeSchema().load(envelope) == envelope


@pytest.mark.parametrize(("source",), [("a",), ("x" * 64,), ("emitter:worker-1",)])
def test_source_of_one_to_sixty_four_characters_is_accepted(source):
    assert load_input(source=source)["source"] == source


@pytest.mark.parametrize(("bad_source",), [("",), ("x" * 65,), (5,)])
def test_source_outside_one_to_sixty_four_characters_is_rejected(bad_source):
    assert "source" in input_errors(source=bad_source)
    assert "source" in stored_errors(stored(source=bad_source))


# -- strict JSON (jsoncodec.loads_strict) ----------------------------------------------------------

@pytest.mark.parametrize(("body",), [
    (b'{"payload": {"x": NaN}}',),
    (b'{"payload": {"x": Infinity}}',),
    (b'{"payload": {"x": -Infinity}}',),
    (b'[NaN]',),
])
def test_nan_and_infinity_are_rejected(body):
    with pytest.raises(BadRequest):
        loads_strict(body)


@pytest.mark.parametrize(("body",), [
    (b'{"type": "user_message", "type": "error"}',),
    (b'{"payload": {"a": 1, "a": 1}}',),
    (b'[{"x": 1}, {"y": {"z": 1, "z": 2}}]',),
])
def test_duplicate_keys_are_rejected(body):
    with pytest.raises(BadRequest):
        loads_strict(body)


def test_nesting_deeper_than_the_limit_is_rejected():
    body = ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()
    with pytest.raises(BadRequest):
        loads_strict(body)


def test_very_deep_nesting_is_rejected_without_recursion_error():
    body = ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()
    with pytest.raises(BadRequest):
        loads_strict(body)


def test_nesting_at_the_limit_is_accepted():
    body = ("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()
    value = loads_strict(body)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_bracket_text = st.text(alphabet=st.sampled_from('[]{}"\\ax\u00e9'), max_size=8)
_nested = st.recursive(st.none() | st.integers() | _bracket_text,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_bracket_text, inner, max_size=3),
                       max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=_nested, wrap=st.integers(0, 70), indent=st.sampled_from([None, 1]))
def test_the_depth_check_agrees_with_the_parsed_depth(value, wrap, indent):
    """Over any JSON value (strings full of brackets, quotes and escapes), wrapped to any depth:
    rejected exactly when its nesting is deeper than the limit."""
    for _ in range(wrap):
        value = [value]
    body = json.dumps(value, indent=indent, ensure_ascii=indent is None).encode()
    assert nesting_depth_exceeds(body, MAX_DEPTH) == (_depth(value) > MAX_DEPTH)
    if _depth(value) > MAX_DEPTH:
        with pytest.raises(BadRequest, match="deeper than"):
            loads_strict(body)
    else:
        assert loads_strict(body) == value


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"1", b","]),
                                                  max_size=300).map(b"".join))
def test_any_bytes_are_parsed_or_refused_with_bad_request(body):
    try:
        loads_strict(body)
    except BadRequest:
        pass


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = "[" * (MAX_DEPTH * 2)
    assert loads_strict(('{"text": "%s"}' % text).encode()) == {"text": text}


@pytest.mark.parametrize(("body",), [
    (b"\xff\xfe{}",),                   # not UTF-8
    (b'{"text": "\xc3"}',),             # a truncated UTF-8 sequence
    (b"{",),                            # malformed
    (b"",),                             # empty
    (b'{"a": 1,}',),                    # trailing comma
    (b"{'a': 1}",),                     # single quotes
])
def test_bad_bodies_are_bad_requests(body):
    with pytest.raises(BadRequest) as caught:
        loads_strict(body)
    assert caught.value.code == "bad_request"
    assert isinstance(caught.value, ValueError)


def test_well_formed_body_is_parsed():
    assert loads_strict('{"type": "user_message", "payload": {"text": "héllo", "n": 1.5}}'.encode()) == {
        "type": "user_message", "payload": {"text": "héllo", "n": 1.5}}


def test_timestamps_take_ascii_digits_only():
    from marshmallow import ValidationError

    from eventsvc.schemas import EventInputSchema

    with pytest.raises(ValidationError, match="RFC 3339"):
        EventInputSchema().load({"type": "status", "timestamp": "٢٠٢٦-02-06T10:00:00Z"})
