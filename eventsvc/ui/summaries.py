"""Run and session summaries folded from events, with the keys and rules of the run data layer.

Used by the console until the store keeps summaries itself; ``data`` is the one place that
chooses between the two, so nothing else changes when the switch is made.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

STATUS_BY_LIFECYCLE_TYPE = {
    "run_created": "created",
    "run_started": "running",
    "run_waiting_input": "waiting_input",
    "run_resumed": "running",
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
VERIFY_BY_TYPE = {"verify_start": "running", "verify_pass": "passed", "verify_fail": "failed"}
POLICY_KEY_BY_TYPE = {"tool_policy_blocked": "blocked", "tool_policy_warn": "warned"}


def new_run(run_id: str, session_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "session_id": session_id, "status": "unknown", "verify": None,
            "first_seq": None, "last_seq": None, "event_count": 0, "created_at": None,
            "started_at": None, "ended_at": None, "updated_at": None,
            "policy": {"blocked": 0, "warned": 0}, "counts": {}}


def fold_run(run: dict[str, Any], event: dict[str, Any]) -> None:
    """Apply one of the run's events (in seq order); a terminal status never changes again."""
    event_type, timestamp = event["type"], event["timestamp"]
    if run["first_seq"] is None:
        run["first_seq"] = event["seq"]
    run["last_seq"] = event["seq"]
    run["event_count"] += 1
    run["updated_at"] = timestamp
    run["counts"][event_type] = run["counts"].get(event_type, 0) + 1
    status = STATUS_BY_LIFECYCLE_TYPE.get(event_type)
    if status is not None and run["status"] not in TERMINAL_STATUSES:
        run["status"] = status
        if status in TERMINAL_STATUSES:
            run["ended_at"] = timestamp
    if event_type == "run_created" and run["created_at"] is None:
        run["created_at"] = timestamp
    if event_type == "run_started" and run["started_at"] is None:
        run["started_at"] = timestamp
    if event_type in VERIFY_BY_TYPE:
        run["verify"] = VERIFY_BY_TYPE[event_type]
    if event_type in POLICY_KEY_BY_TYPE:
        run["policy"][POLICY_KEY_BY_TYPE[event_type]] += 1


def fold_session(session_id: str, events: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(session summary, its run summaries in order of first seq) from all of a session's events."""
    session: dict[str, Any] = {"session_id": session_id, "first_seq": None, "last_seq": None, "event_count": 0,
                               "created_at": None, "updated_at": None, "run_count": 0, "active_runs": 0,
                               "closed": False}
    runs: dict[str, dict[str, Any]] = {}
    for event in events:
        if session["first_seq"] is None:
            session["first_seq"], session["created_at"] = event["seq"], event["timestamp"]
        session["last_seq"], session["updated_at"] = event["seq"], event["timestamp"]
        session["event_count"] += 1
        if event["type"] == "session_closed":
            session["closed"] = True
        run_id = event.get("run_id")
        if run_id is not None:
            if run_id not in runs:
                runs[run_id] = new_run(run_id, session_id)
            fold_run(runs[run_id], event)
    session["run_count"] = len(runs)
    session["active_runs"] = sum(1 for run in runs.values() if run["status"] not in TERMINAL_STATUSES)
    return session, list(runs.values())
