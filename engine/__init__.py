"""The generic saga engine: definitions, the pure decision core, the write-ahead saga log
(SQLite WAL, or its in-memory twin for tests), and the runner that drives sagas through
it and claims the ones nobody drives (recovery). Nothing here knows about orders.

What a user of the engine needs is exported here (docs/writing-a-saga.md walks through
it); the modules' other names are the engine's own business.

- Define: `SagaDefinition` of `Step`s, each of a `StepKind`, with a `RetryPolicy`; an
  action takes a `StepContext` and returns `Done()` or `Refused(reason)`, raises
  `TransientStepError` to be retried and `StaleEpoch` when a participant fenced it.
- Store: `SqliteSagaLog.open(DbConfig(path))` (or `MemorySagaLog()` in tests).
- Run: `Runner(log, [definition], RunnerSettings(owner=new_owner_id("app")))`, `start()`,
  `start_saga(NewSaga(...))` (an idempotency key makes it start once), `stop()`. A runner
  with `claim=True` also finishes sagas left by a dead owner once their lease ends.
- Read: `log.get(id)` (a `SagaRecord`), `log.transitions(id)` (its history, in order),
  `log.list_sagas(SagaFilter(...))`; `fold` and `decide` say where a saga is and what comes
  next.
"""

from engine.core import Phase, SagaStatus, Transition, decide, fold
from engine.definition import (
    DefinitionError,
    Done,
    Refused,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from engine.errors import (
    CommitOutcomeUnknown,
    EngineError,
    Overloaded,
    StaleEpoch,
    StorageError,
    TransientStepError,
)
from engine.memory_log import MemorySagaLog
from engine.runner import Runner, RunnerSettings, Started, new_owner_id
from engine.saga_log import (
    IdempotencyKeyReused,
    NewSaga,
    SagaFilter,
    SagaLog,
    SagaPage,
    SagaRecord,
)
from engine.sqlite import DbConfig, Synchronous
from engine.sqlite_log import SqliteSagaLog

__all__ = [
    "CommitOutcomeUnknown",
    "DbConfig",
    "DefinitionError",
    "Done",
    "EngineError",
    "IdempotencyKeyReused",
    "MemorySagaLog",
    "NewSaga",
    "Overloaded",
    "Phase",
    "Refused",
    "RetryPolicy",
    "Runner",
    "RunnerSettings",
    "SagaDefinition",
    "SagaFilter",
    "SagaLog",
    "SagaPage",
    "SagaRecord",
    "SagaStatus",
    "SqliteSagaLog",
    "StaleEpoch",
    "Started",
    "Step",
    "StepContext",
    "StepKind",
    "StepResult",
    "StorageError",
    "Synchronous",
    "TransientStepError",
    "Transition",
    "decide",
    "fold",
    "new_owner_id",
]
