"""The run lifecycle in one place: the status and verify state machines, and the graph the audit checks.

Summaries (kept in the index at append time) and the audit's lifecycle warnings both read
this module, so "what state is this run in" and "did this run behave" cannot drift apart.

A run's ``status`` follows its lifecycle events in seq order (each sets the status it names),
except that once a terminal event is seen nothing changes it any more. A run with no lifecycle
event yet is ``unknown``. ``verify`` is ``None`` until a verify event; then the latest wins.
Imports nothing of ours beyond the type names: it is data and two small functions.
"""
from __future__ import annotations

UNKNOWN = "unknown"
STATUS_BY_TYPE: dict[str, str] = {
    "run_created": "created",
    "run_started": "running",
    "run_waiting_input": "waiting_input",
    "run_resumed": "running",
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# The seven statuses a run can have (and a run listing may filter on): ``unknown`` before any lifecycle event.
STATUSES: tuple[str, ...] = ("created", "running", "waiting_input", "completed", "failed", "cancelled", UNKNOWN)
VERIFY_BY_TYPE: dict[str, str] = {"verify_start": "running", "verify_pass": "passed", "verify_fail": "failed"}
POLICY_KEY_BY_TYPE: dict[str, str] = {"tool_policy_blocked": "blocked", "tool_policy_warn": "warned"}


def next_status(status: str, event_type: str) -> str:
    """The status after an event of ``event_type``: terminal statuses never change."""
    if status in TERMINAL_STATUSES:
        return status
    return STATUS_BY_TYPE.get(event_type, status)


def next_verify(verify: str | None, event_type: str) -> str | None:
    """The verify state after an event of ``event_type``: the latest verify event wins."""
    return VERIFY_BY_TYPE.get(event_type, verify)


def is_active(status: str) -> bool:
    """Whether a run in ``status`` still counts as active in its session (not terminal)."""
    return status not in TERMINAL_STATUSES


# -- the graph the audit warns against -----------------------------------------------------------
# run_created -> run_started -> (run_waiting_input -> run_resumed)* -> run_completed | run_failed |
# run_cancelled; cancel from any live state. The states are the statuses above (``unknown`` before any
# lifecycle event); a step the graph does not allow is warned about and still sets the status.

ALLOWED_BEFORE: dict[str, frozenset[str]] = {
    "run_created": frozenset({UNKNOWN}),
    "run_started": frozenset({"created"}),
    "run_waiting_input": frozenset({"running"}),
    "run_resumed": frozenset({"waiting_input"}),
    "run_completed": frozenset({"running"}),
    "run_failed": frozenset({"running"}),
    "run_cancelled": frozenset({"created", "running", "waiting_input"}),
}
ALLOWED_AFTER: dict[str, list[str]] = {
    state: [name for name, before in ALLOWED_BEFORE.items() if state in before]
    for state in ("created", "running", "waiting_input")
}
