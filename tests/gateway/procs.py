"""The gateway's end-to-end tests run on the shared real-process stack
(tests/support/stack.py); `stack()` starts the services and, by default, the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.stack import Redis, Stack, wait_terminal

__all__ = ["Redis", "Stack", "stack", "wait_terminal"]


@contextlib.contextmanager
def stack(
    tmp_path: Path,
    *,
    service_env: Mapping[str, str] | None = None,
    gateway_env: Mapping[str, str] | None = None,
    start_gateway: bool = True,
) -> Iterator[Stack]:
    the_stack = Stack.create(tmp_path, **(gateway_env or {}))
    try:
        the_stack.start_services(service_env)
        if start_gateway:
            the_stack.start_gateway()
        yield the_stack
    finally:
        the_stack.close()
