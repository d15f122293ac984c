"""EventEmitter and run_scope: where emitted events get their run_id, event_id and source."""
from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from pathlib import Path

import pytest

from eventsvc import EventEmitter, run_scope
from eventsvc.emitter import current_run_id
from eventsvc.errors import ValidationFailed


@pytest.fixture
def emitter(store) -> EventEmitter:
    return EventEmitter(store)


def segment_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "segments").rglob("*.jsonl"))


def test_legacy_call_keeps_working(emitter, store):
    event = emitter.emit("s1", "user_message", {"text": "hi"})
    assert event["type"] == "user_message"
    assert event["session_id"] == "s1"
    assert event["run_id"] is None
    assert event["payload"] == {"text": "hi"}
    assert event["seq"] == 1
    assert store.get_events_by_session("s1") == [event]


def test_emit_returns_the_stored_envelope(emitter, store):
    event = emitter.emit("s1", "run_started", {"step": 1}, run_id="r1")
    assert list(event) == ["type", "timestamp", "session_id", "run_id", "seq", "source", "event_id", "payload"]
    assert store.get_events_by_run("s1", "r1") == [event]


def test_emit_passes_an_explicit_run_id(emitter, store):
    event = emitter.emit("s1", "run_started", run_id="r1")
    assert event["run_id"] == "r1"
    assert [e["event_id"] for e in store.get_events_by_run("s1", "r1")] == [event["event_id"]]


def test_emit_takes_the_run_id_from_run_scope(emitter, store):
    with run_scope("r1"):
        started = emitter.emit("s1", "run_started")
        message = emitter.emit("s1", "assistant_message", {"text": "working"})
    assert started["run_id"] == "r1"
    assert message["run_id"] == "r1"
    assert [e["seq"] for e in store.get_events_by_run("s1", "r1")] == [1, 2]


def test_run_scope_is_available_on_the_emitter(emitter):
    with emitter.run_scope("r1"):
        assert emitter.emit("s1", "run_started")["run_id"] == "r1"


def test_explicit_run_id_beats_the_scope(emitter):
    with run_scope("outer"):
        event = emitter.emit("s1", "run_started", run_id="explicit")
    assert event["run_id"] == "explicit"


def test_nested_scopes_use_the_innermost_and_restore_the_outer(emitter):
    with run_scope("outer"):
        first = emitter.emit("s1", "run_started")
        with run_scope("inner"):
            second = emitter.emit("s1", "run_started")
        third = emitter.emit("s1", "run_completed")
    assert [first["run_id"], second["run_id"], third["run_id"]] == ["outer", "inner", "outer"]


def test_scope_is_restored_after_exit(emitter):
    with run_scope("r1") as scoped:
        assert scoped == "r1"
        assert current_run_id() == "r1"
    assert current_run_id() is None
    assert emitter.emit("s1", "user_message", {"text": "after"})["run_id"] is None


def test_scope_is_restored_after_an_exception(emitter):
    with pytest.raises(RuntimeError):
        with run_scope("r1"):
            raise RuntimeError("boom")
    assert current_run_id() is None
    assert emitter.emit("s1", "status")["run_id"] is None


def test_scopes_in_concurrent_asyncio_tasks_do_not_mix(emitter, store):
    async def run(run_id: str, started: asyncio.Event, other_started: asyncio.Event) -> list[dict]:
        with run_scope(run_id):
            first = emitter.emit("s1", "run_started")
            started.set()
            await other_started.wait()  # both scopes are now open at once
            second = emitter.emit("s1", "run_completed")
        return [first, second]

    async def main() -> tuple[list[dict], list[dict]]:
        a_started, b_started = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(run("ra", a_started, b_started), run("rb", b_started, a_started))

    ra, rb = asyncio.run(main())
    assert [e["run_id"] for e in ra] == ["ra", "ra"]
    assert [e["run_id"] for e in rb] == ["rb", "rb"]
    assert {e["seq"] for e in store.get_events_by_run("s1", "ra")} == {e["seq"] for e in ra}
    assert {e["seq"] for e in store.get_events_by_run("s1", "rb")} == {e["seq"] for e in rb}


def test_asyncio_task_inherits_the_scope_it_was_created_in(emitter):
    async def child() -> dict:
        return emitter.emit("s1", "run_started")

    async def main() -> dict:
        with run_scope("r1"):
            task = asyncio.create_task(child())
        return await task

    assert asyncio.run(main())["run_id"] == "r1"


def test_thread_with_copied_context_keeps_the_scope(emitter):
    results: list[dict] = []
    with run_scope("r1"):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run,
                              args=(lambda: results.append(emitter.emit("s1", "run_started")),))
    thread.start()
    thread.join()
    assert [e["run_id"] for e in results] == ["r1"]
    assert current_run_id() is None


def test_scope_opened_in_a_thread_does_not_leak_into_the_caller(emitter):
    def in_thread() -> None:
        with run_scope("thread-run"):
            emitter.emit("s1", "run_started")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert current_run_id() is None
    assert emitter.emit("s1", "user_message")["run_id"] is None


def test_emit_generates_a_uuid4_event_id(emitter):
    first = emitter.emit("s1", "user_message")
    second = emitter.emit("s1", "user_message")
    for event in (first, second):
        parsed = uuid.UUID(event["event_id"])
        assert parsed.version == 4
        assert str(parsed) == event["event_id"]
    assert first["event_id"] != second["event_id"]


def test_emit_keeps_a_given_event_id(emitter):
    assert emitter.emit("s1", "user_message", event_id="my-id-1")["event_id"] == "my-id-1"


def test_default_source_is_session(emitter):
    assert emitter.emit("s1", "user_message")["source"] == "session"


def test_emitter_source_and_per_call_source(store):
    emitter = EventEmitter(store, source="agent")
    assert emitter.emit("s1", "user_message")["source"] == "agent"
    assert emitter.emit("s1", "user_message", source="tool-runner")["source"] == "tool-runner"


def test_emit_passes_a_timestamp_normalised_to_utc(emitter):
    event = emitter.emit("s1", "user_message", timestamp="2026-02-06T12:00:00+02:00")
    assert event["timestamp"] == "2026-02-06T10:00:00Z"


def test_emit_without_payload_stores_an_empty_object(emitter):
    assert emitter.emit("s1", "session_created")["payload"] == {}


@pytest.mark.parametrize(("run_scoped_type",), [("run_started",), ("verify_fail",), ("tool_policy_warn",)])
def test_run_scoped_type_without_run_id_outside_a_scope_raises_and_writes_nothing(
        emitter, store, data_dir, run_scoped_type):
    emitter.emit("s1", "user_message", {"text": "before"})
    before = {path: path.read_bytes() for path in segment_files(data_dir)}
    with pytest.raises(ValueError) as caught:
        emitter.emit("s1", run_scoped_type)
    assert isinstance(caught.value, ValidationFailed)
    assert "run_id" in caught.value.details
    assert store.last_seq("s1") == 1
    assert {path: path.read_bytes() for path in segment_files(data_dir)} == before


def test_run_scoped_type_in_a_new_session_without_run_id_creates_nothing(emitter, store, data_dir):
    with pytest.raises(ValueError):
        emitter.emit("fresh", "run_created")
    assert store.last_seq("fresh") == 0
    assert not (data_dir / "segments" / "fresh").exists()
