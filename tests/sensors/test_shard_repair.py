"""A corrupted clean shard is detected on read and rebuilt; the reader then succeeds."""

from __future__ import annotations

import dagster as dg

from llama_assets.base.shards import read_manifest, verify_shards
from llama_assets.curate.assets import clean_shards, validated_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.assets import chunks
from llama_assets.tables import read_table
from sensors.shard_repair import corrupt_table_repair_sensor
from tests.landing import jsonl, land, topic


def test_corrupt_clean_shard_is_rebuilt_and_downstream_is_correct(layout, instance, resources):
    key = "web/20260101T000000Z"
    land(layout, key, {"docs.jsonl": jsonl(*({"id": f"d{i}", "text": topic(i)} for i in range(4)))})
    instance.add_dynamic_partitions(BATCHES, [key])
    for asset in (raw_documents, validated_documents, clean_shards, chunks):
        assert dg.materialize(
            [asset], instance=instance, resources=resources, partition_key=key
        ).success
    expected_chunks = read_table(layout.staging("chunks", key))
    expected_docs = read_table(layout.shards(key))

    # Flip one byte in the middle of the clean shard (same size: only sha256 can tell).
    part = layout.shards(key) / read_manifest(layout.shards(key))["shards"][0]["file"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert verify_shards(layout.shards(key))

    failed = dg.materialize(
        [chunks], instance=instance, resources=resources, partition_key=key, raise_on_error=False
    )
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    metadata = failure.step_failure_data.user_failure_data.metadata
    assert metadata["owner_asset"].value == "clean_shards"
    assert metadata["partition"].value == key
    # One attempt only: retrying a reader of a corrupt table cannot help.
    assert len([e for e in failed.all_events if e.is_step_failure]) == 1

    context = dg.build_run_status_sensor_context(
        sensor_name="corrupt_table_repair_sensor",
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        dagster_event=failed.get_run_failure_event(),
    ).for_run_failure()
    requests = corrupt_table_repair_sensor(context)
    assert [(r.partition_key, r.tags["llama/rebuild"]) for r in requests] == [(key, "clean_shards")]
    selection = [k.to_user_string() for k in requests[0].asset_selection]
    # The owner first, then what depends on it; nothing upstream of the owner.
    assert selection[:2] == ["clean_shards", "chunks"]
    assert {"embeddings", "rag_index"} <= set(selection)
    assert not {"raw_documents", "validated_documents", "corpus_profile"} & set(selection)

    # The repair run (its shard-level part: the owner, then the step that failed).
    for asset in (clean_shards, chunks):
        assert dg.materialize(
            [asset], instance=instance, resources=resources, partition_key=key
        ).success
    assert verify_shards(layout.shards(key)) == []
    assert read_table(layout.shards(key)).equals(expected_docs)
    rebuilt = read_table(layout.staging("chunks", key))
    assert rebuilt.height == expected_chunks.height > 0
    assert rebuilt.sort("chunk_id").equals(expected_chunks.sort("chunk_id"))
