"""Every property test (hypothesis, schemathesis) draws the same examples on every run, so
that a CI failure is not a lottery and can be run again here; hypothesis prints the
failing example and a blob to reproduce it. `FUZZ_SEARCH=1` draws new examples on each
run, to search further (a random run is what found the header tracing could not decode).

Profiles are loaded here, before any test module is imported, because a test's own
`@settings(...)` takes what it does not set from the profile loaded at that moment."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("search", print_blob=True)
settings.load_profile("search" if os.environ.get("FUZZ_SEARCH") else "repeatable")
