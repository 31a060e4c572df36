"""Opening the Dagster instance the CLI, the Makefile and the tests share.

Two first commands at once on a fresh ``DAGSTER_HOME`` used to create the
SQLite schema twice: two alembic heads, and an instance nothing could open
again (2 of 4 trials). The schema is therefore created under an exclusive lock
in the instance folder; once it exists, opening it again is cheap.
"""

from __future__ import annotations

import sys

import dagster as dg

from llama_assets.base.locks import file_lock
from llama_assets.base.settings import ensure_dagster_home

LOCK_NAME = ".instance.lock"


def open_instance() -> dg.DagsterInstance:
    """The instance at ``DAGSTER_HOME`` (created with the local config if new)."""
    home = ensure_dagster_home()

    def waiting() -> None:
        print(f"waiting for another process to create the instance in {home}", file=sys.stderr)

    with file_lock(home / LOCK_NAME, on_wait=waiting):
        instance = dg.DagsterInstance.get()
        # Touch every storage now, inside the lock: SQLite storages create and
        # migrate their schema on first use.
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("batches")
        instance.all_instigator_state()
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.get_pool_limits()
    return instance
