"""What every PostgreSQL user in the repo shares (the saga log, the services' ledgers):
settings from a URL, a pool, error classification, a retrying transaction, migrations."""

from engine.pg.errors import commit_outcome, is_connection_loss, is_transient, storage_error
from engine.pg.migrate import migrate, schema_version
from engine.pg.outage import Outage
from engine.pg.pool import open_pool
from engine.pg.settings import PgConfig, database_url
from engine.pg.tx import Retry, read, statement, transaction

__all__ = [
    "Outage",
    "PgConfig",
    "Retry",
    "commit_outcome",
    "database_url",
    "is_connection_loss",
    "is_transient",
    "migrate",
    "open_pool",
    "read",
    "schema_version",
    "statement",
    "storage_error",
    "transaction",
]
