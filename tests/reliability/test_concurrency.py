"""Two CLI runs at once, ingest during a run, and a backfill during a run the
daemon's landing sensor launched: no lost batch, nothing twice.

The second `backfill` waits for the first (and says so) instead of writing the
same partitions at the same time; a batch ingested while a run works is
registered by the next run, and no chunk or document survives twice. A CLI
backfill and a sensor's run share the instance's pools: the backfill's dedup
waits for the `dedup_index` slot and says which run holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import lancedb
import polars as pl

from llama_assets.base.layout import DataLayout
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.instance import open_instance
from llama_assets.tables import read_table
from tests.landing import TOPIC_KEYS, topic
from tests.reliability.run_events import RunFollower, daemon, wait_for

CLI = [sys.executable, "-m", "llama_assets.cli"]


def test_two_backfills_and_an_ingest_at_once(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "LLAMA_DATA_ROOT": str(data), "DAGSTER_HOME": str(tmp_path / "home")}

    def ingest(batch: str, indices) -> None:
        folder = tmp_path / f"in-{batch}"
        folder.mkdir()
        for i in indices:
            (folder / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
        subprocess.run([*CLI, "ingest", str(folder), "--source", "docs", "--batch", batch],
                       env=env, check=True, capture_output=True)  # fmt: skip

    ingest("b1", range(0, 8))
    ingest("b2", range(5, 12))  # 3 documents of b1 again: one copy must survive
    first, second = (
        subprocess.Popen(
            [*CLI, "backfill"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for _ in range(2)
    )
    time.sleep(1.0)
    ingest("b3", range(12, 16))  # lands while the backfills work
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert any("is working on this instance; waiting for it to finish" in o for o in outs), outs

    # b3 arrived during the runs: the next backfill picks it up.
    last = subprocess.run([*CLI, "backfill"], env=env, capture_output=True, text=True, timeout=900)
    assert last.returncode == 0 and "docs/b3" in last.stdout, last.stdout + last.stderr

    layout = DataLayout(data)
    ids = lancedb.connect(str(layout.lancedb)).open_table("chunks").to_arrow()["chunk_id"]
    ids = ids.to_pylist()
    assert len(ids) == len(set(ids)) > 0
    shards = {key: read_table(layout.shards(key)) for key in ("docs/b1", "docs/b2", "docs/b3")}
    texts = pl.concat([frame.select("text") for frame in shards.values()])["text"]
    assert texts.n_unique() == len(texts)  # no duplicate survivor
    counts = {key: frame.height for key, frame in shards.items()}
    assert DedupIndex(layout.dedup_index.local).batch_counts() == counts


def test_a_backfill_during_a_sensor_launched_run_of_the_same_batch(tmp_path, monkeypatch):
    data, home = tmp_path / "data", tmp_path / "home"
    # The sensor's run executes its steps in its worker process, as `make prod-local`
    # runs them (a process a step, Dagster's default, costs about 10 s of imports a
    # step here and is what the daemon crash test in test_crash_consistency.py runs).
    env = {**os.environ, "LLAMA_DATA_ROOT": str(data), "DAGSTER_HOME": str(home),
           "LLAMA_COALESCE_WINDOW_SECONDS": "0", "LLAMA_EXECUTOR": "in_process"}  # fmt: skip
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    open_instance().dispose()
    folder = tmp_path / "in-b1"
    folder.mkdir()
    for i in range(4):
        (folder / f"{TOPIC_KEYS[i]}.txt").write_text(topic(i))
    for i in (1, 3):  # two documents twice in the batch: one copy each survives
        (folder / f"copy-{TOPIC_KEYS[i]}.txt").write_text(topic(i))
    subprocess.run([*CLI, "ingest", str(folder), "--source", "docs", "--batch", "b1"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    backfill_log = tmp_path / "backfill.log"
    with open_instance() as instance:
        follower = RunFollower(instance)
        # Holding the dedup index keeps the sensor's run inside clean_shards until the
        # backfill has started and said that it waits (a run of 6 documents is over in
        # seconds otherwise).
        with daemon(env, tmp_path / "daemon.log") as alive:
            with DedupIndex(DataLayout(data).dedup_index.local).exclusive():
                wait_for(lambda: follower.seen("clean_shards") is not None,
                         "the sensor-launched run's dedup", alive=alive)  # fmt: skip
                sensor_run = follower.seen("clean_shards")
                with open(backfill_log, "w") as log:
                    backfill = subprocess.Popen(
                        [*CLI, "backfill", "--partitions", "docs/b1"], env=env,
                        stdout=log, stderr=subprocess.STDOUT, text=True,
                    )  # fmt: skip
                wait_for(lambda: "waiting for it to finish" in backfill_log.read_text(),
                         "the backfill's wait", alive=lambda: backfill.poll() is None)  # fmt: skip
            wait_for(lambda: instance.get_run_by_id(sensor_run).is_finished,
                     "the sensor-launched run's end", alive=alive)  # fmt: skip
            backfill.wait(timeout=1200)
        assert instance.get_run_by_id(sensor_run).status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(sensor_run).tags["dagster/sensor_name"] == (
            "landing_zone_sensor"
        )
    out = backfill_log.read_text()
    assert backfill.returncode == 0, out
    assert (
        f"run {sensor_run[:8]} (launched by landing_zone_sensor) is materialising docs/b1; "
        "waiting for it to finish" in out
    ), out

    layout = DataLayout(data)
    shards = read_table(layout.shards("docs/b1"))
    assert shards.height == 4 and shards["text"].n_unique() == 4  # none lost, none twice
    assert DedupIndex(layout.dedup_index.local).batch_counts() == {"docs/b1": 4}
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    chunks = table.to_arrow()
    ids = chunks["chunk_id"].to_pylist()
    assert len(ids) == len(set(ids)) > 0  # no vector twice
    indexed = set(shards.filter(pl.col("for_index"))["doc_id"].to_list())
    assert set(chunks["doc_id"].to_pylist()) == indexed
    # The index answers (not corrupted by two writers): every row reads back.
    assert table.count_rows() == len(ids)
    [hit] = table.search(chunks["vector"][0].as_py()).limit(1).to_list()
    assert hit["_distance"] < 1e-4
