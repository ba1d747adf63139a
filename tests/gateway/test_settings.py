"""GatewaySettings.from_env: the contract's defaults, the gateway's own, and one clear
SettingsError naming the variable for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import SettingsError
from engine.crashpoints import CrashPoints
from engine.log_settings import LogBackend
from engine.sqlite import Synchronous
from gateway.settings import GatewaySettings


def test_defaults() -> None:
    s = GatewaySettings.from_env({})
    assert s.http_addr == ("127.0.0.1", 8080)
    assert s.drive.log.path == Path("var") / "saga.db"
    assert s.drive.log.db.synchronous is Synchronous.FULL
    assert (s.redis_url, s.admin_token) == (None, None)
    assert (s.drive.lease_s, s.runner_capacity, s.max_queue) == (10.0, 256, 10_000)
    assert (s.drive.drain_s, s.max_body_bytes) == (10.0, 64 * 1024)
    assert s.drive.services.order == ("127.0.0.1", 9090)
    assert s.drive.services.inventory == ("127.0.0.1", 9092)


def test_every_variable_is_read() -> None:
    s = GatewaySettings.from_env(
        {
            "HTTP_ADDR": "0.0.0.0:9000",
            "SAGA_DATA_DIR": "/data",
            "REDIS_URL": "redis://localhost:6390/0",
            "SAGA_LEASE_S": "3",
            "PAYMENT_SERVICE_ADDR": "10.0.0.2:7000",
            "SAGA_ADMIN_TOKEN": "tok",
            "SAGA_SQLITE_SYNCHRONOUS": "normal",
            "SAGA_SQLITE_BUSY_TIMEOUT_MS": "250",
            "SAGA_RUNNER_CAPACITY": "8",
            "SAGA_MAX_QUEUE": "0",
            "SAGA_DRAIN_S": "1.5",
            "SAGA_MAX_BODY_BYTES": "2048",
            "SAGA_READY_TIMEOUT_S": "0.2",
            "SAGA_REDIS_TIMEOUT_MS": "2000",
        }
    )
    assert s.http_addr == ("0.0.0.0", 9000)
    assert s.drive.log.path == Path("/data/saga.db")
    assert (s.redis_url, s.redis_timeout_s) == ("redis://localhost:6390/0", 2.0)
    assert s.drive.services.payment == ("10.0.0.2", 7000)
    assert (s.drive.log.db.synchronous, s.drive.log.db.busy_timeout_ms) == (Synchronous.NORMAL, 250)
    assert (s.drive.lease_s, s.runner_capacity, s.max_queue) == (3.0, 8, 0)
    assert s.drive.drain_s == 1.5
    assert (s.max_body_bytes, s.ready_timeout_s, s.admin_token) == (2048, 0.2, "tok")
    assert "tok" not in repr(s)  # the token never reaches a log line
    explicit = GatewaySettings.from_env({"SAGA_DATA_DIR": "/d", "SAGA_LOG_DB_PATH": "/x/log.db"})
    assert explicit.drive.log.path == Path("/x/log.db")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_ADDR", "8080"),
        ("HTTP_ADDR", "host:port"),
        ("SAGA_LEASE_S", "0"),
        ("SAGA_LEASE_S", "nan"),
        ("SAGA_RUNNER_CAPACITY", "0"),
        ("SAGA_MAX_QUEUE", "-1"),
        ("SAGA_MAX_BODY_BYTES", "10"),
        ("SAGA_SQLITE_SYNCHRONOUS", "OFF"),
        ("SAGA_DRAIN_S", "-1"),
        ("ORDER_SERVICE_ADDR", "nowhere"),
        ("REDIS_URL", "localhost:6379"),
        ("SAGA_REDIS_TIMEOUT_MS", "0"),
        ("REDIS_URL", "redis://localhost:port"),
        ("SAGA_GATEWAY_WORKERS", "0"),
        ("SAGA_GATEWAY_WORKERS", "two"),
        ("SAGA_GATEWAY_WORKERS", "65"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        GatewaySettings.from_env({name: value})
    assert name in err.value.message


def test_crash_points_need_test_mode() -> None:
    assert CrashPoints.from_env({"SAGA_ENV": "test", "SAGA_CRASH_AT": "after_create"}).armed
    with pytest.raises(SettingsError):
        CrashPoints.from_env({"SAGA_CRASH_AT": "after_create"})


def test_the_order_saga_budgets_come_from_the_environment() -> None:
    from gateway.settings import GatewaySettings
    from recovery.settings import RecoverySettings

    env = {
        "SAGA_STEP_MAX_ATTEMPTS": "3",
        "SAGA_PARK_AFTER": "7",
        "SAGA_STEP_TIMEOUT_S": "1.5",
        "SAGA_MAX_STALLED_CLAIMS": "4",
    }
    for policy in (
        GatewaySettings.from_env(env).drive.policy,
        RecoverySettings.from_env(env).drive.policy,
    ):
        assert (policy.max_attempts, policy.park_after) == (3, 7)
        assert (policy.step_timeout_s, policy.max_stalled_claims) == (1.5, 4)


def test_the_in_memory_log_is_for_tests_only() -> None:
    assert GatewaySettings.from_env({}).drive.log.backend is LogBackend.SQLITE
    test_mode = {"SAGA_ENV": "test", "SAGA_LOG_BACKEND": "memory"}
    assert GatewaySettings.from_env(test_mode).drive.log.backend is LogBackend.MEMORY
    with pytest.raises(SettingsError) as err:  # production never loses durability silently
        GatewaySettings.from_env({"SAGA_LOG_BACKEND": "memory"})
    assert "SAGA_ENV" in err.value.message
    with pytest.raises(SettingsError) as err:
        GatewaySettings.from_env({"SAGA_LOG_BACKEND": "postgres"})
    assert "SAGA_LOG_BACKEND" in err.value.message


def test_gateway_workers_share_a_durable_log_only() -> None:
    assert GatewaySettings.from_env({}).workers == 1
    assert GatewaySettings.from_env({"SAGA_GATEWAY_WORKERS": "2"}).workers == 2
    memory = {"SAGA_ENV": "test", "SAGA_LOG_BACKEND": "memory", "SAGA_GATEWAY_WORKERS": "2"}
    with pytest.raises(SettingsError) as err:  # each worker would have a log of its own
        GatewaySettings.from_env(memory)
    assert "SAGA_GATEWAY_WORKERS" in err.value.message
