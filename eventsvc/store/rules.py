"""The rules every backend applies before it writes: re-sends, expected seqs, run ownership, sizes, page bounds.

Both backends call these with what they know of the session (its last seq, stored envelopes of
re-sent ids, owners of the runs involved), so an append is refused for the same reasons, with
the same error codes and details, whichever backend stores it. Each raises the domain error
that stops the append before anything is written.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import EventIdConflict, EventTooLarge, RunSessionConflict, SeqConflict, ValidationFailed
from .drafts import Draft

# A type-filtered page looks at no more than this many of the session's (or run's) events past
# since_seq, matching or not, so that a rare type cannot turn one request into a scan of the log.
TYPE_FILTER_WINDOW = 10_000


def find_resent(drafts: list[Draft], stored: Iterable[dict]) -> dict[str, dict]:
    """Drafts whose event_id is already stored: same content is a re-send, other content a conflict."""
    by_id = {env["event_id"]: env for env in stored}
    resent: dict[str, dict] = {}
    for draft in drafts:
        previous = by_id.get(draft.event_id)
        if previous is None:
            continue
        if not draft.same_content(previous):
            raise EventIdConflict(
                f"event_id {draft.event_id!r} is already stored with different content (seq {previous['seq']})",
                {"event_id": draft.event_id, "seq": previous["seq"]})
        if draft.expected_seq is not None and draft.expected_seq != previous["seq"]:
            raise SeqConflict(
                f"event_id {draft.event_id!r} is stored at seq {previous['seq']}, not {draft.expected_seq}",
                {"event_id": draft.event_id, "expected_seq": draft.expected_seq, "seq": previous["seq"]})
        resent[draft.event_id] = previous
    return resent


def check_expected_seqs(fresh: list[Draft], last_seq: int) -> None:
    """Optimistic concurrency: an input seq must be the seq the event is about to get."""
    for next_seq, draft in enumerate(fresh, last_seq + 1):
        if draft.expected_seq is not None and draft.expected_seq != next_seq:
            raise SeqConflict(f"expected seq {draft.expected_seq}, but the next seq is {next_seq}",
                              {"expected_seq": draft.expected_seq, "next_seq": next_seq, "last_seq": last_seq})


def runs_to_claim(session_id: str, fresh: list[Draft], last_seq: int,
                  owners: dict[str, str]) -> list[tuple[str, int]]:
    """(run_id, first seq) of the runs this append starts; raises RunSessionConflict for another's run.

    ``owners`` holds the owning session of every run of ``fresh`` that has one (and may hold more).
    """
    first_seq: dict[str, int] = {}
    for seq, draft in enumerate(fresh, last_seq + 1):
        if draft.run_id is not None:
            first_seq.setdefault(draft.run_id, seq)
    if not first_seq:
        return []
    for run_id in first_seq:
        owner = owners.get(run_id)
        if owner is not None and owner != session_id:
            raise RunSessionConflict(f"run {run_id!r} belongs to session {owner!r}",
                                     {"run_id": run_id, "session_id": owner})
    return [(run_id, seq) for run_id, seq in first_seq.items() if run_id not in owners]


def check_sizes(fresh: list[Draft], lines: list[bytes], max_event_bytes: int) -> None:
    sizes = {draft.position: len(line) - 1 for draft, line in zip(fresh, lines) if len(line) - 1 > max_event_bytes}
    if sizes:
        raise EventTooLarge(f"an event is larger than the limit of {max_event_bytes} bytes",
                            {"limit": max_event_bytes, "sizes": sizes})


MAX_INTEGER = 2**63 - 1  # the largest seq either backend can store (SQLite's integer, PostgreSQL's bigint)


def check_page_bounds(since_seq: int, limit: int) -> None:
    problems = {}
    if not isinstance(since_seq, int) or isinstance(since_seq, bool) or not 0 <= since_seq <= MAX_INTEGER:
        problems["since_seq"] = [f"must be an integer from 0 to {MAX_INTEGER}"]
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit < MAX_INTEGER:
        problems["limit"] = [f"must be an integer from 1 to {MAX_INTEGER - 1}"]  # a page reads limit + 1
    if problems:
        raise ValidationFailed("invalid page bounds", problems)
