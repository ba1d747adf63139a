"""The runner: drives sagas through the log, write-ahead, with retries and leases.

For each saga it owns, the runner folds the log, asks the pure core what to do next, and
does exactly that, recording it first:
- A step's intent is committed before its call; its outcome is committed before the next
  step starts. The outcome rides in the same commit as the next step's intent (or the
  terminal status): one commit per step instead of two, and nothing is acted on that is
  not durable. If the log cannot be written, the call is not made; the saga stays where
  it is and is recovered later.
- Transient failures are retried by tenacity (exponential backoff with jitter) within the
  step's budget; the budget's end is the core's business (compensate, or park).
- A runner owns a saga by its lease (engine/claims.py renews them). When the log or a
  participant says its epoch is stale, it drops that saga at once.
- Capacity is decided here: a new saga is driven at once when there is a slot, else it
  waits in the log (up to `max_queue` waiting, past which it is refused) until the claim
  pump (engine/claims.py) finds room for it. Recovery is the same road.
- Stopping: no new steps start; in-flight calls get the drain timeout; whatever is left is
  released so another process can take it over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from engine.admission import Admission
from engine.claims import ClaimPump, LeaseHeartbeat
from engine.clock import Clock
from engine.core import (
    Call,
    Compensate,
    Finish,
    Idle,
    Park,
    Phase,
    SagaState,
    SagaStatus,
    StartCompensation,
    Transition,
    decide,
    evolve,
    fold,
    record_reason,
)
from engine.crashpoints import CrashPoints
from engine.definition import Done, SagaDefinition, Step, StepContext
from engine.errors import EngineError, Overloaded, StaleEpoch, unreachable
from engine.hooks import Hooks, NullHooks
from engine.logging_setup import SAGA_ID
from engine.saga_log import NewSaga, SagaLog, SagaRecord, Takeover

__all__ = ["Runner", "RunnerSettings", "Started", "new_owner_id"]

logger = logging.getLogger(__name__)


def new_owner_id(role: str) -> str:
    """Unique per process start: a restarted process never inherits its old leases."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    owner: str
    lease_s: float = 10.0
    capacity: int = 256  # sagas driven at once; more wait in the log
    claim_batch: int = 64
    poll_s: float = 1.0  # how often the pump looks for claimable sagas when idle
    drain_s: float = 10.0
    claim: bool = True  # run the pump at all
    max_queue: int | None = None  # sagas waiting in the log past which a new one is refused


@dataclass(frozen=True, slots=True)
class Started:
    """What `Runner.start_saga` did: the saga (durable), whether it is new (False: the
    idempotency key named it already), and whether it waits in the log for a slot."""

    record: SagaRecord
    created: bool
    queued: bool


class _StopWhen(stop_base):
    """tenacity stop condition: stop retrying once the runner is stopping."""

    def __init__(self, flag: Callable[[], bool]) -> None:
        self._flag = flag

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._flag()


class _AttemptFailed(Exception):
    """One attempt failed transiently; tenacity decides whether to try again."""


@dataclass(slots=True)
class _Saga:
    record: SagaRecord
    defn: SagaDefinition
    state: SagaState
    pending: list[Transition] = field(default_factory=list)  # outcomes not yet durable
    in_call: bool = False
    # The first step's intent, made durable with the saga (Runner._start_saga) and not yet
    # in `state`: the first attempt takes it instead of committing one of its own.
    made_intent: Transition | None = None

    @property
    def epoch(self) -> int:
        return self.record.epoch


class Runner:
    def __init__(
        self,
        saga_log: SagaLog,
        definitions: Iterable[SagaDefinition],
        settings: RunnerSettings,
        *,
        clock: Clock | None = None,
        hooks: Hooks | None = None,
        crash: CrashPoints | None = None,
    ) -> None:
        self.log = saga_log
        self.settings = settings
        self.definitions = {d.name: d for d in definitions}
        # The log's clock by default: leases are compared across processes (engine/clock.py).
        self._clock = clock or saga_log.clock
        self._hooks: Hooks = hooks or NullHooks()
        self._crash = crash or CrashPoints()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sagas: dict[str, _Saga] = {}
        # Claims of sagas whose previous drive here has not ended yet (see adopt).
        self._successors: dict[str, Takeover] = {}
        self._stopping = False
        self._reserved = 0  # slots promised to creates still writing (see _free)
        self._first_steps: dict[str, str | None] = {}  # definition -> its first step's name
        self._admission = Admission()
        now_ms = self._clock.now_ms
        self._leases = LeaseHeartbeat(
            saga_log, settings.owner, self._lease_ms, now_ms, on_released=self._room_freed
        )
        self._pump = ClaimPump(
            saga_log,
            settings.owner,
            self._lease_ms,
            now_ms,
            room=lambda: self._free,
            adopt=self.adopt,
            hooks=self._hooks,
            batch=settings.claim_batch,
            poll_s=settings.poll_s,
        )
        self._background: list[asyncio.Task[None]] = []

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._background.append(asyncio.create_task(self._leases.run(), name="lease-heartbeat"))
        if self.settings.claim:
            self._background.append(asyncio.create_task(self._pump.run(), name="claim-pump"))

    async def stop(self) -> None:
        """Stop starting steps, let in-flight calls finish (up to the drain timeout), then
        hand every saga still owned back to the log for another process to claim."""
        if self._stopping:
            return
        self._stopping = True
        self._pump.stop()
        for sid, task in list(self._tasks.items()):
            saga = self._sagas.get(sid)
            if saga is None or not saga.in_call:
                task.cancel()  # waiting on a backoff or the log: nothing in flight
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks.values()), timeout=self.settings.drain_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(EngineError):
            released = await self.log.release(self.settings.owner)
            if released:
                logger.info("handed %d unfinished sagas back to the log", released)

    async def abandon(self) -> None:
        """Stop at once and hand nothing back, as a crash would: leases run out and another
        runner takes over. For tests, and for a process that can no longer trust itself."""
        self._stopping = True
        self._pump.stop()
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def active(self) -> int:
        return len(self._tasks)

    @property
    def has_capacity(self) -> bool:
        return not self._stopping and self._free > 0

    @property
    def _free(self) -> int:
        # Creates in flight hold the slot they were promised: without that, every create
        # awaiting the log at once saw the same free slot, and all of them took it.
        return self.settings.capacity - len(self._tasks) - self._reserved

    @property
    def takes_new(self) -> bool:
        """A new saga would be driven at once, not queued in the log: there is a free
        slot and no saga this runner queued is known to be waiting for one."""
        return self.has_capacity and not self._pump.backlog

    async def claim_now(self) -> int:
        """Claim and start as many claimable sagas as there is room for; returns how many
        (an operator's change made one claimable: take it now, not at the next poll)."""
        return await self._pump.claim_now()

    async def wait_idle(self) -> None:
        """Wait until no saga is being driven (tests, benchmarks; bound it with a timeout)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    # ---- starting sagas ------------------------------------------------------------------

    async def start_saga(self, new: NewSaga) -> Started:
        """Make a saga durable and drive it here, or queue it in the log when busy.

        Returns only after the saga is durable; an existing idempotency key returns that
        saga instead (and starts nothing). With no slot free and `max_queue` sagas
        already waiting, raises Overloaded before writing anything. Shielded: a caller
        cancelled after the create was sent (a client hanging up) must not leave a
        durable saga nobody drives."""
        return await asyncio.shield(self._start_saga(new))

    async def _start_saga(self, new: NewSaga) -> Started:
        if new.definition not in self.definitions:
            raise EngineError(f"unknown saga definition {new.definition!r}")
        owned = self.takes_new
        bounded = not owned and self.settings.max_queue is not None
        if bounded:
            assert self.settings.max_queue is not None
            waiting = await self._admission.enter(
                self.settings.max_queue,
                lambda: self.log.count_claimable(now_ms=self._clock.now_ms()),
            )
            if waiting is not None:
                raise Overloaded(waiting)
        now = self._clock.now_ms()
        # A saga driven here has its first step's intent written with it: one commit fewer
        # per saga, and the first call starts as soon as the 201 can be sent.
        made = self._first_intent(new) if owned else None
        self._reserved += owned
        try:
            result = await self.log.create(
                new,
                owner=self.settings.owner if owned else None,
                lease_expires_ms=now + self._lease_ms,
                now_ms=now,
                first=() if made is None else (made,),
            )
        finally:
            self._reserved -= owned
            if bounded:
                self._admission.leave()
        queued = not owned or self._stopping
        if result.created:
            self._hooks.saga_started(new.definition)
            self._crash.hit("after_create")
            if queued:
                self._pump.queued()
            else:
                self._spawn(result.record, (), made)
        return Started(result.record, result.created, queued and result.created)

    def _first_intent(self, new: NewSaga) -> Transition | None:
        """The intent a new saga's first attempt records, or None when it starts with no
        call (a definition without steps). The same for every saga of a definition."""
        if new.definition not in self._first_steps:
            defn = self.definitions[new.definition]
            nxt = decide(defn, fold(defn, ()))
            self._first_steps[new.definition] = (
                defn.steps[nxt.step].name if isinstance(nxt, Call) else None
            )
        step = self._first_steps[new.definition]
        return None if step is None else Transition(step, Phase.INTENT, 1, None, new.trace_id)

    def adopt(self, takeover: Takeover) -> bool:
        """Drive a saga this runner has just claimed (the pump's and the daemon's road)."""
        if self._stopping:
            return False
        if takeover.record.id in self._tasks:
            # An operator's change unowned a saga still driven here (e.g. mid-call) and we
            # claimed it again: the claim bumped the epoch, so the old drive is fenced at
            # its next write. Drive the claim once it has stopped; refusing it would leave
            # the saga owned by us, its lease renewed by the heartbeat, and driven by nobody.
            self._successors[takeover.record.id] = takeover
            return True
        self._spawn(takeover.record, takeover.transitions)
        return True

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

    def _spawn(
        self,
        record: SagaRecord,
        transitions: Sequence[Transition],
        made_intent: Transition | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._drive(record, transitions, made_intent), name=f"saga-{record.id}"
        )
        self._tasks[record.id] = task
        self._hooks.inflight(len(self._tasks))
        saga_id = record.id
        task.add_done_callback(lambda _task: self._done(saga_id))

    def _done(self, saga_id: str) -> None:
        self._tasks.pop(saga_id, None)
        self._sagas.pop(saga_id, None)
        successor = self._successors.pop(saga_id, None)
        if successor is not None and not self._stopping:
            self._leases.keep(saga_id)  # the old drive's release is not the claim's
            self._spawn(successor.record, successor.transitions)
            return
        self._hooks.inflight(len(self._tasks))
        self._room_freed()

    def _room_freed(self) -> None:
        self._pump.wake()  # the pump may claim a queued (or just released) saga

    # ---- the drive loop ------------------------------------------------------------------

    async def _drive(
        self,
        record: SagaRecord,
        transitions: Sequence[Transition],
        made_intent: Transition | None = None,
    ) -> None:
        SAGA_ID.set(record.id)  # this task's log lines name the saga
        defn = self.definitions.get(record.definition)
        try:
            if defn is None:
                raise EngineError(f"unknown saga definition {record.definition!r}")
            saga = _Saga(record, defn, fold(defn, transitions), made_intent=made_intent)
        except EngineError as exc:
            # Nothing here can drive it; claiming it again would loop for ever. Park it
            # where an operator will see it (a newer program may know what to do).
            await self._park_unreadable(record, f"cannot drive: {exc.message}")
            return
        self._sagas[record.id] = saga
        try:
            await self._loop(saga)
        except StaleEpoch as exc:
            logger.warning("saga %s: %s; dropping it", record.id, exc.message)
        except EngineError as exc:
            # The log cannot be written (or read): stop where we are; the saga will be
            # claimed again once released (here, or by the heartbeat when it can write).
            level = logging.DEBUG if unreachable(exc) else logging.WARNING
            logger.log(level, "saga %s: stopped: %s", record.id, exc.message)
            self._leases.release_later(record.id)
        except asyncio.CancelledError:
            self._leases.release_later(record.id)
            raise
        except Exception:
            logger.exception("saga %s: runner bug; released for another attempt", record.id)
            self._leases.release_later(record.id)

    async def _loop(self, saga: _Saga) -> None:
        while True:
            if self._stopping:
                await self._flush(saga)
                return
            nxt = decide(saga.defn, saga.state)
            if isinstance(nxt, Idle):
                return
            if isinstance(nxt, Finish):
                phase = Phase.COMPLETED if nxt.status is SagaStatus.COMPLETED else Phase.COMPENSATED
                self._crash.hit("before_finish")
                await self._commit(saga, [self._saga_fact(saga, phase)])
                self._crash.hit("after_finish")
                self._hooks.saga_finished(saga.defn.name, nxt.status)
                return
            if isinstance(nxt, Park):
                await self._commit(saga, [self._saga_fact(saga, Phase.PARKED, nxt.reason)])
                logger.warning("saga %s parked: %s", saga.record.id, nxt.reason)
                self._hooks.saga_finished(saga.defn.name, SagaStatus.NEEDS_ATTENTION)
                return
            if isinstance(nxt, StartCompensation):
                # Buffered: it becomes durable with the first compensation's intent.
                self._buffer(saga, Transition("", Phase.COMPENSATE, 0, nxt.reason))
                continue
            compensation = isinstance(nxt, Compensate)
            assert isinstance(nxt, Call | Compensate)
            await self._attempts(saga, nxt.step, compensation)

    async def _park_unreadable(self, record: SagaRecord, reason: str) -> None:
        logger.error("saga %s: %s; parked", record.id, reason)
        try:
            await self.log.append(
                record.id,
                record.epoch,
                [Transition("", Phase.PARKED, record.epoch, reason, record.trace_id)],
                status=SagaStatus.NEEDS_ATTENTION,
                reason=reason,
                now_ms=self._clock.now_ms(),
            )
        except EngineError as exc:
            logger.warning("saga %s: could not park it: %s", record.id, exc.message)
            self._leases.release_later(record.id)

    def _saga_fact(self, saga: _Saga, phase: Phase, error: str | None = None) -> Transition:
        # Saga-level facts carry the epoch as their attempt: unique per owner, so a saga
        # parked, resumed and parked again records two distinct facts.
        return Transition("", phase, saga.epoch, error, saga.record.trace_id)

    def _buffer(self, saga: _Saga, t: Transition) -> None:
        saga.pending.append(t)
        saga.state = evolve(saga.defn, saga.state, t)

    async def _commit(self, saga: _Saga, ts: Sequence[Transition]) -> None:
        for t in ts:
            saga.state = evolve(saga.defn, saga.state, t)
        batch = [*saga.pending, *ts]
        await self.log.append(
            saga.record.id,
            saga.epoch,
            batch,
            status=saga.state.status,
            reason=record_reason(saga.state),
            now_ms=self._clock.now_ms(),
        )
        saga.pending.clear()

    async def _flush(self, saga: _Saga) -> None:
        if saga.pending:
            with contextlib.suppress(EngineError):
                await self._commit(saga, ())

    async def _attempts(self, saga: _Saga, index: int, compensation: bool) -> None:
        step = saga.defn.steps[index]
        s = saga.state.steps[index]
        budget = step.retry.park_after if compensation else step.attempt_budget
        left = budget - (s.comp_spent if compensation else s.spent)
        policy = step.retry

        # The first attempt runs without tenacity: nearly every step succeeds at once, and
        # building and iterating an AsyncRetrying for each one was a large share of the
        # event loop's time under load (docs/benchmarks.md). If it fails, tenacity takes over as
        # though it had made that attempt itself: the failure is replayed as tenacity's
        # attempt 1, so the attempt budget and every backoff are exactly as before.
        if self._stopping:
            return
        try:
            await self._attempt(saga, index, step, compensation)
            return
        except _AttemptFailed as exc:
            first_failure: _AttemptFailed | None = exc

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(max(1, left)), _StopWhen(lambda: self._stopping)),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_backoff_s,
                max=policy.max_backoff_s,
                exp_base=policy.multiplier,
                jitter=policy.jitter_s,
            ),
            retry=retry_if_exception_type(_AttemptFailed),
            reraise=True,
        )
        with contextlib.suppress(_AttemptFailed):
            async for attempt in retrying:
                with attempt:
                    if first_failure is not None:
                        failed, first_failure = first_failure, None
                        raise failed
                    if self._stopping:
                        return
                    await self._attempt(saga, index, step, compensation)

    async def _attempt(self, saga: _Saga, index: int, step: Step, compensation: bool) -> None:
        s = saga.state.steps[index]
        number = (s.comp_attempts if compensation else s.attempts) + 1
        prefix = "comp_" if compensation else ""
        intent_phase = Phase.COMP_INTENT if compensation else Phase.INTENT
        record = saga.record
        with self._hooks.attempt(record, step.name, compensation, number) as trace_id:
            self._crash.hit(f"before_{prefix}intent", step.name)
            intent = Transition(step.name, intent_phase, number, None, trace_id)
            made, saga.made_intent = saga.made_intent, None
            if made is not None and _same_attempt(made, intent):
                saga.state = evolve(saga.defn, saga.state, made)  # durable since the create
            else:
                await self._commit(saga, [intent])
            self._crash.hit(f"after_{prefix}intent", step.name)
            fn = step.compensation if compensation else step.action
            assert fn is not None
            ctx = StepContext(
                saga_id=record.id,
                payload=record.payload,
                epoch=record.epoch,
                attempt=number,
                step=step.name,
                trace_id=trace_id,
                reason=saga.state.reason if compensation else None,
            )
            started = time.perf_counter()
            saga.in_call = True
            try:
                result = await asyncio.wait_for(fn(ctx), step.timeout_s)
            except StaleEpoch:
                self._attempt_done(saga, step, compensation, "fenced", started)
                raise
            except Exception as exc:  # transient, timeout, or a bug in the action: retried
                timed_out = isinstance(exc, TimeoutError)
                outcome = "timeout" if timed_out else "error"
                self._attempt_done(saga, step, compensation, outcome, started)
                self._crash.hit(f"after_{prefix}call", step.name)
                error = f"timed out after {step.timeout_s}s" if timed_out else _describe(exc)
                phase = Phase.COMP_ERROR if compensation else Phase.ERROR
                self._buffer(saga, Transition(step.name, phase, number, error, trace_id))
                raise _AttemptFailed(error) from exc
            finally:
                saga.in_call = False
            self._crash.hit(f"after_{prefix}call", step.name)
            if isinstance(result, Done):
                self._attempt_done(saga, step, compensation, "done", started)
                phase = Phase.COMP_DONE if compensation else Phase.DONE
                self._buffer(saga, Transition(step.name, phase, number, None, trace_id))
                return
            self._attempt_done(saga, step, compensation, "refused", started)
            if compensation:
                # A compensation must not say no; retry it, and park it if it never stops.
                self._buffer(
                    saga,
                    Transition(step.name, Phase.COMP_ERROR, number, result.reason, trace_id),
                )
                raise _AttemptFailed(result.reason)
            self._buffer(
                saga, Transition(step.name, Phase.REFUSED, number, result.reason, trace_id)
            )

    def _attempt_done(
        self, saga: _Saga, step: Step, compensation: bool, outcome: str, started: float
    ) -> None:
        self._hooks.attempt_finished(
            saga.defn.name, step.name, compensation, outcome, time.perf_counter() - started
        )


def _same_attempt(a: Transition, b: Transition) -> bool:
    return (a.step, a.phase, a.attempt) == (b.step, b.phase, b.attempt)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EngineError):
        return exc.message
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
