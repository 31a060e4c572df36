"""Batches deduplicated out of arrival order: the earliest copy still survives."""

from __future__ import annotations

import dagster as dg

from llama_assets.curate.assets import clean_shards, validated_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.readers import make_doc_id
from llama_assets.partitions import BATCHES
from llama_assets.tables import read_table
from sensors.dedup_order import dedup_order_requests, dedup_order_sensor
from tests.landing import jsonl, land, topic

UPSTREAM = [raw_documents, validated_documents]


def validate(key, instance, resources) -> None:
    for asset in UPSTREAM:
        result = dg.materialize([asset], instance=instance, resources=resources, partition_key=key)
        assert result.success


def clean(key, instance, resources) -> dg.ExecuteInJobResult:
    result = dg.materialize(
        [clean_shards], instance=instance, resources=resources, partition_key=key
    )
    assert result.success
    return result


def test_a_later_batch_that_ran_first_is_deduplicated_again(layout, instance, resources):
    early, late = "docs/b1", "docs/b2"
    land(
        layout,
        early,
        {"a.jsonl": jsonl({"id": "a", "text": topic(0)}, {"id": "b", "text": topic(1)})},
    )
    land(
        layout,
        late,
        {"c.jsonl": jsonl({"id": "c", "text": topic(1)}, {"id": "d", "text": topic(2)})},
    )
    instance.add_dynamic_partitions(BATCHES, [early, late])
    for key in (early, late):
        validate(key, instance, resources)

    # The later batch runs first: nothing earlier is indexed, it keeps its copy of topic 1.
    clean(late, instance, resources)
    assert read_table(layout.shards(late)).height == 2
    assert dedup_order_requests(instance) == []

    # The earlier batch keeps its copy (earliest survives) and names the later batch.
    result = clean(early, instance, resources)
    [materialization] = result.asset_materializations_for_node("clean_shards")
    assert materialization.metadata["later_batches_with_duplicates"].value == [late]
    assert read_table(layout.shards(early)).height == 2

    with dg.build_sensor_context(instance=instance) as context:
        [request] = dedup_order_sensor(context)
    assert request.partition_key == late
    assert request.asset_selection[0] == dg.AssetKey("clean_shards")
    assert dg.AssetKey("rag_index") in request.asset_selection

    # Deduplicated again, the later batch drops its copy; nothing more is requested.
    clean(late, instance, resources)
    kept = read_table(layout.shards(late))["doc_id"].to_list()
    assert kept == [make_doc_id("docs", "b2", "c.jsonl", 1)]  # topic 2 only
    assert dedup_order_requests(instance) == []


def test_batches_in_order_request_nothing(layout, instance, resources):
    early, late = "docs/b1", "docs/b2"
    land(layout, early, {"a.jsonl": jsonl({"id": "a", "text": topic(0)})})
    land(layout, late, {"c.jsonl": jsonl({"id": "c", "text": topic(0)})})
    instance.add_dynamic_partitions(BATCHES, [early, late])
    for key in (early, late):
        validate(key, instance, resources)
        clean(key, instance, resources)
    assert read_table(layout.shards(late)).height == 0
    assert dedup_order_requests(instance) == []
