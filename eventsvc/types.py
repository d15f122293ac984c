"""The event type registry: which event names exist and which must carry a run_id.

The registry is data, not an enum, so a deployment can add its own names through
``EVENTSVC_EXTRA_EVENT_TYPES`` without a code change. Added names are never
run-scoped: the run lifecycle is ours to define.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

EXTRA_EVENT_TYPES_ENV = "EVENTSVC_EXTRA_EVENT_TYPES"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


@dataclass(frozen=True)
class EventType:
    name: str
    category: str  # legacy | run | verify | tool_policy | extra
    run_scoped: bool


class EventTypeSet(Mapping[str, EventType]):
    """An ordered, read-only set of event types: ``in`` and iteration work on names."""

    def __init__(self, types: Iterable[EventType]) -> None:
        self._types = {t.name: t for t in types}

    def __getitem__(self, name: str) -> EventType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"EventTypeSet({list(self._types)!r})"

    def is_run_scoped(self, name: str) -> bool:
        event_type = self._types.get(name)
        return event_type is not None and event_type.run_scoped


def _category(category: str, names: str, *, run_scoped: bool) -> list[EventType]:
    return [EventType(name, category, run_scoped) for name in names.split()]


LEGACY_EVENT_TYPES = EventTypeSet(_category("legacy", """
    session_created session_closed user_message assistant_message message_delta
    tool_call tool_result state_update error status
""", run_scoped=False))

RUN_SCOPED_EVENT_TYPES = EventTypeSet([
    *_category("run", """
        run_created run_started run_waiting_input run_resumed
        run_completed run_failed run_cancelled
    """, run_scoped=True),
    *_category("verify", "verify_start verify_pass verify_fail", run_scoped=True),
    *_category("tool_policy", "tool_policy_blocked tool_policy_warn", run_scoped=True),
])

BUILTIN_EVENT_TYPES = EventTypeSet([*LEGACY_EVENT_TYPES.values(), *RUN_SCOPED_EVENT_TYPES.values()])

RUN_TERMINAL_TYPES = frozenset({"run_completed", "run_failed", "run_cancelled"})


def parse_extra_names(value: str | Iterable[str] | None) -> list[str]:
    """Parse a comma-separated list of extra names; raises ValueError on a bad or built-in name."""
    if value is None:
        return []
    raw = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for name in (n.strip() for n in raw):
        if not name:
            continue
        if not _NAME.match(name):
            raise ValueError(
                f"{EXTRA_EVENT_TYPES_ENV}: {name!r} is not a valid event type name "
                "(lower-case letters, digits and '_', starting with a letter, at most 64)"
            )
        if name in BUILTIN_EVENT_TYPES:
            raise ValueError(f"{EXTRA_EVENT_TYPES_ENV}: {name!r} is already a built-in event type")
        if name not in names:
            names.append(name)
    return names


def build_registry(extra: str | Iterable[str] | None = None) -> EventTypeSet:
    """The 22 built-in types plus the deployment's extra ones (category ``extra``, not run-scoped)."""
    extras = [EventType(name, "extra", False) for name in parse_extra_names(extra)]
    return EventTypeSet([*BUILTIN_EVENT_TYPES.values(), *extras])


EVENT_TYPES = build_registry(os.environ.get(EXTRA_EVENT_TYPES_ENV))


def is_run_scoped(name: str) -> bool:
    """Whether events of this type must carry a run_id (False for unknown names)."""
    return RUN_SCOPED_EVENT_TYPES.is_run_scoped(name)
