"""stored_envelope_is_valid: the auditor's plain-Python envelope check says exactly what
StoredEnvelopeSchema says, on valid envelopes and on every kind of broken one."""
from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from eventsvc.schemas import ENVELOPE_KEYS, StoredEnvelopeSchema, stored_envelope_is_valid
from eventsvc.types import EVENT_TYPES, build_registry

REGISTRIES = {"built-in": EVENT_TYPES, "with extras": build_registry("deploy_note,deploy_ping")}
SCHEMAS = {name: StoredEnvelopeSchema(event_types=registry) for name, registry in REGISTRIES.items()}


def schema_accepts(obj, registry_name: str = "built-in") -> bool:
    try:
        SCHEMAS[registry_name].load(obj)
    except ValidationError:
        return False
    return True


# -- strategies ----------------------------------------------------------------------------------

ID_FIRST = string.ascii_letters + string.digits
ID_ALPHABET = ID_FIRST + "._:-"
valid_ids = st.builds(str.__add__, st.sampled_from(ID_FIRST), st.text(ID_ALPHABET, max_size=127))
any_ids = st.one_of(valid_ids, st.text(max_size=6), st.text(ID_ALPHABET, min_size=126, max_size=130),
                    st.sampled_from(["a" * 128, "a" * 129, "-a", ".a", "a/b", "a b", "é", "a\n", ""]))

# Any digit the regex's \d matches, not only ASCII: int() takes them too, so both paths must agree.
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@st.composite
def timestamps(draw) -> str:
    """RFC 3339-shaped text around every boundary: month 0-13, day 0-32, hour 0-25, offsets to 25:61."""
    year = draw(st.sampled_from([0, 1, 999, 1000, 1999, 2000, 2024, 2026, 2100, 9999]) | st.integers(0, 9999))
    parts = (f"{year:04d}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"
             f"{draw(st.sampled_from('Tt '))}{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}"
             f":{draw(st.integers(0, 61)):02d}")
    fraction = draw(st.none() | st.text("0123456789", min_size=1, max_size=9))
    if fraction is not None:
        parts += "." + fraction
    offset = draw(st.sampled_from(["Z", "z"]) | st.builds(
        "{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 61)))
    text = parts + offset
    if draw(st.integers(0, 19)) == 0:
        text = text.translate(ARABIC_INDIC)
    return text


json_scalars = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=4), children, max_size=3), max_leaves=8)


def nested(depth: int, leaf=1):
    """A value whose innermost leaf sits ``depth`` containers down (json_problem's limit is 64)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


payloads = st.one_of(
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.integers(60, 66).map(lambda depth: {"deep": nested(depth)}),
    st.integers(60, 66).map(lambda depth: {"deep": nested(depth, leaf={})}),
)


@st.composite
def envelopes(draw, registry_name: str = "built-in") -> dict:
    """A stored envelope that is mostly valid: every field drawn from around its rule."""
    registry = REGISTRIES[registry_name]
    name = draw(st.sampled_from(list(registry)))
    run_scoped = registry.is_run_scoped(name)
    return {
        "type": name,
        "timestamp": draw(timestamps()),
        "session_id": draw(valid_ids),
        "run_id": draw(valid_ids if run_scoped else st.none() | valid_ids),
        "seq": draw(st.integers(1, 2 ** 63)),
        "source": draw(st.text(min_size=1, max_size=8) | st.text(min_size=62, max_size=66)),
        "event_id": draw(valid_ids),
        "payload": draw(payloads),
    }


SPECIAL_VALUES = [None, True, False, 0, -1, 1, 1.0, 2.5, "", "a", "a" * 64, "a" * 65, [], {}, [1], {"a": 1},
                  "bogus_type", "run_started", "deploy_note", "2026-02-06T10:00:00Z", "2026-02-06T12:00:00+02:00"]


@st.composite
def mutated(draw, registry_name: str = "built-in"):
    """A valid-ish envelope with 0-3 of: a key dropped, a key added, a field replaced; or any JSON value."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    envelope = draw(envelopes(registry_name))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["drop", "add", "set", "set"]))
        key = draw(st.sampled_from(ENVELOPE_KEYS))
        if kind == "drop":
            envelope.pop(key, None)
        elif kind == "add":
            envelope[draw(st.text(max_size=8))] = draw(json_values)
        else:
            envelope[key] = draw(st.sampled_from(SPECIAL_VALUES) | json_values | any_ids | timestamps())
    # What the auditor sees is what json.loads returns.
    return json.loads(json.dumps(envelope))


# -- the agreement ------------------------------------------------------------------------------

@pytest.mark.parametrize(("registry_name",), [("built-in",), ("with extras",)])
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_check_agrees_with_the_schema(registry_name, data):
    obj = data.draw(mutated(registry_name))
    assert stored_envelope_is_valid(obj, REGISTRIES[registry_name]) == schema_accepts(obj, registry_name), obj


@settings(max_examples=1000, deadline=None)
@given(text=timestamps())
def test_fast_check_agrees_on_timestamps(text):
    envelope = with_timestamp(text)
    assert stored_envelope_is_valid(envelope) == schema_accepts(envelope)


def with_timestamp(text: str) -> dict:
    return {"type": "status", "timestamp": text, "session_id": "s", "run_id": None, "seq": 1, "source": "x",
            "event_id": "e", "payload": {}}


def test_the_generators_reach_both_answers():
    """The agreement tests are not vacuous: they see envelopes the schema accepts and ones it rejects."""
    quick = settings(database=None, max_examples=500)
    assert schema_accepts(find(mutated(), schema_accepts, settings=quick))
    assert not schema_accepts(find(mutated(), lambda obj: not schema_accepts(obj), settings=quick))
    assert schema_accepts(with_timestamp(find(timestamps(), lambda t: schema_accepts(with_timestamp(t)),
                                              settings=quick)))
    assert not schema_accepts(with_timestamp(find(timestamps(), lambda t: not schema_accepts(with_timestamp(t)),
                                                  settings=quick)))


# -- the rules, case by case ----------------------------------------------------------------------

def stored(**changes) -> dict:
    envelope = {"type": "user_message", "timestamp": "2026-02-06T10:00:00Z", "session_id": "s1", "run_id": None,
                "seq": 1, "source": "api", "event_id": "e1", "payload": {"text": "hi"}}
    envelope.update(changes)
    return envelope


CASES = [
    (stored(), True),
    (stored(type="run_started", run_id="r1"), True),
    (stored(type="run_started", run_id=None), False),
    (stored(type="bogus"), False),
    (stored(type=None), False),
    (stored(timestamp="2026-02-06T10:00:00.123456789z"), True),
    (stored(timestamp="2026-02-06 10:00:00+01:00"), True),
    (stored(timestamp="2024-02-29T10:00:00Z"), True),
    (stored(timestamp="2026-02-29T10:00:00Z"), False),
    (stored(timestamp="2026-02-06T24:00:00Z"), False),
    (stored(timestamp="2026-02-06T10:00:60Z"), False),
    (stored(timestamp="0000-01-01T00:00:00Z"), False),
    (stored(timestamp="0001-01-01T00:30:00+01:00"), False),  # before year 1 in UTC
    (stored(timestamp="2026-02-06T10:00:00+24:00"), False),
    (stored(timestamp="2026-02-06T10:00:00"), False),
    (stored(timestamp="٢٠٢٦-02-06T10:00:00Z"), False),  # ASCII digits only: [0-9], not \d
    (stored(seq=0), False),
    (stored(seq=True), False),
    (stored(seq=1.0), False),
    (stored(seq="1"), False),
    (stored(source=""), False),
    (stored(source="x" * 64), True),
    (stored(source="x" * 65), False),
    (stored(event_id="a b"), False),
    (stored(session_id="a" * 129), False),
    (stored(run_id=""), False),
    (stored(payload=[]), False),
    (stored(payload=None), False),
    (stored(payload={"deep": nested(63)}), True),
    (stored(payload={"deep": nested(64)}), False),
    (stored(payload={"n": 1.5, "list": [1, "a", None]}), True),
    ({**stored(), "extra": 1}, False),
    ({key: value for key, value in stored().items() if key != "source"}, False),
    ([stored()], False),
    ("text", False),
]


@pytest.mark.parametrize(("envelope", "valid"), CASES)
def test_fast_check_follows_the_rule(envelope, valid):
    assert stored_envelope_is_valid(envelope) is valid
    assert schema_accepts(envelope) is valid


def test_a_timestamp_seen_valid_is_not_taken_for_a_valid_id():
    """The check remembers recent valid values; a timestamp must not pass later as a session id."""
    timestamp = "2026-02-06T12:00:00+02:00"
    assert stored_envelope_is_valid(stored(timestamp=timestamp))
    assert not stored_envelope_is_valid(stored(session_id=timestamp))
    assert stored_envelope_is_valid(stored(session_id="2026-02-06T10:00:00Z"))  # a valid id and timestamp


def test_registry_extras_count_and_are_not_run_scoped():
    extras = REGISTRIES["with extras"]
    assert stored_envelope_is_valid(stored(type="deploy_note"), extras)
    assert not stored_envelope_is_valid(stored(type="deploy_note"), EVENT_TYPES)


# -- the append hot path: load_event_input ------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from eventsvc.schemas import EventInputSchema, load_event_input  # noqa: E402

_INPUT_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-3, max_value=10**6), st.floats(allow_nan=True),
    st.sampled_from(["user_message", "run_started", "deploy_note", "", "a" * 129, "s1", "r-1", ".x", "a/b",
                     "2026-02-06T12:00:00+02:00", "2026-02-06T10:00:00Z", "0999-01-01T00:00:00.5Z",
                     "2026-13-01T00:00:00Z", "2026-02-06T10:00:00", "x" * 64, "x" * 65]),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=4), st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=4)),
                    max_size=3),
    st.lists(st.integers(), max_size=2),
)
_INPUT_OBJECTS = st.dictionaries(
    st.sampled_from(["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload", "extra"]),
    _INPUT_VALUES, max_size=8)


def _schema_load(obj):
    try:
        return EventInputSchema().load(obj)
    except Exception:  # noqa: BLE001 - any rejection counts
        return None


@settings(max_examples=400, deadline=None)
@given(_INPUT_OBJECTS)
def test_fast_input_load_equals_the_schema_whenever_it_answers(obj):
    fast = load_event_input(obj)
    if fast is not None:
        assert fast == _schema_load(obj), obj


@pytest.mark.parametrize("obj", [
    {"type": "user_message"},
    {"type": "run_started", "run_id": "r1", "payload": {"phase": "x", "n": 1.5, "deep": {"a": [1, None]}}},
    {"type": "status", "timestamp": "2026-02-06T12:00:00.120+02:00", "session_id": "s1", "seq": 3,
     "source": "agent", "event_id": "e-1", "run_id": None},
])
def test_common_inputs_take_the_fast_path_and_match_the_schema(obj):
    assert load_event_input(obj) is not None
    assert load_event_input(obj) == EventInputSchema().load(obj)


@pytest.mark.parametrize("obj", [
    {"type": "run_started"}, {"type": "nope"}, {"type": "status", "payload": "x"}, {"type": "status", "seq": True},
    {"type": "status", "source": None}, {"type": "status", "extra": 1}, {"type": "status", "timestamp": "yesterday"},
])
def test_inputs_the_schema_rejects_are_left_to_the_schema(obj):
    assert load_event_input(obj) is None


# -- the read hot path: load_page_query ---------------------------------------------------------

from eventsvc.schemas import PageQuerySchema, load_page_query  # noqa: E402

_QUERY_VALUES = st.one_of(st.sampled_from(["0", "1", "100", "1000", "1001", "60", "61", "00", "-1", "1.5", " 1",
                                           "+1", "1_0", "٣", "", "abc", "9" * 19, "0.5"]), st.text(max_size=4))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["since_seq", "limit", "wait", "other"]), _QUERY_VALUES, max_size=4))
def test_fast_query_load_equals_the_schema_whenever_it_answers(args):
    fast = load_page_query(args)
    if fast is not None:
        assert fast == PageQuerySchema().load(args), args


def test_plain_queries_take_the_fast_path():
    assert load_page_query({}) == {"since_seq": 0, "limit": 100, "wait": 0.0}
    assert load_page_query({"since_seq": "5", "limit": "1000", "wait": "60"}) == {"since_seq": 5, "limit": 1000,
                                                                                  "wait": 60.0}
    assert load_page_query({"limit": "0"}) is None and load_page_query({"x": "1"}) is None
