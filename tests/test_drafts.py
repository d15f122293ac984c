"""Drafts: the log line spliced from one encode, and event ids made in bulk, equal the slow forms."""
from __future__ import annotations

import json
import uuid

from hypothesis import given, settings, strategies as st

from eventsvc.schemas import EventInputSchema
from eventsvc.store.drafts import new_event_ids, prepare

_SCHEMA = EventInputSchema()
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20) | st.sampled_from(
    [',"seq":null,', '","seq":null,"', '\\",\\"seq\\":null,', "é ✓ \u2028", "", "seq"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
# Keys include "seq": a payload {"a": 1, "seq": null, ...} holds ',"seq":null,' as well.
@given(payload=st.dictionaries(_TEXT, _JSON, max_size=5), source=_TEXT.filter(lambda text: 1 <= len(text) <= 64),
       run_id=st.none() | st.just("r-1"), seq=st.integers(1, 10**12))
def test_a_line_is_the_compact_json_of_the_stored_envelope(payload, source, run_id, seq):
    [draft] = prepare("s-1", [{"type": "tool_call" if run_id else "user_message", "run_id": run_id,
                               "source": source, "payload": payload}],
                      schema=_SCHEMA, default_source="api")
    stored = draft.stored(seq)
    expected = json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
    assert draft.line(seq) == expected
    assert list(json.loads(expected)) == ["type", "timestamp", "session_id", "run_id", "seq", "source",
                                          "event_id", "payload"]


def test_event_ids_made_in_bulk_are_version_4_uuids_in_uuid4s_form():
    ids = new_event_ids(1000)
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert new_event_ids(0) == []


def test_every_event_without_an_id_gets_its_own():
    drafts = prepare("s-1", [{"type": "user_message"}, {"type": "user_message", "event_id": "given-1"},
                             {"type": "user_message"}], schema=_SCHEMA, default_source="api")
    generated = [drafts[0].event_id, drafts[2].event_id]
    assert drafts[1].event_id == "given-1"
    assert len(set(generated)) == 2 and all(uuid.UUID(text).version == 4 for text in generated)
