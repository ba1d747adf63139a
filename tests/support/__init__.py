"""Helpers shared by the test suites (real processes, free ports, readiness probes)."""

from tests.support.procs import (
    ProcessFailed,
    SagaProcess,
    ServiceProcess,
    base_env,
    free_port,
    grpc_serving,
    kill_all,
    start_service,
    tcp_open,
)

__all__ = [
    "ProcessFailed",
    "SagaProcess",
    "ServiceProcess",
    "base_env",
    "free_port",
    "grpc_serving",
    "kill_all",
    "start_service",
    "tcp_open",
]
