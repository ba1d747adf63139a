"""The recovery tests' stack: the three real services, stock enough for every order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import PLENTY, Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, INVENTORY_SEED_STOCK=PLENTY)
    s.start_services()
    yield s
    s.close()
