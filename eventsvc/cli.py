"""The ``eventsvc`` command: operate on a data folder without the HTTP service.

Exit codes: 0 clean, 1 findings, 2 usage or I/O error (one line on stderr, no traceback).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

from .config import is_database_url
from .errors import EventSvcError
from .printable import printable

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
SERVER_STACK = frozenset({"flask", "werkzeug", "peewee", "marshmallow", "gunicorn"})  # the `server` extra


def data_dir_option(command: Callable) -> Callable:
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("EVENTSVC_DATA_DIR", "./data"), show_default="$EVENTSVC_DATA_DIR or ./data",
        help="The data folder (segments/, index.sqlite3).")(command)


def store_options(command: Callable) -> Callable:
    """``--data-dir`` or ``--database``: the commands that read either backend."""
    command = click.option(
        "--database", metavar="URL", default=None,
        help="A PostgreSQL store (postgresql://...). Default: $EVENTSVC_DATABASE_URL, when --data-dir is not "
             "given (the store the server would use).")(command)
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="The data folder (segments/, index.sqlite3). Default: $EVENTSVC_DATA_DIR or ./data, unless "
             "--database is given or $EVENTSVC_DATABASE_URL is set.")(command)


def store_target(data_dir: Path | None, database: str | None) -> Path | str:
    """The store a command reads: the data folder or the URL given, else the one the server would use
    (EVENTSVC_DATABASE_URL when set, else EVENTSVC_DATA_DIR or ./data). Both given: exit 2."""
    if data_dir is not None and database is not None:
        fail("give --data-dir or --database, not both")
    if data_dir is not None:
        return data_dir
    if database is None:
        database = os.environ.get("EVENTSVC_DATABASE_URL", "").strip() or None
        if database is None:
            default = Path(os.environ.get("EVENTSVC_DATA_DIR") or "./data")
            if not (default / "segments").is_dir():
                fail(f"no store given: pass --data-dir DIR or --database URL (or set EVENTSVC_DATA_DIR or "
                     f"EVENTSVC_DATABASE_URL); {default} is not an eventsvc data folder (no segments/ inside)")
            return default
        if not is_database_url(database):
            fail("EVENTSVC_DATABASE_URL must be a postgresql:// (or postgres://) URL")
    elif not is_database_url(database):
        fail("--database must be a postgresql:// (or postgres://) URL")
    return database


def open_database(url: str, **options: Any):
    """The PostgresStore at ``url``; an unreachable server or a database without the schema is one line, exit 2."""
    from .store import open_store as open_any
    from .store.postgres.connect import Options, connect

    # The store's pool would only say "unavailable; retry shortly" (and log each retry): one direct attempt says why.
    connect(url, Options(pool_size=1), say_why=True).close()
    return open_any(url, pool_size=2, **options)


def open_target(target: Path | str):
    """The store of a data folder (see ``open_store``) or of a PostgreSQL URL (see ``open_database``)."""
    return open_database(target) if isinstance(target, str) else open_store(target)


def format_option(command: Callable) -> Callable:
    return click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="Human-readable text or one JSON document.")(command)


def one_line_errors(command: Callable) -> Callable:
    """Turn expected failures into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EventSvcError as exc:
            fail(exc.message)
        except OSError as exc:
            fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, ImportError):
            raise  # a missing server-stack module is worded by the group ("needs the server extra")
        except Exception as exc:  # never a traceback: a folder from elsewhere may hold anything
            fail(f"unexpected {type(exc).__name__}: {exc}")

    return wrapper


def fail(message: str) -> NoReturn:
    click.echo(printable(f"eventsvc: {message}"), err=True)
    sys.exit(EXIT_ERROR)


def warn(message: str) -> None:
    click.echo(printable(f"eventsvc: warning: {message}"), err=True)


def segment_size(path: Path) -> int:
    from .store.files.segments import file_size

    return file_size(path)


def max_line() -> int:
    """The longest line the tools parse: the service's EVENTSVC_MAX_EVENT_BYTES (its default if unset or bad)."""
    from .store.files.untrusted import DEFAULT_MAX_LINE

    try:
        return max(1, int(os.environ.get("EVENTSVC_MAX_EVENT_BYTES", "")))
    except ValueError:
        return DEFAULT_MAX_LINE


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def open_store(data_dir: Path, *, writing: bool = False):
    """The store of ``data_dir``; a tool that writes first refuses a folder holding a link or
    special file where the store keeps its own files (exit 2), so nothing outside is touched."""
    from .store import EventStore
    from .store.files.recovery import check_data_folder

    if not (data_dir / "segments").is_dir():
        fail(f"{data_dir} is not an eventsvc data folder (no segments/ inside)")
    if writing:
        check_data_folder(data_dir)
    return EventStore(data_dir)


class OneLineGroup(click.Group):
    """Usage errors in one line on stderr (``eventsvc: ...; see --help``) and exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "eventsvc"
            click.echo(f"eventsvc: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(EXIT_ERROR)
        except click.Abort:
            click.echo("eventsvc: aborted", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            click.echo(f"eventsvc: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except ModuleNotFoundError as exc:  # a client-only install running a server command
            if (exc.name or "").partition(".")[0] not in SERVER_STACK:
                raise
            click.echo(f"eventsvc: this command needs the server extra (pip install '.[server]'): {exc}", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate on an eventsvc data folder: audit, reindex, export, stats, seal, sessions, runs, serve."""
    # The store logs for servers; a command says what went wrong itself, in one line.
    logging.getLogger("eventsvc").addHandler(logging.NullHandler())


@main.command()
@data_dir_option
@click.option("--wait", "wait_seconds", type=float, default=10.0, show_default=True,
              help="Seconds to wait for in-flight appends before giving up.")
@one_line_errors
def reindex(data_dir: Path, wait_seconds: float) -> None:
    """Rebuild the SQLite index from the segments.

    Builds a new index file beside the old one and swaps its rows in with one transaction, so a
    crash halfway leaves the old index usable. Safe while the server runs: it takes the store
    lock (appends wait meanwhile), or gives up with exit code 2 after --wait seconds.
    """
    store = open_store(data_dir, writing=True)
    try:
        with byte_progress(store.log_bytes, "reindex") as advance:
            report = store.reindex(wait_seconds=wait_seconds, on_bytes=advance)
    finally:
        store.close()
    click.echo(f"indexed {report.events} events in {report.sessions} sessions in {report.seconds:.2f}s")
    for session_id, reason in sorted(report.damaged.items()):
        click.echo(f"session {session_id}: indexed up to a line that cannot be indexed: {reason}", err=True)
    sys.exit(EXIT_FINDINGS if report.damaged else EXIT_CLEAN)


@main.command()
@data_dir_option
@click.option("--session", "session_ids", multiple=True, metavar="S", help="Seal only this session (repeatable).")
@one_line_errors
def seal(data_dir: Path, session_ids: tuple[str, ...]) -> None:
    """Seal what each session's active segment holds so far (before shipping a folder).

    A later `eventsvc audit` checks that the sealed prefix is unchanged.
    """
    store = open_store(data_dir, writing=True)
    try:
        known = set(store.session_ids())
        unknown = [session_id for session_id in session_ids if session_id not in known]
        if unknown:
            fail(f"no such session in {data_dir}: {', '.join(map(repr, unknown))} (nothing sealed)")
        for session_id in session_ids or sorted(known):
            sealed = store.seal_active(session_id)
            if sealed is None:
                click.echo(f"{session_id}: nothing to seal")
            else:
                click.echo(f"{session_id}: sealed {sealed['segment']} ({sealed['events']} events, "
                           f"seq {sealed['first_seq']}-{sealed['last_seq']}, {sealed['bytes']} bytes)")
    finally:
        store.close()


# -- sessions and runs (read from the index's summaries) ---------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _all_pages(fetch: Callable[[str | None], Any], limit: int | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while limit is None or len(items) < limit:
        page = fetch(cursor)
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return items[:limit]


def _limit_option(command: Callable) -> Callable:
    return click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                        help="At most N (default: all).")(command)


@main.command("sessions")
@store_options
@format_option
@_limit_option
@one_line_errors
def sessions_command(data_dir: Path | None, database: str | None, output_format: str, limit: int | None) -> None:
    """List sessions with their summaries, most recently appended-to first (from the index or the
    database's session rows; no server)."""
    store = open_target(store_target(data_dir, database))
    try:
        sessions = _all_pages(lambda cursor: store.list_sessions(1000, cursor), limit)
    finally:
        store.close()
    if output_format == "json":
        echo_json({"sessions": sessions})
        return
    _table([[s["session_id"], str(s["event_count"]), str(s["run_count"]), str(s["active_runs"]),
             "yes" if s["closed"] else "no", s["created_at"] or "-", s["updated_at"] or "-"] for s in sessions],
           ["SESSION", "EVENTS", "RUNS", "ACTIVE", "CLOSED", "CREATED", "UPDATED"])


@main.command("runs")
@store_options
@format_option
@_limit_option
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="Only runs in this status (repeatable, or comma-separated): created, running, waiting_input, "
                   "completed, failed, cancelled, unknown.")
@click.option("--session", "session_id", metavar="S", help="Only this session's runs.")
@one_line_errors
def runs_command(data_dir: Path | None, database: str | None, output_format: str, limit: int | None,
                 statuses: tuple[str, ...], session_id: str | None) -> None:
    """List runs with their status and summaries, most recently appended-to first (from the index or the
    database's run rows; no server)."""
    wanted = [name for given in statuses for name in given.split(",")] if statuses else None
    store = open_target(store_target(data_dir, database))
    try:
        runs = _all_pages(lambda cursor: store.list_runs(session_id=session_id, statuses=wanted, limit=1000,
                                                         cursor=cursor), limit)
    finally:
        store.close()
    if output_format == "json":
        echo_json({"runs": runs})
        return
    _table([[r["run_id"], r["session_id"], r["status"], r["verify"] or "-", str(r["event_count"]),
             str(r["policy"]["blocked"]), str(r["policy"]["warned"]), r["updated_at"] or "-"] for r in runs],
           ["RUN", "SESSION", "STATUS", "VERIFY", "EVENTS", "BLOCKED", "WARNED", "UPDATED"])


# -- audit (section owned by the audit work) -----------------------------------------------------


@main.command("audit")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[PATH]...")
@store_options
@format_option
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on errors.")
@click.option("--index", "check_index", is_flag=True,
              help="Also compare index.sqlite3 (opened read-only) with the logs. (With --database, the run and "
                   "session rows are always compared with the events.)")
@one_line_errors
def audit_command(paths: tuple[Path, ...], data_dir: Path | None, database: str | None, output_format: str,
                  strict: bool, check_index: bool) -> None:
    """Check that logs are whole and untampered, from the files alone (no index, no server), or
    the rows of a PostgreSQL store with --database (in SQL and one streamed pass).

    PATH is a data folder, one session's folder, or .jsonl segment files (default: the data
    folder). Prints `path:line: CODE: message` for each finding (line 0: the whole file; for a
    database, the path names the rows and the line is the seq), then a summary. Exit 0 when
    clean (warnings and information allowed), 1 on errors (or warnings with --strict), 2 on a
    usage or I/O error.
    """
    from .ops.audit import ERROR, INFO, WARNING, CODES, plan_audit, run_audit

    if paths and database is not None:
        fail("give PATHs or --database, not both")
    target = store_target(data_dir, database) if not paths else None
    plan = plan_audit(list(paths) or [target]) if not isinstance(target, str) else None
    stdout = click.get_text_stream("stdout")
    if hasattr(stdout, "reconfigure"):
        stdout.reconfigure(errors="backslashreplace")  # a name that is not UTF-8 is escaped, never a crash
    separator = ""
    if output_format == "json":
        stdout.write('{"findings": [')

    def report(finding) -> None:
        nonlocal separator
        if output_format == "json":
            stdout.write(separator + "\n  " + json.dumps(finding.as_dict(), ensure_ascii=False))
            separator = ","
        else:
            stdout.write(f"{finding}\n")

    if plan is None:
        from .ops.audit_database import audit_database

        summary = audit_database(target, on_finding=report, max_line=max_line())
    else:
        with byte_progress(lambda: plan.byte_count, "audit", enabled=output_format == "text") as advance:
            summary = run_audit(plan, check_index=check_index, on_finding=report, on_bytes=advance,
                                max_line=max_line())
    failed = summary.count(ERROR) > 0 or (strict and summary.count(WARNING) > 0)
    exit_code = EXIT_FINDINGS if failed else EXIT_CLEAN
    if output_format == "json":
        stdout.write(f'{chr(10) if separator else ""}],\n"summary": {json.dumps(summary.as_dict())},\n'
                     f'"exit_code": {exit_code}}}\n')
    else:
        stdout.write(f"{'' if not summary.findings else chr(10)}audited {summary.sessions} sessions, "
                     f"{summary.segments} segments, {summary.events} events, {summary.runs} runs, "
                     f"{summary.bytes} bytes, {summary.unexpected} unexpected entries: {summary.count(ERROR)} errors, "
                     f"{summary.count(WARNING)} warnings, {summary.count(INFO)} information\n")
        for code, count in sorted(summary.findings.items()):
            stdout.write(f"  {code:<26} {count:>8}  {CODES[code][0]}\n")
    stdout.flush()
    sys.exit(exit_code)


# -- export and stats (section owned by the export/stats work) -------------------------------------


@contextlib.contextmanager
def byte_progress(total: Callable[[], int], label: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar counted in bytes read, on stderr, only when stderr is a terminal (and ``enabled``:
    never beside --format json); otherwise a callback that does nothing. ``total`` is asked only then."""
    if not enabled or not sys.stderr.isatty():
        yield lambda count: None
        return
    with click.progressbar(length=max(total(), 1), label=f"{label} (bytes)", file=sys.stderr, show_pos=True,
                           show_percent=True) as bar:
        yield bar.update


@main.command("export")
@store_options
@click.option("--session", "session_id", required=True, metavar="S", help="The session to export.")
@click.option("--run", "run_id", metavar="R", help="Only this run's events.")
@click.option("--since-seq", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Only events with seq > N.")
@click.option("--type", "types", multiple=True, metavar="T", help="Only events of this type (repeatable).")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv", "cloudevents"]), default="jsonl",
              show_default=True, help="The stored lines as they are, CSV with a header row, or CloudEvents 1.0 JSON lines.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write to FILE (replaced only once the export is complete) instead of stdout.")
@one_line_errors
def export_command(data_dir: Path | None, database: str | None, session_id: str, run_id: str | None,
                   since_seq: int, types: tuple[str, ...], output_format: str, output: Path | None) -> None:
    """Export one session's events in seq order, from the segments alone (no index, no server),
    or from the database's event rows with --database.

    Both give the same bytes for the same events: the stored envelope text. An incomplete last
    line (a write in flight, or torn by a crash) is left out. An unknown session or run exits 2;
    a --type that is not a known event type is warned about on stderr.
    """
    from .ops.export import WRITERS, session_events, session_segments, store_events
    from .types import EVENT_TYPES

    target = store_target(data_dir, database)
    for name in types:
        if name not in EVENT_TYPES:
            warn(f"--type {name!r} is not a known event type: no event will match it")
    write = WRITERS[output_format]
    runs_seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        if isinstance(target, str):
            store = open_database(target)
            stack.callback(store.close)
            # An unknown session or run fails here, before any output.
            events = store_events(store, session_id, run_id=run_id, since_seq=since_seq, types=types)
            runs_seen.update([run_id] if run_id is not None else [])
        else:
            paths = session_segments(target, session_id)  # an unknown session fails here, before any output
            advance = stack.enter_context(byte_progress(lambda: sum(map(segment_size, paths)), "export"))
            events = session_events(target, session_id, run_id=run_id, since_seq=since_seq, types=types,
                                    on_bytes=advance, runs_seen=runs_seen, max_line=max_line())
        _write_export(write, events, output, complete=lambda: run_id is None or run_id in runs_seen)
    if run_id is not None and run_id not in runs_seen:
        fail(f"run {run_id!r} not found in session {session_id!r}: nothing exported")


def _write_export(write: Callable, events: Iterator, output: Path | None, *, complete: Callable[[], bool]) -> None:
    """``events`` through ``write`` to stdout, or to ``output`` replaced only once the export is
    ``complete()``."""
    if output is None:
        stdout = click.get_binary_stream("stdout")
        try:
            write(events, stdout)
            stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): nothing to report, and nothing left to flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            sys.exit(EXIT_ERROR)
        return
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            write(events, file)
        if complete():
            os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@main.command("stats")
@store_options
@format_option
@one_line_errors
def stats_command(data_dir: Path | None, database: str | None, output_format: str) -> None:
    """Count sessions, segments, events, runs and bytes, list the 10 largest sessions and the
    events of each type, from the segments alone (no index, no server), or from the database's
    event rows with --database (no segments there: 0; bytes: the envelopes as JSON lines)."""
    from .ops.stats import collect, collect_database, log_bytes

    target = store_target(data_dir, database)
    if isinstance(target, str):
        report = collect_database(target)
    else:
        with byte_progress(lambda: log_bytes(target), "stats", enabled=output_format == "text") as advance:
            report = collect(target, on_bytes=advance, max_line=max_line())
    for reason in report.skipped:
        warn(f"not read: {reason}")
    exit_code = EXIT_FINDINGS if report.skipped else EXIT_CLEAN
    if output_format == "json":
        echo_json(report.as_document())
        sys.exit(exit_code)
    totals = [("sessions", report.sessions), ("segments", report.segments), ("events", report.events),
              ("runs", report.runs), ("bytes", report.bytes), ("unreadable lines", report.unreadable_lines),
              ("skipped entries", len(report.skipped))]
    for name, value in totals:
        click.echo(f"{name:<17}{value}")
    for ranking, sessions in (("events", report.largest_by_events), ("bytes", report.largest_by_bytes)):
        click.echo(f"\nlargest sessions by {ranking}:")
        width = max((len(s.session_id) for s in sessions), default=0)  # ids: the id rule's ASCII only
        for s in sessions:
            click.echo(f"  {s.session_id:<{width}}  {s.events} events  {s.bytes} bytes  "
                       f"{s.segments} segments  {s.runs} runs")
    click.echo("\nevent types:")
    names = {name: printable(name) for name in report.event_types}  # a type read from the folder may be anything
    width = max(map(len, names.values()), default=0)
    for name, count in report.event_types.items():
        click.echo(f"  {names[name]:<{width}}  {count}")
    sys.exit(exit_code)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(gunicorn_args: tuple[str, ...]) -> None:
    """Serve the HTTP API with gunicorn (the `make run` configuration); extra arguments go to gunicorn."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.is_file():  # a client-only install
        fail("this command needs the server extra (pip install '.[server]'): gunicorn is not installed")
    os.execv(str(gunicorn), [str(gunicorn), "--config", "python:eventsvc.gunicorn_conf",
                             *gunicorn_args, "eventsvc:create_app()"])


# -- tail (section owned by the live-tail work) ----------------------------------------------------


def _pretty_line(envelope: dict[str, Any], width: int = 80) -> str:
    """``seq  time  type  run_id  payload``, the payload as compact JSON cut to ``width`` characters."""
    payload = json.dumps(envelope.get("payload"), ensure_ascii=False, separators=(",", ":"))
    if len(payload) > width:
        payload = payload[: width - 1] + "…"
    return (f"{envelope.get('seq'):>6}  {envelope.get('timestamp')}  {envelope.get('type'):<20}  "
            f"{envelope.get('run_id') or '-'}  {payload}")


@main.command("tail")
@click.option("--session", "session_id", metavar="S", help="Follow this session's events.")
@click.option("--run", "run_id", metavar="R", help="Follow this run's events (ends after its terminal event).")
@click.option("--url", default=lambda: os.environ.get("EVENTSVC_URL", "http://127.0.0.1:8000"),
              show_default="$EVENTSVC_URL or http://127.0.0.1:8000", help="The eventsvc server.")
@click.option("--since-seq", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Start after seq N.")
@click.option("--pretty", is_flag=True, help="A readable one-line form instead of JSON lines.")
@click.option("--token", default=lambda: os.environ.get("EVENTSVC_TOKEN"), show_default="$EVENTSVC_TOKEN",
              help="Bearer token for the API.")
@click.option("--give-up-after", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
              help="Stop (exit 2) once reconnecting has failed for this long in a row.")
def tail(session_id: str | None, run_id: str | None, url: str, since_seq: int, pretty: bool,
         token: str | None, give_up_after: float) -> None:
    """Print events as they are appended, one JSON envelope per line, reconnecting by itself.

    Each failed attempt (no server, a cut stream, 503 too_many_streams) is said on stderr with
    the wait before the next. Exits 0 when the stream ends (a run's terminal event), 2 on an
    error or once reconnecting has failed for --give-up-after seconds.
    """
    if (session_id is None) == (run_id is None):
        fail("give exactly one of --session and --run")
    try:
        from .client import ClientError, EventClient
    except ImportError:
        fail("eventsvc tail needs the client: pip install '.[client]' from an eventsvc checkout")
    client = EventClient(url, token=token or None)
    stdout = click.get_text_stream("stdout")
    try:
        def retrying(what: str, delay: float) -> None:
            click.echo(f"eventsvc: {url}: {what}; retrying in {delay:.1f} s", err=True)

        for envelope in client.follow(session_id=session_id, run_id=run_id, since_seq=since_seq,
                                      give_up_after=give_up_after, on_retry=retrying):
            line = _pretty_line(envelope) if pretty else json.dumps(envelope, ensure_ascii=False,
                                                                    separators=(",", ":"))
            stdout.write(line + "\n")
            stdout.flush()
    except ClientError as exc:
        fail(str(exc))
    except BrokenPipeError:
        # The reader stopped early (`| head`): nothing to report, and nothing left to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        client.close()


@main.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("target", metavar="DST")
@one_line_errors
def copy_command(source: str, target: str) -> None:
    """Copy every session from SRC to DST (each a data folder or a postgresql:// URL), then verify.

    Resumable and idempotent: run it again after an interruption and it skips what DST holds
    already (by event_id). Each event keeps its seq, event_id, timestamp and payload, so the
    stored lines are byte-identical. Exit 1 if verification finds a session that differs.
    EVENTSVC_EXTRA_EVENT_TYPES must name the same extra types the source was written with.
    """
    from .ops.copy import copy_store
    from .store import open_store

    if not is_database_url(source) and not (Path(source) / "segments").is_dir():
        fail(f"{source} is neither a postgresql:// URL nor an eventsvc data folder (no segments/ inside)")
    # The source accepted these events once: the target takes them whatever its own size limit.
    unlimited = {"max_event_bytes": 1 << 40}
    from_store = open_database(source, **unlimited) if is_database_url(source) else open_store(source, **unlimited)
    try:
        to_store = open_database(target, **unlimited) if is_database_url(target) else open_store(target, **unlimited)
        try:
            report = copy_store(from_store, to_store, on_session=lambda copied: click.echo(
                f"{copied.session_id}: {copied.events} events, {copied.created} copied now"
                + (f"; MISMATCH: {copied.problem}" if copied.problem else ""), err=bool(copied.problem)))
        finally:
            to_store.close()
    finally:
        from_store.close()
    click.echo(f"{len(report.sessions)} sessions, {report.events} events, {report.created} copied now; "
               + (f"{len(report.problems)} sessions differ" if report.problems else "verified: every session "
                  "has the same events, last seq and count in both stores"))
    sys.exit(EXIT_FINDINGS if report.problems else EXIT_CLEAN)


# -- PostgreSQL --------------------------------------------------------------------------------


@main.group("db")
def db() -> None:
    """Prepare a PostgreSQL database for EVENTSVC_DATABASE_URL."""


@db.command("upgrade")
@click.argument("url", metavar="URL")
@one_line_errors
def db_upgrade(url: str) -> None:
    """Create the eventsvc schema in the database at URL, or migrate it to this version (safe to repeat)."""
    if not is_database_url(url):
        fail("URL must start with postgresql:// (or postgres://)")
    from .store.postgres import upgrade, where

    before, after = upgrade(url)
    if before == after:
        click.echo(f"{where(url)}: schema version {after}, already current")
    else:
        click.echo(f"{where(url)}: schema version {before or 'none'} -> {after}")


if __name__ == "__main__":
    main()
