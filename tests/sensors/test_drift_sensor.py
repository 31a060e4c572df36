"""The drift sensor: a drift result requests the dataset, then the model chain, once."""

from __future__ import annotations

import dagster as dg
import polars as pl

from llama_assets.curate.profile import drift, pool_profiles, profile_documents
from llama_assets.partitions import BATCHES
from sensors.drift import drift_sensor


def profile(lengths: list[int], language: str) -> dict:
    return profile_documents(
        pl.DataFrame({"text": [" ".join(["w"] * n) for n in lengths], "language": language})
    )


def materialized(instance, asset: str, partition: str | None, metadata: dict | None = None):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata or {})
    )


def drift_metadata(result: dict) -> dict:
    return {"drift_score": result["score"], "drifted": result["drifted"]}


def evaluate(instance):
    return drift_sensor(dg.build_sensor_context(instance=instance))


def test_only_a_drifted_batch_requests_the_dataset_then_the_model_chain(instance, monkeypatch):
    base = profile([60, 70, 80, 90], "en")
    calm = drift(profile([60, 65, 70, 80, 85, 90], "en"), pool_profiles([base]))
    shifted = drift(profile([3000, 4000], "de"), pool_profiles([base]))
    assert not calm["drifted"] and shifted["drifted"]
    instance.add_dynamic_partitions(BATCHES, ["s/b1", "s/b2", "s/b3"])
    materialized(instance, "corpus_profile", "s/b1", drift_metadata(drift(base, None)))
    materialized(instance, "corpus_profile", "s/b2", drift_metadata(calm))
    for key in ("s/b1", "s/b2"):
        materialized(instance, "clean_shards", key)
    assert isinstance(evaluate(instance), dg.SkipReason)  # below the threshold: nothing

    materialized(instance, "corpus_profile", "s/b3", drift_metadata(shifted))
    # No clean shards for the batch yet: the snapshot would miss it.
    assert isinstance(evaluate(instance), dg.SkipReason)
    materialized(instance, "clean_shards", "s/b3")
    [dataset_run] = evaluate(instance).run_requests
    assert dataset_run.job_name == "training_dataset_snapshot"
    key = f"drift:s/b3:corpus_profile={shifted['score']:.4f}"
    assert dataset_run.run_key == f"{key}:training_dataset"
    assert "corpus_profile of s/b3" in dataset_run.tags["llama/reason"]

    materialized(instance, "training_dataset", None)
    [model_run] = evaluate(instance).run_requests
    assert (model_run.job_name, model_run.partition_key) == ("train_evaluate_promote", "tiny")
    assert model_run.run_key == f"{key}:tiny"

    monkeypatch.setenv("LLAMA_DRIFT_VARIANTS", "tiny,llama-3.2-1b")
    runs = evaluate(instance).run_requests
    assert [(r.partition_key, r.run_key) for r in runs] == [
        ("tiny", f"{key}:tiny"),
        ("llama-3.2-1b", f"{key}:llama-3.2-1b"),
    ]
    monkeypatch.delenv("LLAMA_DRIFT_VARIANTS")

    # Re-profiled with the same data: the same result, so the same run keys.
    materialized(instance, "corpus_profile", "s/b3", drift_metadata(shifted))
    assert [r.run_key for r in evaluate(instance).run_requests] == [f"{key}:training_dataset"]
    materialized(instance, "training_dataset", None)

    # Other data in the batch that drifts again: a new result, a new retrain.
    other = drift(profile([5000, 6000, 7000], "fr"), pool_profiles([base]))
    materialized(instance, "corpus_profile", "s/b3", drift_metadata(other))
    [again] = evaluate(instance).run_requests
    assert again.run_key == f"drift:s/b3:corpus_profile={other['score']:.4f}:training_dataset"
    materialized(instance, "training_dataset", None)

    # The batch is re-profiled and no longer drifts: nothing more is requested.
    materialized(instance, "corpus_profile", "s/b3", drift_metadata(calm))
    assert isinstance(evaluate(instance), dg.SkipReason)


def test_embedding_drift_alone_triggers_a_retrain(instance):
    instance.add_dynamic_partitions(BATCHES, ["s/b1"])
    materialized(instance, "corpus_profile", "s/b1", {"drift_score": 0.0, "drifted": False})
    materialized(instance, "embedding_drift", "s/b1", {"drift_score": 4.0, "drifted": True})
    materialized(instance, "clean_shards", "s/b1")
    [run] = evaluate(instance).run_requests
    assert run.run_key == "drift:s/b1:embedding_drift=4.0000:training_dataset"
    assert "embedding_drift of s/b1" in run.tags["llama/reason"]
