"""Freshness: policies that make the UI show when the index falls behind, and a
sensor that requests the rebuild of whatever is stale downstream of new data.

Stale means an upstream partition was materialised after its downstream one:
``clean_shards[batch]`` newer than ``rag_index[batch]`` (or no ``rag_index``
yet) requests ``chunks -> embeddings -> rag_index`` for that batch; once every
batch's index is current, an ``eval_report[variant]`` older than the newest
``rag_index`` materialisation is re-run so the retrieval figures describe the
index as it is (index first, then retrieval eval). Run keys carry the
upstream timestamp, so one change requests one run however often the sensor ticks.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from llama_assets.jobs import batch_job, model_job
from llama_assets.partitions import BATCHES
from llama_assets.training.variants import VARIANTS
from sensors.records import latest_materialization

CLEAN_SHARDS = dg.AssetKey("clean_shards")
CHUNKS = dg.AssetKey("chunks")
EMBEDDINGS = dg.AssetKey("embeddings")
RAG_INDEX = dg.AssetKey("rag_index")
CHECKPOINT = dg.AssetKey("finetuned_checkpoint")
EVAL_REPORT = dg.AssetKey("eval_report")

# The UI marks these assets degraded after ``warn`` and stale after ``fail``
# without a materialisation. Applied in one place (``with_freshness_policies``).
FRESHNESS_POLICIES = {
    RAG_INDEX: dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=24), warn_window=timedelta(hours=6)
    ),
    EVAL_REPORT: dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=7), warn_window=timedelta(days=2)
    ),
}


def with_freshness_policies(assets):
    """``assets`` with the freshness policies of ``FRESHNESS_POLICIES`` attached."""
    return dg.map_asset_specs(
        lambda spec: (
            spec.replace_attributes(freshness_policy=FRESHNESS_POLICIES[spec.key])
            if spec.key in FRESHNESS_POLICIES
            else spec
        ),
        assets,
    )


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> float | None:
    record = latest_materialization(instance, key, partition)
    return record.timestamp if record else None


def stale_run_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    requests = []
    for key in instance.get_dynamic_partitions(BATCHES):
        shards = _latest(instance, CLEAN_SHARDS, key)
        index = _latest(instance, RAG_INDEX, key)
        if shards is not None and (index is None or index < shards):
            requests.append(
                dg.RunRequest(
                    job_name=batch_job.name,
                    partition_key=key,
                    asset_selection=[CHUNKS, EMBEDDINGS, RAG_INDEX],
                    run_key=f"freshness:index:{key}:{shards}",
                    tags={"llama/reason": "rag_index older than clean_shards"},
                )
            )
    if requests:
        return requests  # the index first; the eval follows on a later tick
    newest_index = _latest(instance, RAG_INDEX, None)
    if newest_index is None:
        return []
    for variant in VARIANTS:
        if _latest(instance, CHECKPOINT, variant) is None:
            continue
        report = _latest(instance, EVAL_REPORT, variant)
        if report is None or report < newest_index:
            requests.append(
                dg.RunRequest(
                    job_name=model_job.name,
                    partition_key=variant,
                    asset_selection=[EVAL_REPORT],
                    run_key=f"freshness:eval:{variant}:{newest_index}",
                    tags={"llama/reason": "eval_report older than rag_index"},
                )
            )
    return requests


@dg.sensor(
    jobs=[batch_job, model_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests chunks -> embeddings -> rag_index for every batch whose clean "
    "shards are newer than its index, then eval_report for each trained variant whose "
    "report is older than the index.",
)
def freshness_sensor(context: dg.SensorEvaluationContext):
    requests = stale_run_requests(context.instance)
    if not requests:
        return dg.SkipReason("the index and the retrieval eval are up to date")
    return dg.SensorResult(run_requests=requests)
