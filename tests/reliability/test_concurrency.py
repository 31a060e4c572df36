"""Two CLI runs at once, and ingest during a run: no lost batch, nothing twice.

The second `backfill` waits for the first (and says so) instead of writing the
same partitions at the same time; a batch ingested while a run works is
registered by the next run, and no chunk or document survives twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import lancedb
import polars as pl

from llama_assets.base.layout import DataLayout
from llama_assets.curate.dedup_index import DedupIndex
from tests.landing import TOPIC_KEYS, topic

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
    shards = {
        key: pl.read_parquet(layout.shards_root / key / "*.parquet")
        for key in ("docs/b1", "docs/b2", "docs/b3")
    }
    texts = pl.concat([frame.select("text") for frame in shards.values()])["text"]
    assert texts.n_unique() == len(texts)  # no duplicate survivor
    counts = {key: frame.height for key, frame in shards.items()}
    assert DedupIndex(layout.dedup_index).batch_counts() == counts
