"""The recovery daemon (`saga recovery`): finds unfinished sagas and finishes them."""

from recovery.daemon import serve
from recovery.settings import RecoverySettings

__all__ = ["RecoverySettings", "serve"]
