"""The landing-zone sensor: each new batch folder becomes a partition and a run."""

import dagster as dg

from llama_assets.ingest.landing import landing_batch_keys
from llama_assets.jobs import batch_job
from llama_assets.partitions import BATCHES, batch_partitions
from resources.storage import LocalDataRoot


@dg.sensor(
    job=batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every new <source>/<batch> folder of the landing zone as a "
    "batch partition and requests the batch pipeline for it.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: LocalDataRoot):
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    new = [k for k in landing_batch_keys(storage.layout.landing) if k not in known]
    if not new:
        return dg.SkipReason("no new batch in the landing zone")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"landing:{k}") for k in new],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)],
    )
