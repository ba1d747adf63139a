"""Fault injection for tests: off by default, and impossible to turn on by accident.

Faults are read only when `SAGA_ENV=test`; a process that finds `SAGA_FAULTS` set without
it refuses to start. When they are on, the service logs a loud WARNING at start.

`SAGA_FAULTS` is a comma-separated list of rules `METHOD:KIND:VALUE`, plus an optional
`seed:N` for a repeatable sequence of rolls:

    SAGA_FAULTS="Charge:after_commit:0.3,Reserve:before:0.1,*:latency_ms:5,seed:7"

- METHOD: an RPC name (`Reserve`, `Charge`, `GetStock`, …) or `*` for every mutating RPC
  (Reserve, Release, Charge, Refund, CreateOrder, UpdateOrderStatus). A rule naming a
  method overrides the `*` rule of the same kind.
- KIND `before`, VALUE a probability 0..1: the call fails with UNAVAILABLE before any effect.
- KIND `after_commit`, VALUE a probability 0..1: the effect and its de-duplication record
  commit, then the caller gets UNAVAILABLE anyway: the hard case, where a retry must get the
  first answer without applying the effect twice.
- KIND `latency_ms`, VALUE milliseconds: a delay added to every such call.

In test mode a single call can also be targeted exactly with the gRPC metadata
`x-test-fault: before` or `x-test-fault: after_commit` (ignored outside test mode).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from engine.config import SettingsError
from services.common.errors import InjectedFault, InvalidArgument

__all__ = [
    "TEST_FAULT_KEY",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "Metadata",
    "parse_faults",
]

Metadata = tuple[tuple[str, str | bytes], ...]

TEST_FAULT_KEY: Final = "x-test-fault"
ANY_MUTATING: Final = "*"
MAX_LATENCY_MS: Final = 60_000


class FaultKind(StrEnum):
    BEFORE = "before"
    AFTER_COMMIT = "after_commit"
    LATENCY_MS = "latency_ms"


@dataclass(frozen=True, slots=True)
class FaultRule:
    method: str  # an RPC name or "*"
    kind: FaultKind
    value: float  # a probability, or milliseconds for LATENCY_MS


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject. The default plan injects nothing and ignores `x-test-fault`."""

    rules: tuple[FaultRule, ...] = ()
    seed: int | None = None
    test_mode: bool = False  # honour the per-call `x-test-fault` metadata

    @property
    def active(self) -> bool:
        return self.test_mode or bool(self.rules)

    def value(self, method: str, kind: FaultKind, *, mutating: bool) -> float:
        """The rule for `method` and `kind`: the method's own, else `*` for a mutating one."""
        fallback = 0.0
        for rule in self.rules:
            if rule.kind is not kind:
                continue
            if rule.method == method:
                return rule.value
            if rule.method == ANY_MUTATING and mutating:
                fallback = rule.value
        return fallback

    def describe(self) -> str:
        parts = [f"{r.method}:{r.kind.value}:{r.value:g}" for r in self.rules]
        if self.seed is not None:
            parts.append(f"seed:{self.seed}")
        return ",".join(parts) or "none"


def parse_faults(raw: str, methods: Collection[str], *, name: str = "SAGA_FAULTS") -> FaultPlan:
    """Parse the SAGA_FAULTS format above; any mistake is a SettingsError naming the rule."""
    rules: list[FaultRule] = []
    seed: int | None = None
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        fields = entry.split(":")
        if len(fields) == 2 and fields[0] == "seed":
            try:
                seed = int(fields[1])
            except ValueError:
                raise SettingsError(f"{name}: {entry!r}: the seed must be a whole number") from None
            continue
        if len(fields) != 3:
            raise SettingsError(
                f"{name}: {entry!r}: expected METHOD:KIND:VALUE or seed:N, "
                "e.g. Charge:after_commit:0.3"
            )
        method, kind_text, value_text = fields
        if method != ANY_MUTATING and method not in methods:
            known = ", ".join(sorted(methods))
            raise SettingsError(f"{name}: {entry!r}: unknown method {method!r} (known: {known})")
        try:
            kind = FaultKind(kind_text)
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise SettingsError(f"{name}: {entry!r}: kind must be one of {kinds}") from None
        rules.append(FaultRule(method, kind, _value(name, entry, kind, value_text)))
    return FaultPlan(tuple(rules), seed, test_mode=True)


def _value(name: str, entry: str, kind: FaultKind, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if kind is FaultKind.LATENCY_MS:
        if not 0 <= value <= MAX_LATENCY_MS:
            raise SettingsError(f"{name}: {entry!r}: latency must be 0 to {MAX_LATENCY_MS} ms")
    elif not 0 <= value <= 1:
        raise SettingsError(f"{name}: {entry!r}: a probability must be between 0 and 1")
    return value


class FaultInjector:
    """Applies a plan to calls. Holds the random source, so it is the edge's, not the
    ledgers': the ledgers never see a fault."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)

    async def before(self, method: str, metadata: Metadata, *, mutating: bool) -> None:
        """Delay and fail as planned before the call touches the ledger."""
        if not self.plan.active:
            return
        latency_ms = self.plan.value(method, FaultKind.LATENCY_MS, mutating=mutating)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        self._maybe_fail(method, FaultKind.BEFORE, metadata, mutating=mutating)

    def after_commit(self, method: str, metadata: Metadata, *, mutating: bool) -> None:
        """Fail as planned after the call's unit is durable."""
        if self.plan.active:
            self._maybe_fail(method, FaultKind.AFTER_COMMIT, metadata, mutating=mutating)

    def _maybe_fail(
        self,
        method: str,
        kind: FaultKind,
        metadata: Metadata,
        *,
        mutating: bool,
    ) -> None:
        if self.plan.test_mode and _requested(metadata) is kind:
            raise InjectedFault(method, kind.value)
        probability = self.plan.value(method, kind, mutating=mutating)
        if probability > 0 and self._rng.random() < probability:
            raise InjectedFault(method, kind.value)


def _requested(metadata: Metadata) -> FaultKind | None:
    for key, value in metadata:
        if key.lower() != TEST_FAULT_KEY:
            continue
        text = value.decode() if isinstance(value, bytes) else value
        if text in (FaultKind.BEFORE, FaultKind.AFTER_COMMIT):
            return FaultKind(text)
        raise InvalidArgument(TEST_FAULT_KEY, f"{text!r}: expected before or after_commit")
    return None
