"""The freshness sensor: index first, then the retrieval eval, each requested once."""

from __future__ import annotations

import dagster as dg

from llama_assets.partitions import BATCHES
from sensors.freshness import freshness_sensor


def materialized(instance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition)
    )


def evaluate(instance):
    return freshness_sensor(dg.build_sensor_context(instance=instance))


def test_stale_index_then_stale_eval_are_requested_in_order(instance):
    instance.add_dynamic_partitions(BATCHES, ["s/b1"])
    materialized(instance, "clean_shards", "s/b1")

    first = evaluate(instance)
    [index_run] = first.run_requests
    assert (index_run.job_name, index_run.partition_key) == ("batch_pipeline", "s/b1")
    assert index_run.asset_selection == [
        dg.AssetKey("chunks"),
        dg.AssetKey("embeddings"),
        dg.AssetKey("rag_index"),
    ]

    materialized(instance, "rag_index", "s/b1")
    # No trained variant yet: nothing to evaluate.
    assert isinstance(evaluate(instance), dg.SkipReason)

    materialized(instance, "finetuned_checkpoint", "tiny")
    [eval_run] = evaluate(instance).run_requests
    assert (eval_run.job_name, eval_run.partition_key) == ("train_evaluate_promote", "tiny")
    assert eval_run.asset_selection == [dg.AssetKey("eval_report")]

    materialized(instance, "eval_report", "tiny")
    assert isinstance(evaluate(instance), dg.SkipReason)

    # New data re-indexes the batch first, and only then re-runs the eval.
    materialized(instance, "clean_shards", "s/b1")
    [again] = evaluate(instance).run_requests
    assert again.asset_selection[-1] == dg.AssetKey("rag_index")
    assert again.run_key != index_run.run_key
    materialized(instance, "rag_index", "s/b1")
    [eval_again] = evaluate(instance).run_requests
    assert eval_again.partition_key == "tiny" and eval_again.run_key != eval_run.run_key
