"""A run killed with kill -9 gives its pool slot back; the next run completes.

Reproduces what an attack found: a run killed during `clean_shards` held the
`dedup_index` slot forever, stayed STARTED, and every later run spun silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg

from llama_assets.base.layout import DataLayout
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.dead_runs import reap_dead_runs
from llama_assets.instance import open_instance
from tests.landing import topic
from tests.reliability.run_events import step_started


def test_kill_9_during_clean_shards_frees_the_dedup_slot(tmp_path, monkeypatch):
    home, root = tmp_path / "home", tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LLAMA_DATA_ROOT": str(root),
        "LLAMA_COALESCE_WINDOW_SECONDS": "0",
    }
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(8):
        (docs / f"{i}.txt").write_text(topic(i))
    cli = [sys.executable, "-m", "llama_assets.cli"]
    subprocess.run([*cli, "ingest", str(docs), "--source", "src", "--batch", "b1"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    open_instance().dispose()  # created before the CLI and this test read it
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Holding the dedup index keeps clean_shards inside its step, with its pool slot,
    # until the kill: on 8 documents the step is over in 0.2 s, faster than a poll.
    with DedupIndex(DataLayout(root).dedup_index.local).exclusive():
        first = subprocess.Popen(
            [*cli, "backfill", "--partitions", "src/b1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        with open_instance() as instance:
            deadline = time.monotonic() + 240
            while not (
                step_started(instance, "clean_shards")
                and instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots
            ):
                assert first.poll() is None, first.stdout.read().decode()
                assert time.monotonic() < deadline, "clean_shards never started"
                time.sleep(0.2)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    with open_instance() as instance:
        [stuck] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        held = instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots
        assert [slot.run_id for slot in held] == [stuck.run_id]

    again = subprocess.run(
        [*cli, "backfill", "--partitions", "src/b1"], env=env, capture_output=True, timeout=300
    )
    out = again.stdout.decode() + again.stderr.decode()
    assert again.returncode == 0, out
    assert f"run {stuck.run_id[:8]}" in out and "pool slots given back" in out
    with open_instance() as instance:
        run = instance.get_run_by_id(stuck.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots
        active = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert not active


SLOW_RUN = """
import time, dagster as dg

@dg.asset(pool="dedup_index")
def slow():
    time.sleep(600)

dg.materialize([slow], instance=dg.DagsterInstance.get())
"""


def test_the_dead_run_sensor_reaps_a_killed_worker(tmp_path, monkeypatch):
    """What the daemon does for runs it launched: their worker's PID is in the event log."""
    from sensors.dead_runs import dead_run_sensor

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    open_instance().dispose()
    worker = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN], env={**os.environ, "DAGSTER_HOME": str(home)}
    )
    with open_instance() as instance:
        deadline = time.monotonic() + 300
        while not step_started(instance, "slow"):
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        worker.kill()
        worker.wait()
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # what the daemon saw before
        with dg.build_sensor_context(instance=instance) as context:
            result = dead_run_sensor.evaluate_tick(context)
        assert "1 dead run(s) reaped" in result.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("dedup_index").claimed_slots


def test_a_run_that_ended_while_queued_for_a_slot_does_not_block_the_pool(instance):
    """A run stopped while its step waited for the `gpu` slot (SIGTERM during the
    wait) ended with its place in the pool's queue left behind: every later run
    polled behind it for ever (found by the signals test under load). The next
    `run` (and the daemon's dead-run sensor) frees what ended runs still hold."""
    from dagster._core.test_utils import create_run_for_test

    storage = instance.event_log_storage
    storage.set_concurrency_slots("gpu", 1)
    holder = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED)
    stopped = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED)
    later = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED)
    assert storage.claim_concurrency_slot("gpu", holder.run_id, "embeddings").is_claimed
    assert not storage.claim_concurrency_slot("gpu", stopped.run_id, "embeddings").is_claimed
    instance.report_run_failed(instance.get_run_by_id(stopped.run_id), "stopped by a signal")
    storage.free_concurrency_slot_for_step(holder.run_id, "embeddings")  # the holder ends
    # The queue is served in order: the stopped run's place comes first.
    assert not storage.claim_concurrency_slot("gpu", later.run_id, "embeddings").is_claimed

    assert reap_dead_runs(instance) == []  # no process died; an ended run's claims go
    assert storage.claim_concurrency_slot("gpu", later.run_id, "embeddings").is_claimed
    assert stopped.run_id not in storage.get_concurrency_run_ids()
