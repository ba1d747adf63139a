"""The three participants of a trip, in-process stand-ins for remote services. Each keeps
its state in a SQLite file of its own (see store.py for what makes them safe to drive
from a saga: idempotent operations, epoch fences, tombstones).

Their business rules are deliberately tiny, but real enough to say no:
- the airline holds a seat, releases it, and issues the ticket for a held seat;
- the hotel has no room left in Cannes (festival week);
- the car rental has no car in Venice (there are no roads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine import StepResult
from examples.trip.store import Store

__all__ = ["Airline", "CarRental", "Hotel", "Participants"]

HOTEL_SOLD_OUT: Final = frozenset({"Cannes"})
NO_CARS: Final = frozenset({"Venice"})


class Airline:
    def __init__(self, folder: Path) -> None:
        self.store = Store(folder / "airline.db", "FL")

    def hold_seat(self, trip_id: str, epoch: int) -> StepResult:
        return self.store.book(trip_id, epoch)

    def release_seat(self, trip_id: str, epoch: int) -> StepResult:
        return self.store.cancel(trip_id, epoch)

    def issue_ticket(self, trip_id: str, epoch: int) -> StepResult:
        return self.store.ticket(trip_id, epoch)


class Hotel:
    def __init__(self, folder: Path) -> None:
        self.store = Store(folder / "hotel.db", "HT")

    def book_room(self, trip_id: str, epoch: int, city: str) -> StepResult:
        return self.store.book(trip_id, epoch, "no_rooms" if city in HOTEL_SOLD_OUT else None)

    def cancel_room(self, trip_id: str, epoch: int) -> StepResult:
        return self.store.cancel(trip_id, epoch)


class CarRental:
    def __init__(self, folder: Path) -> None:
        self.store = Store(folder / "cars.db", "CR")

    def rent_car(self, trip_id: str, epoch: int, city: str) -> StepResult:
        # Prepaid and non-refundable: there is no cancel. That is why it is the saga's pivot.
        return self.store.book(trip_id, epoch, "no_cars" if city in NO_CARS else None)


@dataclass(frozen=True, slots=True)
class Participants:
    airline: Airline
    hotel: Hotel
    cars: CarRental

    @classmethod
    def open(cls, folder: Path) -> Participants:
        return cls(Airline(folder), Hotel(folder), CarRental(folder))

    def stores(self) -> dict[str, Store]:
        return {"airline": self.airline.store, "hotel": self.hotel.store, "cars": self.cars.store}

    def close(self) -> None:
        for store in self.stores().values():
            store.close()
