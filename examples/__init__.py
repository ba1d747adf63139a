"""Sagas built on the engine as a library, outside the order product. Each one is small,
runs with `python -m examples.<name>`, and is walked through in docs/writing-a-saga.md."""
