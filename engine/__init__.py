"""The generic saga engine: definitions, the pure decision core, the write-ahead log
(SQLite WAL, or its in-memory twin), and the runner. Nothing here knows about orders."""

from engine.core import Phase, SagaStatus, Transition, decide, fold
from engine.definition import (
    Done,
    Refused,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from engine.errors import EngineError, StaleEpoch, StorageError, TransientStepError
from engine.log import CreateResult, NewSaga, SagaLog, SagaRecord
from engine.memory_log import MemorySagaLog
from engine.runner import Runner, RunnerSettings
from engine.sqlite_log import SqliteSagaLog

__all__ = [
    "CreateResult",
    "Done",
    "EngineError",
    "MemorySagaLog",
    "NewSaga",
    "Phase",
    "Refused",
    "RetryPolicy",
    "Runner",
    "RunnerSettings",
    "SagaDefinition",
    "SagaLog",
    "SagaRecord",
    "SagaStatus",
    "SqliteSagaLog",
    "StaleEpoch",
    "Step",
    "StepContext",
    "StepKind",
    "StepResult",
    "StorageError",
    "TransientStepError",
    "Transition",
    "decide",
    "fold",
]
