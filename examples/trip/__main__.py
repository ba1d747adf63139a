"""python -m examples.trip [--dir DIR] [--trip ID] [--to CITY] [--crash-after STEP] [--resume]

python -m examples.trip                        # book trip-1 to Lisbon: COMPLETED
python -m examples.trip --trip t2 --to Cannes  # no hotel room: COMPENSATED
python -m examples.trip --trip t3 --crash-after hotel   # dies half-way (SIGKILL)
python -m examples.trip --trip t3 --resume     # takes the trip over and finishes it
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import EngineError
from examples.trip.app import Options, run
from examples.trip.saga import STEP_NAMES, TripRequest


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m examples.trip",
        description="Book a trip (flight, hotel, car, ticket) as a durable saga.",
    )
    parser.add_argument("--dir", type=Path, default=Path("var/trip"), help="default: var/trip")
    parser.add_argument("--trip", default="trip-1", help="trip id and idempotency key")
    parser.add_argument("--traveller", default="Ada")
    parser.add_argument(
        "--to", default="Lisbon", help="destination; Cannes: no hotel room, Venice: no car"
    )
    parser.add_argument(
        "--crash-after",
        choices=STEP_NAMES,
        metavar="STEP",
        help=f"one of {', '.join(STEP_NAMES)}: kill this process once STEP's participant has "
        "answered, before the saga log knows",
    )
    parser.add_argument(
        "--resume", action="store_true", help="start nothing: finish the trip a run left"
    )
    parser.add_argument("--lease", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--wait", type=float, default=30.0, help="give up after (default 30)")
    args = parser.parse_args(argv)
    return Options(
        folder=args.dir,
        trip_id=args.trip,
        request=TripRequest(traveller=args.traveller, destination=args.to),
        resume=args.resume,
        crash_after=args.crash_after,
        lease_s=args.lease,
        wait_s=args.wait,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(opts))
    except EngineError as exc:  # e.g. this trip id was used for another request
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
