"""Settings parsing and the small pure helpers of services/common."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import SettingsError
from engine.sqlite import Synchronous
from services.common.errors import InvalidArgument
from services.common.fencing import epoch_from_metadata
from services.common.paging import MAX_PAGE_BYTES, MAX_PAGE_SIZE, LedgerPage, page_request
from services.settings import ServiceName, ServiceSettings, parse_seed_stock


def test_defaults_follow_the_contract() -> None:
    inv = ServiceSettings.from_env("inventory", {})
    assert inv.name is ServiceName.INVENTORY
    assert inv.addr == ("127.0.0.1", 9092)
    assert inv.ledger_path == Path("var") / "inventory.db"
    assert inv.seed_stock == (("prod_1", 15), ("prod_2", 10), ("prod_3", 0))
    assert inv.synchronous is Synchronous.FULL
    assert not inv.faults.active
    assert ServiceSettings.from_env("order", {}).addr == ("127.0.0.1", 9090)
    assert ServiceSettings.from_env("payment", {}).addr == ("127.0.0.1", 9091)


def test_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "SAGA_DATA_DIR": str(tmp_path),
        "PAYMENT_SERVICE_ADDR": "0.0.0.0:7001",
        "SAGA_SQLITE_SYNCHRONOUS": "normal",
        "INVENTORY_SEED_STOCK": "ignored=by payment",  # read by inventory only
    }
    got = ServiceSettings.from_env("payment", env)
    assert (got.addr, got.ledger_path, got.synchronous) == (
        ("0.0.0.0", 7001),
        tmp_path / "payment.db",
        Synchronous.NORMAL,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INVENTORY_SEED_STOCK": "prod_1"}, "PRODUCT=QUANTITY"),
        ({"INVENTORY_SEED_STOCK": "prod_1=ten"}, "not a number"),
        ({"INVENTORY_SEED_STOCK": "prod_1=-1"}, "quantity from 0"),
        ({"INVENTORY_SEED_STOCK": "=3"}, "PRODUCT=QUANTITY"),
        ({"INVENTORY_SEED_STOCK": "a=1,a=2"}, "given twice"),
        ({"INVENTORY_SERVICE_ADDR": "nope"}, "HOST:PORT"),
        ({"SAGA_SQLITE_SYNCHRONOUS": "OFF"}, "FULL or NORMAL"),
    ],
)
def test_a_bad_setting_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServiceSettings.from_env("inventory", env)


def test_unknown_service() -> None:
    with pytest.raises(SettingsError, match="unknown service"):
        ServiceSettings.from_env("shipping", {})


def test_seed_stock_format() -> None:
    assert parse_seed_stock(" a=1 , b = 2,,") == (("a", 1), ("b", 2))


def test_the_epoch_metadata() -> None:
    assert epoch_from_metadata(()) == 0
    assert epoch_from_metadata((("traceparent", "00-x"), ("x-saga-epoch", "42"))) == 42
    assert epoch_from_metadata((("X-Saga-Epoch", b"7"),)) == 7
    with pytest.raises(InvalidArgument, match="once"):
        epoch_from_metadata((("x-saga-epoch", "1"), ("x-saga-epoch", "2")))
    with pytest.raises(InvalidArgument, match="decimal integer"):
        epoch_from_metadata((("x-saga-epoch", "0x10"),))


def test_page_tokens_round_trip() -> None:
    page: LedgerPage[str] = LedgerPage.of(["a", "b/é", "c"], 2, lambda record: record)
    assert page.records == ("a", "b/é")
    request = page_request(0, page.next_token)
    assert (request.after, request.limit) == ("b/é", 100)
    assert LedgerPage.of(["a"], 2, lambda record: record).next_token == ""
    assert page_request(5000, "").limit == MAX_PAGE_SIZE


def test_a_page_of_big_records_ends_early_but_never_empty() -> None:
    records = ["a", "b", "c"]
    page = LedgerPage.of(records, 10, lambda r: r, size=lambda _: MAX_PAGE_BYTES // 2 + 1)
    assert (page.records, page.last_id) == (("a",), "a")
    huge = LedgerPage.of(records, 10, lambda r: r, size=lambda _: MAX_PAGE_BYTES * 2)
    assert huge.records == ("a",), "one record always fits"


def test_each_service_reads_its_own_database_url() -> None:
    env = {
        "ORDER_DATABASE_URL": "postgresql://saga:pw@db.internal:5432/shop",
        "INVENTORY_DATABASE_URL": " ",  # empty: the SQLite file
    }
    order = ServiceSettings.from_env("order", env)
    assert order.database is not None
    assert order.database.redacted == "postgresql://saga:***@db.internal:5432/shop"
    assert ServiceSettings.from_env("payment", env).database is None
    assert ServiceSettings.from_env("inventory", env).database is None


@pytest.mark.parametrize(
    "url", ["mysql://saga:pw@db/shop", "postgresql://saga:pw@db:99999/shop", "postgres://:pw@"]
)
def test_a_malformed_database_url_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        ServiceSettings.from_env("payment", {"PAYMENT_DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("PAYMENT_DATABASE_URL")
    assert "pw" not in message
    assert "\n" not in message
