"""Operator tools over the saga log: `saga ls`, `saga show`, `saga retry`, `saga cancel`.

They work on a live system and on a stopped one alike: they read the same SQLite file as
every process (SAGA_LOG_DB_PATH, else $SAGA_DATA_DIR/saga.db) and change a saga only
through engine/operations.py, in one transaction that fences whoever drives it and leaves
it unowned, so that a running gateway or recovery daemon claims it and drives it on.

Exit codes (the same for every command):
    0  done (with --wait: every saga acted on ended COMPLETED or COMPENSATED)
    1  not final: the prompt was answered no, or (with --wait) a saga did not end in
       time or parked again
    2  error: bad input, no such saga, no saga log, the log unusable, a change failed
    3  refused: the saga's state does not allow it (past its pivot, already ended, not
       parked, already compensating); the log is unchanged
With several outcomes in one bulk command, the first of 2, 3, 1 that applies wins.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, ParamSpec, TypeVar

import click

from engine.core import CannotChange, SagaStatus
from engine.errors import EngineError
from engine.saga_log import SagaFilter, SagaNotFound
from saga.ops_model import (
    ListedSaga,
    Outcome,
    OutcomeKind,
    Verb,
    build_filter,
    human_duration,
    saga_view,
    summarize,
)
from saga.ops_text import ls_table, show_text, summary_text, table

if TYPE_CHECKING:
    from engine.saga_log import SagaRecord
    from saga.ops_io import OpsLog, OpsSettings

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_FINAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "cancel_command",
    "log_options",
    "ls_command",
    "operator_errors",
    "ops_settings",
    "retry_command",
    "show_command",
    "wall_ms",
]

EXIT_OK: Final = 0
EXIT_NOT_FINAL: Final = 1
EXIT_ERROR: Final = 2
EXIT_REFUSED: Final = 3
_PRECEDENCE: Final = (EXIT_ERROR, EXIT_REFUSED, EXIT_NOT_FINAL)

# Without --status, a bulk change selects the sagas it can apply to.
DEFAULT_STATUSES: Final = {Verb.RETRY: ("NEEDS_ATTENTION",), Verb.CANCEL: ("RUNNING",)}
PROMPT_ROWS: Final = 20
CLAIM_NOTE: Final = "a running gateway or recovery daemon claims it at once and drives it on"
CLAIM_NOTE_MANY: Final = (
    "a running gateway or recovery daemon claims them at once and drives them on"
)

P = ParamSpec("P")
R = TypeVar("R")


def _worst(codes: Sequence[int]) -> int:
    return next((c for c in _PRECEDENCE if c in codes), EXIT_OK)


def _die(prefix: str, message: str, code: int) -> NoReturn:
    click.echo(f"saga: {prefix}: {message}", err=True)
    sys.exit(code)


def operator_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The one table from engine errors to exit codes: a refusal is 3, anything else the
    engine raises on purpose is 2; either is one line on stderr, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CannotChange as exc:
            who = f" {exc.saga_id}" if exc.saga_id else ""
            _die("refused", f"cannot change saga{who} ({exc.code}): {exc.message}", EXIT_REFUSED)
        except EngineError as exc:
            _die("error", exc.message, EXIT_ERROR)

    return wrapper


def check_wait(wait_s: float) -> float:
    """`--wait`'s seconds: click's float type lets nan, inf and negatives through."""
    if not math.isfinite(wait_s) or wait_s < 0:
        raise EngineError(f"--wait {wait_s:g}: expected a finite number of seconds >= 0")
    return wait_s


def wall_ms() -> int:
    from engine.clock import SystemClock

    return SystemClock().now_ms()


def ops_settings(data_dir: Path | None, log_db: Path | None) -> OpsSettings:
    from saga.ops_io import OpsSettings

    return OpsSettings.from_env(
        os.environ, data_dir_flag=data_dir, log_db_flag=log_db, host=socket.gethostname()
    )


def log_options(fn: Callable[P, R]) -> Callable[P, R]:
    fn = click.option(
        "--log-db",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The saga log file (default: SAGA_LOG_DB_PATH, else DATA_DIR/saga.db).",
    )(fn)
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Folder of the SQLite files (default: SAGA_DATA_DIR, else ./var).",
    )(fn)


def filter_options(fn: Callable[P, R]) -> Callable[P, R]:
    for decorator in reversed(
        (
            click.option(
                "--status",
                "statuses",
                multiple=True,
                metavar="STATUS",
                help="RUNNING, COMPENSATING, COMPLETED, COMPENSATED or NEEDS_ATTENTION "
                "(any case; repeat for several).",
            ),
            click.option(
                "--older-than",
                metavar="AGE",
                help="Created more than AGE ago (90s, 5m, 1h30m, 2d).",
            ),
            click.option("--newer-than", metavar="AGE", help="Created less than AGE ago."),
            click.option("--definition", metavar="NAME", help="Only sagas of this definition."),
        )
    ):
        fn = decorator(fn)
    return fn


def _filter(
    statuses: Sequence[str], older_than: str | None, newer_than: str | None, definition: str | None
) -> SagaFilter:
    return build_filter(
        statuses=statuses,
        older_than=older_than,
        newer_than=newer_than,
        definition=definition,
        now_ms=wall_ms(),
    )


def _print_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2))


# ---- reading ----------------------------------------------------------------------------


@click.command("ls")
@filter_options
@click.option(
    "--limit", type=int, default=50, show_default=True, metavar="N", help="Sagas per page."
)
@click.option("--cursor", help="Continue after a previous page (its next_cursor).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: sagas, next_cursor.")
@log_options
@operator_errors
def ls_command(
    statuses: tuple[str, ...],
    older_than: str | None,
    newer_than: str | None,
    definition: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    data_dir: Path | None,
    log_db: Path | None,
) -> None:
    """List sagas, newest first: id, status, definition, age, epoch, owner, reason."""
    from saga.ops_io import open_log

    if not 1 <= limit <= 10_000:
        raise EngineError(f"--limit {limit}: expected 1 to 10000")
    flt = _filter(statuses, older_than, newer_than, definition)
    with open_log(ops_settings(data_dir, log_db), readonly=True) as log:
        page = log.list_sagas_sync(flt, limit=limit, cursor=cursor or None)
    now = wall_ms()
    rows = [ListedSaga.of(r, now) for r in page.items]
    if as_json:
        _print_json({"sagas": [r.to_json() for r in rows], "next_cursor": page.next_cursor})
        return
    click.echo(ls_table(rows, now) if rows else "no sagas match")
    if page.next_cursor:
        click.echo(f"(more: repeat with --cursor {page.next_cursor})")


@click.command("show")
@click.argument("saga_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@log_options
@operator_errors
def show_command(saga_id: str, as_json: bool, data_dir: Path | None, log_db: Path | None) -> None:
    """Show one saga: its timeline, its state and what the engine would do next."""
    from saga.ops_io import definitions, open_log

    settings = ops_settings(data_dir, log_db)
    with open_log(settings, readonly=True) as log:
        record = log.get_sync(saga_id)
        if record is None:
            raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
        transitions = log.transitions_sync(saga_id)
    view = saga_view(record, transitions, definitions(settings), wall_ms())
    if as_json:
        _print_json(view.to_json())
    else:
        click.echo(show_text(view))


# ---- changing ---------------------------------------------------------------------------


def _changed(verb: Verb, record: SagaRecord) -> str:
    reason = f" ({record.reason})" if record.reason else ""
    return (
        f"{verb.past} {record.id}: now {record.status.value}{reason} at epoch {record.epoch}, "
        f"unowned: {CLAIM_NOTE}"
    )


def _wait(log: OpsLog, saga_ids: Sequence[str], wait_s: float) -> int:
    from saga.ops_io import wait_for_end

    click.echo(f"waiting up to {wait_s:g}s for {len(saga_ids)} saga(s) to end…", err=True)
    latest = wait_for_end(log, saga_ids, wait_s)
    codes = []
    for sid in saga_ids:
        record = latest.get(sid)
        if record is None:
            codes.append(EXIT_ERROR)
            click.echo(f"{sid}: vanished from the log")
        elif record.status.finished:
            reason = f" ({record.reason})" if record.reason else ""
            click.echo(f"{sid} ended {record.status.value}{reason}")
        elif record.status is SagaStatus.NEEDS_ATTENTION:
            codes.append(EXIT_NOT_FINAL)
            click.echo(f"{sid} parked again: {record.reason}")
        else:
            codes.append(EXIT_NOT_FINAL)
            click.echo(
                f"{sid} is still {record.status.value} after {wait_s:g}s: "
                "is a gateway or recovery daemon running?"
            )
    return _worst(codes)


def _one(
    verb: Verb, settings: OpsSettings, saga_id: str, *, dry_run: bool, wait_s: float | None
) -> int:
    from saga.ops_io import act, definitions, open_log
    from saga.ops_model import preview

    with open_log(settings) as log:
        if dry_run:
            record = log.get_sync(saga_id)
            if record is None:
                raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
            refusal = preview(verb, record, log.transitions_sync(saga_id), definitions(settings))
            if refusal is None:
                click.echo(f"would {verb.value} {saga_id} (now {record.status.value})")
            else:
                click.echo(f"would refuse to {verb.value} {saga_id}: {refusal.message}")
            click.echo("dry run: nothing changed")
            return EXIT_OK
        try:
            record = asyncio.run(act(log, verb, saga_id, settings=settings, now_ms=wall_ms()))
        except CannotChange as exc:
            why = f"cannot {verb.value} {saga_id} ({exc.code}): {exc.message}"
            _die("refused", why, EXIT_REFUSED)
        click.echo(_changed(verb, record))
        return EXIT_OK if wait_s is None else _wait(log, [saga_id], wait_s)


def _dry_run(verb: Verb, settings: OpsSettings, log: OpsLog, records: Sequence[SagaRecord]) -> int:
    from saga.ops_io import definitions
    from saga.ops_model import preview

    defs, now = definitions(settings), wall_ms()
    rows: list[tuple[str, ...]] = []
    refused = 0
    for r in records:
        refusal = preview(verb, r, log.transitions_sync(r.id), defs)
        refused += refusal is not None
        would = verb.value if refusal is None else f"refuse ({refusal.code}): {refusal.message}"
        rows.append(
            (r.id, r.status.value, human_duration(now - r.created_ms), r.reason or "-", would)
        )
    click.echo(table(("ID", "STATUS", "AGE", "REASON", "WOULD"), rows))
    click.echo(
        f"dry run: would {verb.value} {len(records) - refused} of {len(records)} sagas "
        f"({refused} would be refused); nothing changed"
    )
    return EXIT_OK


def _many(
    verb: Verb,
    settings: OpsSettings,
    flt: SagaFilter,
    *,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    wait_s: float | None,
) -> int:
    from saga.ops_io import act_many, open_log, select

    with open_log(settings) as log:
        records = select(log, flt, limit=limit)
        statuses = ", ".join(s.value for s in flt.statuses)
        if not records:
            click.echo(f"no sagas match ({statuses})")
            return EXIT_OK
        if dry_run:
            return _dry_run(verb, settings, log, records)
        if not yes:
            now = wall_ms()
            click.echo(
                ls_table([ListedSaga.of(r, now) for r in records[:PROMPT_ROWS]], now), err=True
            )
            if len(records) > PROMPT_ROWS:
                click.echo(f"… and {len(records) - PROMPT_ROWS} more", err=True)
            if not click.confirm(f"{verb.value} these {len(records)} sagas?", err=True):
                click.echo("nothing changed")
                return EXIT_NOT_FINAL
        outcomes: list[Outcome]
        with click.progressbar(length=len(records), label=verb.ing, file=sys.stderr) as bar:

            def tick(_: Outcome) -> None:
                bar.update(1)

            outcomes = asyncio.run(
                act_many(
                    log,
                    verb,
                    [r.id for r in records],
                    settings=settings,
                    clock=wall_ms,
                    on_outcome=tick,
                )
            )
        summary = summarize(outcomes)
        click.echo(summary_text(verb, summary))
        codes = [
            EXIT_ERROR if summary.count(OutcomeKind.FAILED) else EXIT_OK,
            EXIT_REFUSED if summary.count(OutcomeKind.REFUSED) else EXIT_OK,
        ]
        if summary.done:
            click.echo(CLAIM_NOTE_MANY)
            if wait_s is not None:
                codes.append(_wait(log, summary.done, wait_s))
        return _worst(codes)


def _change(
    verb: Verb,
    saga_id: str | None,
    statuses: tuple[str, ...],
    older_than: str | None,
    newer_than: str | None,
    definition: str | None,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    wait_s: float | None,
    data_dir: Path | None,
    log_db: Path | None,
) -> NoReturn:
    bulk = bool(statuses) or older_than is not None or newer_than is not None or bool(definition)
    if saga_id is not None and (bulk or limit is not None):
        raise EngineError(f"give a saga id or filters to {verb.value} many, not both")
    if saga_id is None and not bulk:
        raise EngineError(
            f"give a saga id, or filters (--status, --older-than, --newer-than, --definition) "
            f"to {verb.value} many"
        )
    if wait_s is not None:
        check_wait(wait_s)
    if limit is not None and limit < 1:
        raise EngineError(f"--limit {limit}: expected at least 1")
    settings = ops_settings(data_dir, log_db)
    if saga_id is not None:
        sys.exit(_one(verb, settings, saga_id, dry_run=dry_run, wait_s=wait_s))
    flt = _filter(statuses or DEFAULT_STATUSES[verb], older_than, newer_than, definition)
    sys.exit(_many(verb, settings, flt, limit=limit, dry_run=dry_run, yes=yes, wait_s=wait_s))


def _change_options(fn: Callable[P, R]) -> Callable[P, R]:
    for decorator in reversed(
        (
            click.argument("saga_id", required=False),
            filter_options,
            click.option(
                "--limit", type=int, metavar="N", help="Act on at most N sagas (newest first)."
            ),
            click.option(
                "--dry-run", is_flag=True, help="List what would be done; change nothing."
            ),
            click.option("--yes", "-y", is_flag=True, help="Do not ask before a bulk change."),
            click.option(
                "--wait",
                "wait_s",
                type=float,
                metavar="SECONDS",
                help="Wait up to SECONDS for the saga(s) to end and print how they ended.",
            ),
            log_options,
            operator_errors,
        )
    ):
        fn = decorator(fn)
    return fn


@click.command("retry")
@_change_options
def retry_command(
    saga_id: str | None,
    statuses: tuple[str, ...],
    older_than: str | None,
    newer_than: str | None,
    definition: str | None,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    wait_s: float | None,
    data_dir: Path | None,
    log_db: Path | None,
) -> None:
    """Resume a NEEDS_ATTENTION saga (fresh attempt budgets), or many by filter.

    SAGA_ID alone retries that saga. With filters instead (default --status
    NEEDS_ATTENTION) it retries every match, after a prompt unless --yes. A running
    gateway or recovery daemon then claims each and drives it. Exit codes: 0 done,
    1 not final (prompt declined, --wait ran out), 2 error, 3 refused.
    """
    _change(
        Verb.RETRY, saga_id, statuses, older_than, newer_than, definition, limit, dry_run, yes,
        wait_s, data_dir, log_db,
    )  # fmt: skip


@click.command("cancel")
@_change_options
def cancel_command(
    saga_id: str | None,
    statuses: tuple[str, ...],
    older_than: str | None,
    newer_than: str | None,
    definition: str | None,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    wait_s: float | None,
    data_dir: Path | None,
    log_db: Path | None,
) -> None:
    """Cancel a saga before its pivot (it compensates: cancelled_by_operator), or many.

    After the pivot (the payment) a saga can only go forward: cancel refuses, exit 3.
    With filters instead of SAGA_ID (default --status RUNNING) it cancels every match,
    after a prompt unless --yes. Exit codes: 0 done, 1 not final, 2 error, 3 refused.
    """
    _change(
        Verb.CANCEL, saga_id, statuses, older_than, newer_than, definition, limit, dry_run, yes,
        wait_s, data_dir, log_db,
    )  # fmt: skip
