"""Corrupt or truncated tables are rebuilt, never read silently.

Every reader verifies each shard's size and sha256 against the manifest
(llama_assets/tables.py). On a mismatch the reading step fails, without
retries, with metadata naming the table, the asset that owns it and the
partition. This sensor turns that failure into a run that re-materialises the
owner and everything downstream of it in the batch pipeline for that
partition: the owner rewrites the table from its own (verified) upstream, and
the step that failed then reads a correct one. If the upstream is corrupt too,
that run fails the same way and the repair walks one step further up.
"""

from __future__ import annotations

import dagster as dg

from llama_assets.jobs import BATCH_ASSETS, asset_graph, batch_job, dataset_job, model_job
from llama_assets.tables import CORRUPT_TABLE
from llama_assets.training.assets import training_dataset


def repair_selection(owner: dg.AssetKey) -> list[dg.AssetKey]:
    """The owner and its downstream batch assets, in the graph's topological order."""
    graph = asset_graph()
    selected = dg.AssetSelection.assets(owner).downstream() & dg.AssetSelection.assets(
        *BATCH_ASSETS
    )
    keys = selected.resolve(graph)
    return [key for key in graph.toposorted_asset_keys if key in keys]


def corrupt_tables(failures: list[dg.DagsterEvent]) -> list[tuple[str, str, str]]:
    """(owner asset, partition, table path) of each step that failed on a corrupt table."""
    found = []
    for event in failures:
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        metadata = user.metadata if user else {}
        if CORRUPT_TABLE not in metadata or not metadata["owner_asset"].value:
            continue
        found.append(
            (
                metadata["owner_asset"].value,
                metadata["partition"].value,
                metadata[CORRUPT_TABLE].value,
            )
        )
    return found


def repair_requests(run_id: str, failures: list[dg.DagsterEvent]) -> list[dg.RunRequest]:
    requests: dict[tuple[str, str], dg.RunRequest] = {}
    batch_owners = {a.key.to_user_string() for a in BATCH_ASSETS}
    for owner, key, path in corrupt_tables(failures):
        if owner not in batch_owners:
            continue  # the training snapshot: corrupt_snapshot_repair_sensor
        requests[(owner, key)] = dg.RunRequest(
            partition_key=key,
            asset_selection=repair_selection(dg.AssetKey.from_user_string(owner)),
            run_key=f"rebuild:{run_id}:{owner}:{key}",
            tags={"llama/rebuild": owner, "llama/corrupt_table": path},
        )
    return list(requests.values())


@dg.run_failure_sensor(
    name="corrupt_table_repair_sensor",
    monitored_jobs=[batch_job, dataset_job],
    request_job=batch_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a run fails on a corrupt or truncated table, re-materialises the "
    "asset that owns the table and everything downstream of it, for that partition.",
)
def corrupt_table_repair_sensor(context: dg.RunFailureSensorContext):
    requests = repair_requests(context.dagster_run.run_id, context.get_step_failure_events())
    for request in requests:
        context.log.warning(
            f"rebuilding {request.tags['llama/corrupt_table']}: re-materialising "
            f"{request.tags['llama/rebuild']} for {request.partition_key}"
        )
    return requests or dg.SkipReason("the run did not fail on a corrupt table")


@dg.run_failure_sensor(
    name="corrupt_snapshot_repair_sensor",
    monitored_jobs=[model_job],
    request_job=dataset_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a fine-tune or eval fails on a corrupt training snapshot, "
    "re-materialises training_dataset from the clean shards (the variant chain is then "
    "stale and the next run retrains).",
)
def corrupt_snapshot_repair_sensor(context: dg.RunFailureSensorContext):
    owner = training_dataset.key.to_user_string()
    paths = [p for o, _, p in corrupt_tables(context.get_step_failure_events()) if o == owner]
    if not paths:
        return dg.SkipReason("the run did not fail on a corrupt training snapshot")
    context.log.warning(f"rebuilding the training snapshot: {', '.join(paths)} is corrupt")
    return [
        dg.RunRequest(
            run_key=f"rebuild:{context.dagster_run.run_id}:{owner}",
            tags={"llama/rebuild": owner, "llama/corrupt_table": paths[0]},
        )
    ]
