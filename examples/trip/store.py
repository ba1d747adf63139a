"""The participants' own durable store: one SQLite file each (through apsw), so that a
booking survives a killed process just as it would at a real airline.

What makes a participant safe to drive from a saga lives here, once for all three:
- every mutating call is idempotent on (trip id, operation): the first answer is kept and
  returned to every repeat, so the engine may re-issue a call whose outcome it never
  logged (it does so after a crash);
- every call carries the saga's epoch; a call below the highest epoch seen for the trip
  is refused with the engine's `StaleEpoch`: its sender lost the saga to a new owner;
- a cancel that finds nothing booked leaves a tombstone, so that a booking arriving after
  its own cancel (a slow request, overtaken by the compensation) is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import apsw

from engine import Done, Refused, StaleEpoch, StepResult

__all__ = ["Answer", "Booking", "BookingState", "Store"]

SCHEMA: Final = """
CREATE TABLE fences (
    trip_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL          -- the highest saga epoch seen for this trip
) WITHOUT ROWID;
CREATE TABLE answers (
    trip_id TEXT NOT NULL,
    operation TEXT NOT NULL,        -- 'book', 'cancel', 'ticket'
    refused TEXT,                   -- NULL: done; else the business reason
    detail TEXT NOT NULL,
    calls INTEGER NOT NULL,         -- times it was asked, repeats included
    PRIMARY KEY (trip_id, operation)
) WITHOUT ROWID;
CREATE TABLE bookings (
    trip_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('BOOKED', 'TICKETED', 'CANCELLED')),
    confirmation TEXT               -- NULL when CANCELLED: a tombstone, never booked
) WITHOUT ROWID;
"""


class BookingState(StrEnum):
    BOOKED = "BOOKED"
    TICKETED = "TICKETED"  # the airline's held seat, issued
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Booking:
    trip_id: str
    state: BookingState
    confirmation: str | None  # None: a tombstone (cancelled before any booking arrived)


@dataclass(frozen=True, slots=True)
class Answer:
    """The first answer to one operation of one trip, and how many times it was asked."""

    operation: str
    refused: str | None  # None: done
    calls: int


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


class Store:
    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self._prefix = prefix  # of confirmation numbers: "FL-1", "HT-1", "CR-1"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = apsw.Connection(str(path))
        # WAL with synchronous FULL: a COMMIT that returned is on disk, kill or no kill.
        self._conn.pragma("journal_mode", "wal")
        self._conn.pragma("synchronous", "FULL")
        self._conn.set_busy_timeout(5_000)
        with self._transaction():
            if self._conn.pragma("user_version") == 0:
                self._conn.execute(SCHEMA)
                self._conn.pragma("user_version", 1)

    def close(self) -> None:
        self._conn.close()

    # ---- the operations (each one transaction) --------------------------------------------

    def book(self, trip_id: str, epoch: int, refusal: str | None = None) -> StepResult:
        """Book, once. Refused after a cancel (the tombstone wins), or for `refusal`, the
        participant's business reason to say no."""

        def apply() -> StepResult:
            if self.booking(trip_id) is not None:
                # A first 'book' finds no booking of its own: this is a cancel's tombstone.
                return Refused("cancelled")
            if refusal is not None:
                return Refused(refusal)
            row = self._conn.execute("SELECT count(confirmation) FROM bookings").fetchone()
            confirmation = f"{self._prefix}-{_int(row[0] if row else 0) + 1}"
            self._set(trip_id, BookingState.BOOKED, confirmation)
            return Done(confirmation)

        return self._once(trip_id, "book", epoch, apply)

    def cancel(self, trip_id: str, epoch: int) -> StepResult:
        """Cancel the booking, or leave a tombstone when it never arrived."""

        def apply() -> StepResult:
            booking = self.booking(trip_id)
            if booking is None:
                self._set(trip_id, BookingState.CANCELLED, None)
            elif booking.state is BookingState.TICKETED:
                # A compensation should never say no (the engine retries it, then parks the
                # saga for a human). The saga's shape rules this out: ticketing comes after
                # the pivot, and nothing after the pivot is compensated.
                return Refused("already_ticketed")
            else:
                self._set(trip_id, BookingState.CANCELLED, booking.confirmation)
            return Done()

        return self._once(trip_id, "cancel", epoch, apply)

    def ticket(self, trip_id: str, epoch: int) -> StepResult:
        """Turn a booking (a held seat) into a ticket, once."""

        def apply() -> StepResult:
            booking = self.booking(trip_id)
            if booking is None or booking.state is not BookingState.BOOKED:
                return Refused("no_held_seat")
            self._set(trip_id, BookingState.TICKETED, booking.confirmation)
            return Done(booking.confirmation or "")

        return self._once(trip_id, "ticket", epoch, apply)

    # ---- reads ---------------------------------------------------------------------------

    def booking(self, trip_id: str) -> Booking | None:
        row = self._conn.execute(
            "SELECT state, confirmation FROM bookings WHERE trip_id = ?", (trip_id,)
        ).fetchone()
        if row is None:
            return None
        state, confirmation = row
        return Booking(
            trip_id, BookingState(str(state)), None if confirmation is None else str(confirmation)
        )

    def answers(self, trip_id: str) -> dict[str, Answer]:
        """Each operation asked for this trip, by name."""
        rows = self._conn.execute(
            "SELECT operation, refused, calls FROM answers WHERE trip_id = ? ORDER BY operation",
            (trip_id,),
        )
        return {
            str(op): Answer(str(op), None if refused is None else str(refused), _int(calls))
            for op, refused, calls in rows
        }

    # ---- how every operation is made safe ------------------------------------------------

    def _once(
        self, trip_id: str, operation: str, epoch: int, apply: Callable[[], StepResult]
    ) -> StepResult:
        """Fence the epoch; answer a repeat from the journal, else apply and keep the
        answer. One transaction: an answer is never kept without its effect, nor the
        reverse, whenever the process dies."""
        with self._transaction():
            self._fence(trip_id, epoch)
            row = self._conn.execute(
                "UPDATE answers SET calls = calls + 1 WHERE trip_id = ? AND operation = ? "
                "RETURNING refused, detail",
                (trip_id, operation),
            ).fetchone()
            if row is not None:
                refused, detail = row
                return Done(str(detail)) if refused is None else Refused(str(refused))
            result = apply()
            refused_reason = result.reason if isinstance(result, Refused) else None
            detail = result.detail if isinstance(result, Done) else ""
            self._conn.execute(
                "INSERT INTO answers (trip_id, operation, refused, detail, calls) "
                "VALUES (?, ?, ?, ?, 1)",
                (trip_id, operation, refused_reason, detail),
            )
            return result

    def _fence(self, trip_id: str, epoch: int) -> None:
        row = self._conn.execute(
            "SELECT epoch FROM fences WHERE trip_id = ?", (trip_id,)
        ).fetchone()
        if row is not None and epoch < _int(row[0]):
            # Raised inside the transaction: it rolls back, and nothing has changed.
            raise StaleEpoch(
                f"{self.path.stem}: trip {trip_id} is at epoch {row[0]}, the call has {epoch}",
                saga_id=trip_id,
            )
        self._conn.execute(
            "INSERT INTO fences (trip_id, epoch) VALUES (?, ?) "
            "ON CONFLICT (trip_id) DO UPDATE SET epoch = excluded.epoch",
            (trip_id, epoch),
        )

    def _set(self, trip_id: str, state: BookingState, confirmation: str | None) -> None:
        self._conn.execute(
            "INSERT INTO bookings (trip_id, state, confirmation) VALUES (?, ?, ?) "
            "ON CONFLICT (trip_id) DO UPDATE SET state = excluded.state",
            (trip_id, state.value, confirmation),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # apsw opens no transaction by itself. BEGIN IMMEDIATE takes the write lock up
        # front, so a second writer waits on the busy timeout instead of failing mid-way.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
