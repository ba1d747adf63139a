"""Run at start-up by a Python whose PYTHONPATH holds this folder (tests/support/faultvfs.py
`faulty_env`): the process's SQLite goes through the fault VFS armed from its environment."""

from __future__ import annotations

import os

from tests.support.faultvfs import install_from_env

VFS = install_from_env(os.environ)  # kept alive for the life of the process
