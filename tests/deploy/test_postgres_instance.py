"""The production instance (deploy/prod/dagster.yaml) on the machine's Postgres:
the daemon's sensors register landed batches and run them, and a backfill of
three batch partitions runs through the daemon; compute logs land in S3."""

from __future__ import annotations

import json
import urllib.request

import boto3
import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from llama_assets.curate.assets import (
    clean_shards,
    corpus_profile,
    review_queue,
    validated_documents,
)
from llama_assets.ingest.assets import raw_documents
from llama_assets.jobs import BATCH_ASSETS
from scripts.prod_local import COMPUTE_LOG_BUCKET
from tests.deploy.conftest import assert_succeeded, wait_for

BACKFILLED = [raw_documents, validated_documents, review_queue, corpus_profile, clean_shards]
"""The data stage: the backfill re-materialises it (embedding is covered by the sensor's runs)."""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
  }
}
"""


def graphql(url: str, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def test_sensors_and_a_three_partition_backfill_run_on_postgres(
    topology, prod_instance, sensor_batches
):
    instance = prod_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)

    keys, sensor_runs = sensor_batches
    assert sorted(r.tags[PARTITION_NAME_TAG] for r in sensor_runs) == keys

    # A backfill of the three partitions, launched as the UI launches one; the
    # daemon's backfill and run-queue daemons carry it out.
    data = graphql(
        topology.webserver_url,
        LAUNCH_BACKFILL,
        {
            "params": {
                "partitionNames": keys,
                "assetSelection": [{"path": a.key.path} for a in BACKFILLED],
            }
        },
    )
    result = data["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]
    done = wait_for(
        lambda: (
            (b := instance.get_backfill(backfill_id)).status.value.startswith("COMPLETED") and b
        ),
        "the backfill completes",
    )
    backfill_runs = instance.get_runs(dg.RunsFilter.for_backfill(backfill_id))
    assert_succeeded(instance, backfill_runs)
    assert done.status == BulkActionStatus.COMPLETED_SUCCESS
    assert sorted(r.tags[PARTITION_NAME_TAG] for r in backfill_runs) == keys

    # Each batch asset's partitions were materialised by the sensor's runs, and the
    # backfilled ones once more (other tests' runs on this instance not counted).
    ours = {r.run_id for r in sensor_runs + backfill_runs}
    for asset in BATCH_ASSETS:
        counts = {}
        for record in instance.fetch_materializations(asset.key, limit=1000).records:
            if record.run_id in ours:
                counts[record.partition_key] = counts.get(record.partition_key, 0) + 1
        times = 2 if asset in BACKFILLED else 1
        assert counts == {key: times for key in keys}, (asset.key, counts)

    # The data root is on the topology's SeaweedFS: the shards are objects there.
    assert topology.data_root.startswith("s3://")
    for key in keys:
        assert (topology.layout.shards(key) / "manifest.json").is_file(), key

    # The steps' compute logs went to S3 through the instance's compute log manager.
    s3 = boto3.client("s3", endpoint_url=topology.s3_endpoint, **topology.boto_credentials())
    listed = s3.list_objects_v2(Bucket=COMPUTE_LOG_BUCKET, Prefix="compute-logs/")
    logged_runs = {obj["Key"].split("/")[2] for obj in listed.get("Contents", [])}
    assert {r.run_id for r in sensor_runs + backfill_runs} <= logged_runs
