"""A trip-booking saga on the engine, used as a library: `python -m examples.trip`.
Walked through in docs/writing-a-saga.md."""
