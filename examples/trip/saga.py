"""The trip saga: hold a seat -> book a room -> rent a car (pivot) -> issue the ticket.

Why each step has the kind it has:
- `flight` and `hotel` are COMPENSATABLE: a held seat can be released, a room cancelled.
  If a later step says no before the pivot has succeeded, the engine runs their
  compensations in reverse order (and only for steps that may have had an effect).
- `car` is the PIVOT: the rental is prepaid and non-refundable, so it has no
  compensation. It can still say no (no car in Venice), which compensates the hotel and
  the flight; once it has said yes, the trip is bought and can only go forward.
- `ticket` is RETRIABLE: issuing the ticket for a seat the airline is holding for us must
  succeed, so it is retried (and the saga parked for a human if it never does), never
  compensated.

Each action is an adapter: it reads what it needs from the saga's payload and calls the
participant with the saga id (the trip id: the key of the participant's idempotency) and
the epoch (its fence). Business refusals come back as `Refused`; anything raised is
retried within the step's budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from engine import RetryPolicy, SagaDefinition, Step, StepContext, StepKind, StepResult
from examples.trip.participants import Participants

__all__ = ["RETRY", "STEP_NAMES", "TRIP_SAGA", "TripRequest", "trip_saga"]

TRIP_SAGA: Final = "trip"  # the definition's name, stored with every saga it starts
STEP_NAMES: Final = ("flight", "hotel", "car", "ticket")

# Three tries before the pivot gives up and compensates; the pivot, the ticket and the
# compensations never give up that way (their outcome may be in doubt): they park after 10.
RETRY: Final = RetryPolicy(max_attempts=3, park_after=10, initial_backoff_s=0.05, max_backoff_s=1)


@dataclass(frozen=True, slots=True)
class TripRequest:
    """The saga's input: encoded once into its payload, decoded by each step."""

    traveller: str
    destination: str

    def encode(self) -> bytes:
        # Sorted keys: the same request always makes the same bytes, so starting it again
        # with the same idempotency key is recognised as a replay, not a different request.
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, payload: bytes) -> TripRequest:
        return cls(**json.loads(payload))


def trip_saga(p: Participants, retry: RetryPolicy = RETRY) -> SagaDefinition:
    async def hold_seat(ctx: StepContext) -> StepResult:
        return p.airline.hold_seat(ctx.saga_id, ctx.epoch)

    async def release_seat(ctx: StepContext) -> StepResult:
        return p.airline.release_seat(ctx.saga_id, ctx.epoch)

    async def book_room(ctx: StepContext) -> StepResult:
        city = TripRequest.decode(ctx.payload).destination
        return p.hotel.book_room(ctx.saga_id, ctx.epoch, city)

    async def cancel_room(ctx: StepContext) -> StepResult:
        return p.hotel.cancel_room(ctx.saga_id, ctx.epoch)

    async def rent_car(ctx: StepContext) -> StepResult:
        city = TripRequest.decode(ctx.payload).destination
        return p.cars.rent_car(ctx.saga_id, ctx.epoch, city)

    async def issue_ticket(ctx: StepContext) -> StepResult:
        return p.airline.issue_ticket(ctx.saga_id, ctx.epoch)

    # The participants here are local SQLite writes of a millisecond, called inline; a
    # remote participant would be awaited, and `timeout_s` bounds each attempt.
    return SagaDefinition(
        TRIP_SAGA,
        steps=(
            Step("flight", hold_seat, release_seat, StepKind.COMPENSATABLE, retry, timeout_s=2),
            Step("hotel", book_room, cancel_room, StepKind.COMPENSATABLE, retry, timeout_s=2),
            Step("car", rent_car, None, StepKind.PIVOT, retry, timeout_s=2),
            Step("ticket", issue_ticket, None, StepKind.RETRIABLE, retry, timeout_s=2),
        ),
    )
