"""The landing-zone sensor: new batch folders become partitions and runs.

Micro-batches are coalesced: the small batches of a source that arrive within
``LLAMA_COALESCE_WINDOW_SECONDS`` of each other are merged into one landing
batch and requested as one run (see llama_assets/ingest/coalesce.py for why a
merged folder rather than one run over several partitions).
"""

import time

import dagster as dg

from llama_assets.ingest.coalesce import (
    CoalesceSettings,
    describe_batch,
    merge_batches,
    plan_coalescing,
)
from llama_assets.ingest.landing import scan_landing
from llama_assets.jobs import batch_job
from llama_assets.partitions import BATCHES, batch_partitions
from resources.storage import LocalDataRoot


@dg.sensor(
    job=batch_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every new `<source>/<batch>` folder of the landing zone as a "
    "batch partition and requests the batch pipeline for it; small batches of a source "
    "arriving within the coalescing window are merged into one batch and one run.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: LocalDataRoot):
    landing = storage.layout.landing
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    scan = scan_landing(landing)
    for problem in scan.problems:
        # Skipped, never fatal: the batches after a bad folder still run.
        context.log.warning(f"landing zone: {problem}")
    new = [describe_batch(landing, k) for k in scan.keys if k not in known]
    if not new:
        return dg.SkipReason(
            "no new batch in the landing zone"
            + (f" ({len(scan.problems)} entries skipped)" if scan.problems else "")
        )
    plan = plan_coalescing(new, time.time(), CoalesceSettings.from_env())
    keys = []
    for group in plan.ready:
        key = merge_batches(landing, group)
        if len(group) > 1:
            context.log.info(
                f"coalesced {len(group)} micro-batches into {key}: "
                + ", ".join(b.key for b in group)
            )
        keys.append(key)
    if not keys:
        return dg.SkipReason(
            f"{len(plan.waiting)} micro-batch(es) held for coalescing: "
            + ", ".join(b.key for b in plan.waiting)
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"landing:{k}") for k in keys],
        dynamic_partitions_requests=[batch_partitions.build_add_request(keys)],
    )
