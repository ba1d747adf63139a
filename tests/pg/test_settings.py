"""`*_DATABASE_URL` parsing: accepted forms, one-line errors, never the password."""

from __future__ import annotations

import pytest

from engine.config import SettingsError
from engine.pg.settings import database_url

SECRET = "s3cr3t-pw"


def test_unset_or_empty_is_none() -> None:
    assert database_url({}, "SAGA_DATABASE_URL") is None
    assert database_url({"SAGA_DATABASE_URL": "  "}, "SAGA_DATABASE_URL") is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db.example:5432/sagas",
        "postgres://app@db.example/sagas",
        f"postgresql://app:{SECRET}@10.0.0.5:6432/sagas?sslmode=verify-full",
        "postgresql://app@[::1]:5432/sagas?application_name=gw&connect_timeout=3",
        "postgresql:///sagas?host=/var/run/postgresql",
    ],
)
def test_accepted(url: str) -> None:
    cfg = database_url({"X_DATABASE_URL": url}, "X_DATABASE_URL")
    assert cfg is not None
    assert cfg.dsn == url
    assert SECRET not in cfg.redacted
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)


def test_redacted_keeps_everything_but_the_password() -> None:
    cfg = database_url(
        {"U": f"postgresql://app:{SECRET}@h:5432/db?sslmode=require&password={SECRET}"}, "U"
    )
    assert cfg is not None
    assert cfg.redacted == "postgresql://app:***@h:5432/db?sslmode=require&password=***"
    assert cfg.database == "db"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://app:{SECRET}@h/db", "postgresql://"),
        (f"postgresql://app:{SECRET}@h:notaport/db", "not a valid URL"),
        (f"postgresql://app:{SECRET}@h:99999/db", "not a valid URL"),
        (f"postgresql://app:{SECRET}@h/db?sslmode=sometimes", "sslmode='sometimes'"),
        (f"postgresql://app:{SECRET}@h/db?sslmod=require", "unknown parameter 'sslmod'"),
        (f"postgresql://app:{SECRET}@/db", "no host"),
        (f"postgresql://app:{SECRET}@h/db?connect_timeout=soon", "connect_timeout"),
        (f"{SECRET}", "postgresql://"),
    ],
)
def test_malformed_is_one_line_naming_the_variable(url: str, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        database_url({"SAGA_DATABASE_URL": url}, "SAGA_DATABASE_URL")
    message = str(caught.value)
    assert message.startswith("SAGA_DATABASE_URL=")
    assert why in message
    assert "\n" not in message
    assert SECRET not in message
