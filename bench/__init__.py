"""Benchmarks of the saga engine (`python -m bench`).

Benchmarks are not tests: they print numbers beside baselines measured in the same run,
as ratios and medians of repetitions, and nothing in the test suite asserts a time (a
smoke test only checks that the harness runs). One module per benchmark (`bench.engine`),
what they share in `bench.report`, the command line in `bench.cli`.
"""

__all__: list[str] = []  # the surface is the command line, bench.cli
