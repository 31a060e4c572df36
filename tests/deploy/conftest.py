"""The production topology on loopback, shared by the deploy tests: SeaweedFS,
an instance on the machine's Postgres (a database of its own), a code server,
dagster-daemon and dagster-webserver, started by scripts/prod_local.py."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import dagster as dg
import pytest

from scripts.prod_local import Topology, drop_database


@pytest.fixture(scope="session")
def topology(tmp_path_factory):
    database = f"llama_test_deploy_{os.getpid()}_{secrets.token_hex(3)}"
    workdir = tmp_path_factory.mktemp("prod_local")
    # One run per landing batch: the tests name their partitions.
    topo = Topology(
        workdir=Path(workdir), database=database, extra_env={"LLAMA_COALESCE_WINDOW_SECONDS": "0"}
    )
    topo.start(fresh=True)
    try:
        yield topo
    finally:
        topo.stop()
        drop_database(topo.pg_host, topo.pg_port, topo.pg_user, database)


@pytest.fixture(scope="session")
def prod_instance(topology):
    with topology.instance() as instance:
        yield instance


def wait_for_runs(instance, run_ids, timeout: float = 300) -> list[dg.DagsterRun]:
    """Wait until every run has ended; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(run.is_finished for run in runs):
            return runs
        if time.monotonic() > deadline:
            states = {run.run_id: run.status.value for run in runs}
            raise TimeoutError(f"runs still going after {timeout:.0f} s: {states}")
        time.sleep(1)


def assert_succeeded(instance, runs) -> None:
    """Every run succeeded; otherwise fail with the failing steps' errors."""
    for run in runs:
        if run.status == dg.DagsterRunStatus.SUCCESS:
            continue
        errors = [
            f"{e.step_key}: {e.dagster_event.event_specific_data.error.message}"
            if e.dagster_event.is_step_failure
            else (e.message or "")
            for e in instance.all_logs(run.run_id)
            if e.dagster_event
            and (e.dagster_event.is_step_failure or e.dagster_event.is_run_failure)
        ]
        raise AssertionError(f"run {run.run_id} ended {run.status.value}: " + " | ".join(errors))


def wait_for(check, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(1)
