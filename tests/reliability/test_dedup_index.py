"""The dedup index lost or corrupt: a later batch still loses its duplicates.

The index is derived from the clean shards, so clean_shards checks it against
them before deduplicating: a lost batch is re-indexed from its shards, a file
SQLite cannot read is moved aside (kept for a person) and rebuilt.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl

from llama_assets.curate.assets import clean_shards, validated_documents
from llama_assets.curate.clean import fingerprint_part, reconcile_index
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import BATCHES
from llama_assets.tables import read_table
from tests.landing import jsonl, land, read_jsonl, topic

DATA_ASSETS = [raw_documents, validated_documents, clean_shards]


def materialize(key, instance, resources, assets=DATA_ASSETS):
    result = dg.materialize(assets, instance=instance, resources=resources, partition_key=key)
    assert result.success
    return result.asset_materializations_for_node("clean_shards")[0].metadata


def test_a_lost_then_corrupt_index_is_rebuilt_and_duplicates_still_go(layout, instance, resources):
    first, second = "web/b1", "web/b2"
    land(layout, first, {"a.jsonl": jsonl(*({"text": topic(i)} for i in range(3)))})
    land(layout, second, {"b.jsonl": jsonl({"text": topic(1)}, {"text": topic(5)})})
    instance.add_dynamic_partitions(BATCHES, [first, second])
    materialize(first, instance, resources)

    # Lost: the later batch's backfill re-indexes b1 from its shards first.
    layout.dedup_index.unlink()
    meta = materialize(second, instance, resources)
    assert meta["exact_duplicates"].value == 1
    assert set(meta["index_rebuilt_batches"].value) == {first}
    assert read_table(layout.shards(second))["text"].to_list() == [topic(5)]
    removed = read_jsonl(layout.quarantine(second) / "clean_shards.jsonl")
    assert [r["reason"].split(":")[0] for r in removed] == ["exact_duplicate"]
    assert DedupIndex(layout.dedup_index).batch_counts() == {first: 3, second: 1}

    # Corrupt: bytes SQLite cannot read. Moved aside, rebuilt, same outcome.
    for extra in ("-wal", "-shm"):
        layout.dedup_index.with_name(layout.dedup_index.name + extra).unlink(missing_ok=True)
    layout.dedup_index.write_bytes(b"not a database" * 1000)
    meta = materialize(second, instance, resources, [clean_shards])
    assert meta["exact_duplicates"].value == 1
    aside = meta["index_set_aside"].value
    assert aside.startswith(str(layout.dedup_index) + ".corrupt-")
    assert layout.dedup_index.with_name(aside.rsplit("/", 1)[1]).read_bytes().startswith(b"not a")
    assert DedupIndex(layout.dedup_index).batch_counts() == {first: 3, second: 1}


def test_reconcile_index_forgets_orphans_and_refills_short_batches(tmp_path):
    index = DedupIndex(tmp_path / "index.sqlite")
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": [topic(i) for i in range(3)]})
    part = fingerprint_part(docs)
    index.replace_batch("s/kept", ["a"], part.hashes[:1], part.signatures[:1])
    index.replace_batch("s/orphan", ["x"], part.hashes[:1], np.array(part.signatures[:1]))
    # s/kept's shards hold 3 documents, the index 1; s/orphan has no shards.
    done = reconcile_index(
        index, {"s/kept": 3, "s/orphan": None, "s/never": None}, lambda key: [part]
    )
    assert set(done) == {"s/kept", "s/orphan"}
    assert index.batch_counts() == {"s/kept": 3}
    assert reconcile_index(index, {"s/kept": 3}, lambda key: [part]) == {}
