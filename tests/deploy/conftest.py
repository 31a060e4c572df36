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

from llama_assets.partitions import BATCHES
from scripts.prod_local import Topology, drop_database
from tests.landing import jsonl, land, topic

BATCH_KEYS = ["pg/b1", "pg/b2", "pg/b3"]


@pytest.fixture(scope="session")
def topology(tmp_path_factory):
    database = f"llama_test_deploy_{os.getpid()}_{secrets.token_hex(3)}"
    workdir = tmp_path_factory.mktemp("prod_local")
    # One run per landing batch: the tests name their partitions.
    topo = Topology(
        workdir=Path(workdir),
        database=database,
        extra_env={"LLAMA_COALESCE_WINDOW_SECONDS": "0"},
        # Drifting test batches would start fine-tunes no test waits for.
        stopped_sensors=("drift_sensor",),
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


@pytest.fixture(scope="session")
def sensor_batches(topology, prod_instance):
    """Three small batches landed; the daemon's landing_zone_sensor registers them
    and runs the batch pipeline for each. Returns the keys and the sensor's runs."""
    instance = prod_instance
    layout = topology.layout
    for i, key in enumerate(BATCH_KEYS):
        land(layout, key, {"docs.jsonl": jsonl({"id": f"d{i}", "text": topic(10 + i)})})
    wait_for(
        lambda: set(BATCH_KEYS) <= set(instance.get_dynamic_partitions(BATCHES)),
        "landing_zone_sensor registers the three batches",
    )
    sensor_filter = dg.RunsFilter(tags={"dagster/sensor_name": "landing_zone_sensor"})
    runs = wait_for(
        lambda: runs if len(runs := instance.get_runs(sensor_filter)) == 3 else None,
        "the sensor's three runs",
    )
    assert_succeeded(instance, wait_for_runs(instance, [r.run_id for r in runs]))
    return BATCH_KEYS, runs


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
