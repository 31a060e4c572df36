"""Batches deduplicated out of order are deduplicated again.

The survivor of duplicates across batches is the earliest batch's copy, and a
batch's `clean_shards` compares it with every batch that arrived before it.
When batches run out of arrival order (a backfill, a retry, a slow run), a
later batch may have kept its copy of a document whose earlier copy was not
indexed yet. The earlier batch's `clean_shards` detects this and lists those
batches as `later_batches_with_duplicates`; this sensor re-materialises each
one's `clean_shards` and everything downstream, which then removes the copies.
"""

from __future__ import annotations

import dagster as dg

from llama_assets.curate.assets import LATER_DUPLICATES, clean_shards
from llama_assets.jobs import batch_job
from llama_assets.partitions import BATCHES
from sensors.records import latest_materialization
from sensors.shard_repair import repair_selection


def dedup_order_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    requests: dict[str, dg.RunRequest] = {}
    for key in instance.get_dynamic_partitions(BATCHES):
        record = latest_materialization(instance, clean_shards.key, key)
        if record is None:
            continue
        value = record.asset_materialization.metadata.get(LATER_DUPLICATES)
        for later in value.value if value is not None else []:
            redone = latest_materialization(instance, clean_shards.key, later)
            if later in requests or (redone and redone.timestamp > record.timestamp):
                continue  # already requested, or deduplicated again since
            requests[later] = dg.RunRequest(
                partition_key=later,
                asset_selection=repair_selection(clean_shards.key),
                run_key=f"dedup-order:{later}:after:{key}:{record.storage_id}",
                tags={"llama/reason": f"{later} kept copies of documents of earlier {key}"},
            )
    return list(requests.values())


@dg.sensor(
    job=batch_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-deduplicates batches that ran before an earlier batch and kept copies "
    "of its documents (clean_shards and downstream, for that batch).",
)
def dedup_order_sensor(context: dg.SensorEvaluationContext):
    requests = dedup_order_requests(context.instance)
    return requests or dg.SkipReason("every batch was deduplicated after the batches before it")
