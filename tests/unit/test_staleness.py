"""The one definition of stale, and the runs the CLI plans from it."""

from __future__ import annotations

import dagster as dg

from llama_assets.curate.assets import clean_shards
from llama_assets.ingest.assets import REJECT_RATE_CHECK, raw_documents
from llama_assets.jobs import asset_graph
from llama_assets.partitions import BATCHES
from llama_assets.runner import Runner
from llama_assets.staleness import find_stale
from llama_assets.training.variants import VARIANTS
from tests.landing import jsonl, land, topic


def materialize_everything(instance) -> None:
    """Report a materialisation of every asset partition, upstream first."""
    graph = asset_graph()
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        partitions = (
            node.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            if node.is_partitioned
            else [None]
        )
        for partition in partitions:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, partition=partition)
            )


def names(stale: dict, partition) -> set[str]:
    return {key.to_user_string() for key, p in stale if p == partition}


def test_a_new_batch_is_missing_everywhere_and_planned_with_the_chain(instance, resources):
    instance.add_dynamic_partitions(BATCHES, ["s/b1", "s/b2"])
    materialize_everything(instance)
    assert find_stale(instance, asset_graph()).stale == {}

    instance.add_dynamic_partitions(BATCHES, ["s/b3"])
    staleness = find_stale(instance, asset_graph())
    batch_assets = {
        "raw_documents",
        "validated_documents",
        "review_queue",
        "corpus_profile",
        "clean_shards",
        "chunks",
        "embeddings",
        "embedding_drift",
        "rag_index",
    }
    assert names(staleness.stale, "s/b3") == batch_assets
    assert set(staleness.stale.values()) == {"missing"}
    # Nothing else is stale yet, but all of it is rebuilt after the batch.
    assert names(staleness.plan, None) == {"training_dataset"}
    assert names(staleness.plan, "tiny") == {
        "finetuned_checkpoint",
        "eval_report",
        "promoted_model",
        "serving_deployment",
        "eval_history",
    }
    assert staleness.plan[(dg.AssetKey("training_dataset"), None)] == (
        "clean_shards[s/b3] is rebuilt first"
    )

    plan = Runner(instance, resources).plan(["tiny"])
    assert [(run.job_name, run.partition) for run in plan] == [
        ("batch_pipeline", "s/b3"),
        ("training_dataset_snapshot", None),
        ("train_evaluate_promote", "tiny"),
    ]
    # Steps in the graph's order, whatever order the job's list has.
    order = [k.to_user_string() for k in plan[0].assets]
    assert order.index("raw_documents") < order.index("clean_shards") < order.index("rag_index")
    assert [k.to_user_string() for k in plan[2].assets] == [
        "finetuned_checkpoint",
        "eval_report",
        "eval_history",
        "promoted_model",
        "serving_deployment",
    ]


def test_a_rebuilt_partition_makes_exactly_its_descendants_stale(instance, resources):
    instance.add_dynamic_partitions(BATCHES, ["s/b1", "s/b2"])
    materialize_everything(instance)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=clean_shards.key, partition="s/b1")
    )
    staleness = find_stale(instance, asset_graph())
    assert names(staleness.stale, "s/b1") == {
        "chunks",
        "embeddings",
        "embedding_drift",
        "rag_index",
    }
    assert names(staleness.stale, "s/b2") == set()
    assert names(staleness.stale, None) == {"training_dataset"}
    for variant in VARIANTS:  # every variant's chain learns from the snapshot
        assert names(staleness.stale, variant) == {
            "finetuned_checkpoint",
            "eval_report",
            "promoted_model",
            "serving_deployment",
            "eval_history",
        }
    assert staleness.stale[(dg.AssetKey("rag_index"), "s/b1")] == "clean_shards[s/b1] is newer"
    assert staleness.stale[(dg.AssetKey("eval_report"), "tiny")] == "clean_shards[s/b1] is newer"

    plan = Runner(instance, resources).plan(["tiny"])
    assert [(run.job_name, run.partition) for run in plan] == [
        ("batch_pipeline", "s/b1"),
        ("training_dataset_snapshot", None),
        ("train_evaluate_promote", "tiny"),
    ]
    assert {k.to_user_string() for k in plan[0].assets} == {
        "chunks",
        "embeddings",
        "embedding_drift",
        "rag_index",
    }


def test_batches_are_planned_in_arrival_order(instance, resources):
    instance.add_dynamic_partitions(BATCHES, ["z/late-name", "a/early-name"])
    plan = Runner(instance, resources).plan([])
    assert [run.partition for run in plan[:2]] == ["z/late-name", "a/early-name"]


def test_a_failed_blocking_check_keeps_its_asset_stale(layout, instance, resources):
    key = "web/b1"
    bad = "\n".join(["{not json"] * 3 + [jsonl({"id": "d1", "text": topic(1)})])
    land(layout, key, {"docs.jsonl": bad})
    instance.add_dynamic_partitions(BATCHES, [key])
    result = dg.materialize(
        [raw_documents],
        instance=instance,
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    assert not result.success  # 3 of 4 records rejected: over the 1% limit
    staleness = find_stale(instance, asset_graph())
    assert staleness.stale[(raw_documents.key, key)] == (
        f"its blocking check {REJECT_RATE_CHECK} failed"
    )


def test_machine_errors_come_with_their_fix():
    from llama_assets.runner import explain

    assert "the disk is full" in explain("OSError: [Errno 28] No space left on device: 'x'")
    assert explain("ValueError: bad input") == ""
