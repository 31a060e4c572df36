"""The retrieval stage materialised for real: incremental embeddings, departed and
removed batches, the freshness sensor, search on the result."""

from __future__ import annotations

import dagster as dg
import lancedb
import polars as pl

from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.search import search
from sensors.freshness import freshness_sensor, stale_run_requests
from tests.landing import land, part, topic

NAMES = [a.key.to_user_string() for a in BATCH_ASSETS]
RETRIEVAL = [BATCH_ASSETS[NAMES.index(n)] for n in ("chunks", "embeddings", "rag_index")]


def materialize(assets, key, instance, resources):
    # One run: Dagster orders the steps from the graph.
    result = dg.materialize(assets, instance=instance, resources=resources, partition_key=key)
    assert result.success


def latest_metadata(instance, name: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def chunk_texts(layout, key) -> set[str]:
    return set(pl.read_parquet(part(layout.staging("chunks", key)))["text"])


def test_only_changed_chunks_are_embedded_and_nothing_stale_survives(
    layout, instance, resources, own_embedding_cache
):
    key = "docs/b1"
    files = {f"t{i}.txt": topic(i) for i in range(6)}
    land(layout, key, files)
    instance.add_dynamic_partitions(BATCHES, [key])
    materialize(BATCH_ASSETS, key, instance, resources)
    first = latest_metadata(instance, "embeddings")
    assert first["embedded"] == first["rows"] and first["cached"] == 0
    before = chunk_texts(layout, key)

    # Nothing changed: nothing is embedded, nothing is written to the index.
    materialize(RETRIEVAL, key, instance, resources)
    assert latest_metadata(instance, "embeddings")["embedded"] == 0
    assert latest_metadata(instance, "rag_index")["inserted"] == 0

    # One document changes (a new closing paragraph), one leaves the batch.
    (layout.landing_batch(key) / "t0.txt").write_text(topic(0) + "\n\nA new closing remark.")
    (layout.landing_batch(key) / "t5.txt").unlink()
    requests = stale_run_requests(instance)
    assert requests == []  # the landing zone changed, not the shards yet
    materialize(BATCH_ASSETS[: NAMES.index("clean_shards") + 1], key, instance, resources)
    (stale,) = stale_run_requests(instance)
    assert stale.partition_key == key and stale.job_name == "batch_pipeline"
    assert set(stale.asset_selection) == {a.key for a in RETRIEVAL}

    materialize(RETRIEVAL, key, instance, resources)
    after = chunk_texts(layout, key)
    embedded = latest_metadata(instance, "embeddings")
    assert embedded["embedded"] == len(after - before) >= 1
    assert embedded["cached"] == embedded["rows"] - embedded["embedded"]

    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    rows = table.to_arrow().to_pylist()
    assert {r["text"] for r in rows} == after
    assert not any(r["doc_id"].startswith("docs") and "t5.txt" in r["doc_id"] for r in rows)
    assert len(rows) == len({r["chunk_id"] for r in rows})
    assert all(r["headings"] is not None for r in rows)

    # The eval of a variant with no checkpoint is not requested; the index is fresh.
    context = dg.build_sensor_context(instance=instance)
    assert isinstance(freshness_sensor(context), dg.SkipReason)

    # search serves the CLI and the evals: a heading finds its section.
    heading = next(r for r in rows if r["headings"])["headings"].split(" > ")[-1]
    for mode in ("vector", "fts", "hybrid"):
        (hits,) = search(table, resources["embedder"].encode, [heading], k=5, mode=mode)
        assert hits and all(h["source"] == "docs" and "score" in h for h in hits)


def test_rows_of_a_removed_batch_partition_are_deleted(layout, instance, resources):
    land(layout, "docs/keep", {"a.txt": topic(0)})
    land(layout, "docs/gone", {"b.txt": topic(1)})
    instance.add_dynamic_partitions(BATCHES, ["docs/keep", "docs/gone"])
    for key in ("docs/keep", "docs/gone"):
        materialize(BATCH_ASSETS, key, instance, resources)
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    assert {r["batch"] for r in table.to_arrow().to_pylist()} == {"keep", "gone"}

    instance.delete_dynamic_partition(BATCHES, "docs/gone")
    materialize(RETRIEVAL[-1:], "docs/keep", instance, resources)
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    assert {r["batch"] for r in table.to_arrow().to_pylist()} == {"keep"}
    removed = latest_metadata(instance, "rag_index")["removed_batches"]
    assert list(removed) == ["docs/gone"] and removed["docs/gone"] > 0
