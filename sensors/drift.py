"""Drift -> retrain: when a batch's data drifts, rebuild what learns from the data.

A batch has drifted when the latest materialisation of its ``corpus_profile``
(text statistics) or of its ``embedding_drift`` (embedding space) reports
``drifted`` (drift_score above drift_threshold; see curate/profile.py and
curate/embedding_drift.py). For such a batch, once its ``clean_shards`` exist,
the sensor requests ``training_dataset`` (so the snapshot holds the new data),
and, once a snapshot newer than the drift result exists, the variant chain
``finetuned_checkpoint -> eval_report -> promoted_model`` for each variant in
``LLAMA_DRIFT_VARIANTS`` (comma-separated; default ``tiny``). Run keys name the
batch and its drift result (asset and score), so a drift result requests each
run once however often the sensor ticks or the batch is re-profiled with the
same data, while a batch re-materialised with other data that drifts again
requests a new retrain. A batch below its threshold requests nothing.
"""

from __future__ import annotations

import os

import dagster as dg

from llama_assets.curate.assets import clean_shards, corpus_profile
from llama_assets.jobs import dataset_job, model_job
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.drift_assets import embedding_drift
from llama_assets.training.assets import training_dataset
from llama_assets.training.variants import VARIANTS
from sensors.records import latest_materialization

DRIFT_ASSETS = (corpus_profile.key, embedding_drift.key)
VARIANTS_ENV = "LLAMA_DRIFT_VARIANTS"
DEFAULT_VARIANTS = ("tiny",)


def drift_variants() -> tuple[str, ...]:
    value = os.environ.get(VARIANTS_ENV, "").strip()
    chosen = tuple(v.strip() for v in value.split(",") if v.strip()) or DEFAULT_VARIANTS
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"{VARIANTS_ENV}: unknown variants {unknown}; known: {list(VARIANTS)}")
    return chosen


def drifted_batches(instance: dg.DagsterInstance) -> list[tuple[str, str, float, float]]:
    """(batch, asset, drift_score, timestamp) of each batch whose latest drift result
    says drifted, in arrival order (the first drifting asset of a batch)."""
    found = []
    for key in instance.get_dynamic_partitions(BATCHES):
        for asset in DRIFT_ASSETS:
            record = latest_materialization(instance, asset, key)
            if record is None:
                continue
            metadata = record.asset_materialization.metadata
            drifted = metadata.get("drifted")
            if drifted is not None and drifted.value:
                score = metadata["drift_score"].value if "drift_score" in metadata else 0.0
                found.append((key, asset.to_user_string(), float(score), record.timestamp))
                break
    return found


def drift_run_requests(
    instance: dg.DagsterInstance, variants: tuple[str, ...] = DEFAULT_VARIANTS
) -> list[dg.RunRequest]:
    requests = []
    dataset = latest_materialization(instance, training_dataset.key, None)
    for key, asset, score, drifted_at in drifted_batches(instance):
        shards = latest_materialization(instance, clean_shards.key, key)
        if shards is None:
            continue  # the snapshot would not hold the batch yet
        tags = {"llama/reason": f"drift in {asset} of {key} (score {score:.2f})"}
        # The same data profiles to the same score: one key per drift result.
        result = f"drift:{key}:{asset}={score:.4f}"
        if dataset is None or dataset.timestamp < max(drifted_at, shards.timestamp):
            requests.append(
                dg.RunRequest(
                    job_name=dataset_job.name, run_key=f"{result}:training_dataset", tags=tags
                )
            )
            continue  # the model chain follows on a later tick, on the new snapshot
        for variant in variants:
            requests.append(
                dg.RunRequest(
                    job_name=model_job.name,
                    partition_key=variant,
                    run_key=f"{result}:{variant}",
                    tags=tags,
                )
            )
    # Several drifted batches need one snapshot: one request, the first batch's key.
    seen: set[str] = set()
    unique = []
    for request in requests:
        group = request.job_name if request.job_name == dataset_job.name else request.run_key
        if group not in seen:
            seen.add(group)
            unique.append(request)
    return unique


@dg.sensor(
    jobs=[dataset_job, model_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a batch's corpus or embedding drift is above its threshold: "
    "training_dataset, then fine-tune -> eval -> promote for each variant of "
    "LLAMA_DRIFT_VARIANTS (default tiny); once per drift result of a batch.",
)
def drift_sensor(context: dg.SensorEvaluationContext):
    requests = drift_run_requests(context.instance, drift_variants())
    if not requests:
        return dg.SkipReason("no batch has drifted above its threshold")
    return dg.SensorResult(run_requests=requests)
