"""The trip example as a user runs it: real processes on a real folder, then the saga log
and the participants' own stores read back. The crash is a real SIGKILL half-way (the
hotel booked, the log not told), and the resume must finish the trip with every booking
made exactly once. Below, the participant rules the engine relies on, one by one."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Done, Phase, Refused, SagaRecord, SagaStatus, StaleEpoch, Transition
from examples.trip.app import open_log
from examples.trip.participants import Hotel, Participants
from examples.trip.store import Booking, BookingState

ROOT = Path(__file__).resolve().parents[2]
LEASE = "0.5"  # the dead owner's lease is all a resume waits for


def trip(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.trip", "--dir", str(folder), "--lease", LEASE, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def saga(folder: Path, trip_id: str) -> tuple[SagaRecord, list[Transition]]:
    async def read() -> tuple[SagaRecord | None, list[Transition]]:
        log = open_log(folder)
        try:
            return await log.get(trip_id), await log.transitions(trip_id)
        finally:
            await log.close()

    record, transitions = asyncio.run(read())
    assert record is not None, f"no saga {trip_id} in the log"
    return record, transitions


def stores(folder: Path, trip_id: str) -> dict[str, tuple[Booking | None, dict[str, int]]]:
    """Per participant: its booking for the trip, and how often each operation was asked."""
    p = Participants.open(folder)
    try:
        return {
            name: (
                store.booking(trip_id),
                {op: a.calls for op, a in store.answers(trip_id).items()},
            )
            for name, store in p.stores().items()
        }
    finally:
        p.close()


def count(transitions: list[Transition], step: str, phase: Phase) -> int:
    return sum(1 for t in transitions if t.step == step and t.phase is phase)


# ---- whole runs ----------------------------------------------------------------------------


def test_a_trip_is_booked_once_each(tmp_path: Path) -> None:
    run = trip(tmp_path, "--trip", "t1")
    assert run.returncode == 0, run.stderr
    record, transitions = saga(tmp_path, "t1")
    assert record.status is SagaStatus.COMPLETED
    for step in ("flight", "hotel", "car", "ticket"):
        assert count(transitions, step, Phase.DONE) == 1, step
    state = stores(tmp_path, "t1")
    assert state["airline"] == (
        Booking("t1", BookingState.TICKETED, "FL-1"),
        {"book": 1, "ticket": 1},
    )
    assert state["hotel"] == (Booking("t1", BookingState.BOOKED, "HT-1"), {"book": 1})
    assert state["cars"] == (Booking("t1", BookingState.BOOKED, "CR-1"), {"book": 1})
    assert "trip t1: COMPLETED" in run.stdout  # the history the user reads

    again = trip(tmp_path, "--trip", "t1")  # same id, same request: a replay, nothing new
    assert again.returncode == 0, again.stderr
    assert "exists already" in again.stdout
    assert stores(tmp_path, "t1") == state


def test_no_hotel_room_cancels_the_flight(tmp_path: Path) -> None:
    run = trip(tmp_path, "--trip", "t2", "--to", "Cannes")
    assert run.returncode == 0, run.stderr
    record, transitions = saga(tmp_path, "t2")
    assert (record.status, record.reason) == (SagaStatus.COMPENSATED, "no_rooms")
    assert count(transitions, "flight", Phase.COMP_DONE) == 1
    assert count(transitions, "hotel", Phase.COMP_INTENT) == 0  # refused: nothing to undo
    state = stores(tmp_path, "t2")
    assert state["airline"] == (
        Booking("t2", BookingState.CANCELLED, "FL-1"),
        {"book": 1, "cancel": 1},
    )
    assert state["hotel"] == (None, {"book": 1})
    assert state["cars"] == (None, {})


def test_a_refused_pivot_still_turns_the_trip_back(tmp_path: Path) -> None:
    run = trip(tmp_path, "--trip", "t3", "--to", "Venice")
    assert run.returncode == 0, run.stderr
    record, _ = saga(tmp_path, "t3")
    assert (record.status, record.reason) == (SagaStatus.COMPENSATED, "no_cars")
    state = stores(tmp_path, "t3")
    assert state["airline"][0] == Booking("t3", BookingState.CANCELLED, "FL-1")
    assert state["hotel"][0] == Booking("t3", BookingState.CANCELLED, "HT-1")
    assert state["cars"] == (None, {"book": 1})


@pytest.mark.parametrize("again", [["--resume"], []], ids=["resume", "same-command"])
def test_killed_after_the_hotel_then_finished_once(tmp_path: Path, again: list[str]) -> None:
    first = trip(tmp_path, "--trip", "t4", "--crash-after", "hotel")
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr)
    record, transitions = saga(tmp_path, "t4")
    # The hotel's booking is durable in its store, but the log only knows it was asked.
    assert record.status is SagaStatus.RUNNING
    assert count(transitions, "hotel", Phase.INTENT) == 1
    assert count(transitions, "hotel", Phase.DONE) == 0
    assert stores(tmp_path, "t4")["hotel"] == (
        Booking("t4", BookingState.BOOKED, "HT-1"),
        {"book": 1},
    )

    second = trip(tmp_path, "--trip", "t4", *again)
    assert second.returncode == 0, second.stderr
    record, transitions = saga(tmp_path, "t4")
    assert record.status is SagaStatus.COMPLETED
    assert record.epoch == 2  # claimed once, by the second process
    assert count(transitions, "", Phase.CLAIMED) == 1
    for step in ("flight", "hotel", "car", "ticket"):
        assert count(transitions, step, Phase.DONE) == 1, step
    state = stores(tmp_path, "t4")
    # The hotel was asked twice (its outcome was never logged) and booked once: the repeat
    # was answered from its journal, with the same confirmation.
    assert state["hotel"] == (Booking("t4", BookingState.BOOKED, "HT-1"), {"book": 2})
    assert state["airline"] == (
        Booking("t4", BookingState.TICKETED, "FL-1"),
        {"book": 1, "ticket": 1},
    )
    assert state["cars"] == (Booking("t4", BookingState.BOOKED, "CR-1"), {"book": 1})


# ---- the participant rules the engine relies on ---------------------------------------------


def test_a_repeated_call_gets_the_first_answer(tmp_path: Path) -> None:
    hotel = Hotel(tmp_path)
    assert hotel.book_room("t", 1, "Lisbon") == Done("HT-1")
    assert hotel.book_room("t", 1, "Lisbon") == Done("HT-1")
    assert hotel.book_room("u", 1, "Cannes") == Refused("no_rooms")
    assert hotel.book_room("u", 1, "Cannes") == Refused("no_rooms")
    assert hotel.store.booking("t") == Booking("t", BookingState.BOOKED, "HT-1")
    assert hotel.store.booking("u") is None
    assert hotel.store.answers("t")["book"].calls == 2


def test_a_stale_epoch_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    hotel = Hotel(tmp_path)
    assert hotel.book_room("t", 2, "Lisbon") == Done("HT-1")
    with pytest.raises(StaleEpoch):
        hotel.cancel_room("t", 1)  # an owner that lost the trip to epoch 2
    with pytest.raises(StaleEpoch):
        hotel.book_room("t", 1, "Lisbon")  # even a repeat of a call that once succeeded
    assert hotel.store.booking("t") == Booking("t", BookingState.BOOKED, "HT-1")
    assert set(hotel.store.answers("t")) == {"book"}
    assert hotel.store.answers("t")["book"].calls == 1
    assert hotel.cancel_room("t", 3) == Done()  # a newer epoch is heard
    assert hotel.store.booking("t") == Booking("t", BookingState.CANCELLED, "HT-1")


def test_a_tombstone_refuses_a_late_booking(tmp_path: Path) -> None:
    hotel = Hotel(tmp_path)
    assert hotel.cancel_room("t", 1) == Done()  # the compensation overtook the booking
    assert hotel.store.booking("t") == Booking("t", BookingState.CANCELLED, None)
    assert hotel.book_room("t", 1, "Lisbon") == Refused("cancelled")
    assert hotel.store.booking("t") == Booking("t", BookingState.CANCELLED, None)


def test_state_survives_reopening(tmp_path: Path) -> None:
    hotel = Hotel(tmp_path)
    assert hotel.book_room("t", 1, "Lisbon") == Done("HT-1")
    hotel.store.close()
    reopened = Hotel(tmp_path)
    assert reopened.book_room("t", 1, "Lisbon") == Done("HT-1")
    assert reopened.store.answers("t")["book"].calls == 2
