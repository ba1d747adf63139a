"""The CLI's error root. Every command prints an EngineError as one `saga: error:` line
(saga/cli.py), so the CLI's own errors derive from it too."""

from __future__ import annotations

from engine.errors import EngineError

__all__ = ["CliError", "NoSagaLog", "OpsInputError"]


class CliError(EngineError):
    code = "cli_error"


class OpsInputError(CliError):
    """The operator's input cannot be used (a bad duration, status or combination)."""

    code = "invalid_input"


class NoSagaLog(CliError):
    """The path names no saga log (missing, or some other SQLite file)."""

    code = "no_saga_log"
