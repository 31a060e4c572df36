"""Freshness: policies that make the UI show when the index falls behind, and a
sensor that rebuilds the index and the retrieval eval when they are stale.

Stale is `llama_assets.staleness`'s definition, the one ``llama-platform run``
and ``status`` use too: missing, or an ancestor materialised after it. For each
batch whose ``rag_index`` is stale (say, its ``clean_shards`` were rebuilt), the
sensor requests the index chain ``chunks -> embeddings -> rag_index``; once no
batch's index is stale, ``eval_report`` for each trained variant whose report is
stale, so the retrieval figures describe the index as it is (index first, then
retrieval eval). Run keys carry the newest upstream storage id, so one change
requests one run however often the sensor ticks. The rest of what is stale
(new batches, the training chain) is for the landing, drift and dedup-order
sensors and for ``llama-platform run``.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.tags import PARTITION_NAME_TAG

from llama_assets.curate.assets import clean_shards
from llama_assets.deployment.assets import eval_report
from llama_assets.jobs import asset_graph, batch_job, model_job
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.assets import rag_index
from llama_assets.staleness import find_stale
from llama_assets.training.assets import finetuned_checkpoint
from llama_assets.training.variants import VARIANTS

# The UI marks these assets degraded after ``warn`` and stale after ``fail``
# without a materialisation. Applied in one place (``with_freshness_policies``).
FRESHNESS_POLICIES = {
    rag_index.key: dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=24), warn_window=timedelta(hours=6)
    ),
    eval_report.key: dg.FreshnessPolicy.time_window(
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


def index_chain() -> list[dg.AssetKey]:
    """The assets between the clean shards and the index, in the graph's order."""
    graph = asset_graph()
    between = (
        dg.AssetSelection.assets(clean_shards).downstream()
        & dg.AssetSelection.assets(rag_index).upstream()
    )
    keys = between.resolve(graph) - {clean_shards.key}
    return [key for key in graph.toposorted_asset_keys if key in keys]


def partitions_in_progress(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys that a queued or running run is materialising: left to that run."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))
    return {run.tags[PARTITION_NAME_TAG] for run in runs if PARTITION_NAME_TAG in run.tags}


def stale_run_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    staleness = find_stale(
        instance, asset_graph(), [clean_shards.key, rag_index.key, eval_report.key]
    )
    busy = partitions_in_progress(instance)
    requests = []
    for key in instance.get_dynamic_partitions(BATCHES):
        # Only once the clean shards are current: a batch still on its way through
        # the pipeline is its own run's business.
        ready = not staleness.is_stale(clean_shards.key, key) and key not in busy
        if ready and staleness.is_stale(rag_index.key, key):
            requests.append(
                dg.RunRequest(
                    job_name=batch_job.name,
                    partition_key=key,
                    asset_selection=index_chain(),
                    run_key=f"freshness:index:{key}:{staleness.newest.get((rag_index.key, key))}",
                    tags={"llama/reason": f"rag_index: {staleness.stale[(rag_index.key, key)]}"},
                )
            )
    if requests:
        return requests  # the index first; the eval follows on a later tick
    materialized = set(instance.get_materialized_partitions(finetuned_checkpoint.key))
    for variant in VARIANTS:
        reason = staleness.stale.get((eval_report.key, variant))
        trained = variant in materialized and variant not in busy
        if trained and reason:
            requests.append(
                dg.RunRequest(
                    job_name=model_job.name,
                    partition_key=variant,
                    asset_selection=[eval_report.key],
                    run_key=f"freshness:eval:{variant}:"
                    f"{staleness.newest.get((eval_report.key, variant))}",
                    tags={"llama/reason": f"eval_report: {reason}"},
                )
            )
    return requests


@dg.sensor(
    jobs=[batch_job, model_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests chunks -> embeddings -> rag_index for every batch whose index is "
    "stale (llama_assets/staleness.py: missing, or an upstream asset is newer), then "
    "eval_report for each trained variant whose report is stale.",
)
def freshness_sensor(context: dg.SensorEvaluationContext):
    requests = stale_run_requests(context.instance)
    if not requests:
        return dg.SkipReason("the index and the retrieval eval are up to date")
    return dg.SensorResult(run_requests=requests)
