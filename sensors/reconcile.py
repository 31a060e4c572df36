"""Hybrid ingestion: a scheduled reconciliation of the landing zone with the instance.

The landing sensor is the fast path; this schedule is the safety net. Each tick
it compares every landing batch folder with the registered partitions and the
landing fingerprint each ``raw_documents`` materialisation recorded, writes the
gaps to ``<root>/reconciliation/latest.json`` and the log, then repairs them:
it registers missing partitions and requests the batch pipeline for batches
never ingested or changed since, and finishes micro-batch merges a crash
interrupted. Batches with a run in flight are left alone. It also removes the
temporary folders and files that killed writes left (`collect_stale_temps`).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import dagster as dg

from llama_assets.base.atomic import atomic_write_json, collect_stale_temps
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.coalesce import (
    LANDING_FINGERPRINT,
    CoalesceSettings,
    find_gaps,
    finish_merge,
)
from llama_assets.ingest.landing import landing_batch_keys
from llama_assets.jobs import batch_job
from llama_assets.partitions import BATCHES
from resources.storage import LocalDataRoot

RECONCILE_CRON = os.environ.get("LLAMA_RECONCILE_CRON", "*/30 * * * *")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def ingested_fingerprints(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, str | None]:
    """The landing fingerprint of each partition's latest raw_documents materialisation."""
    found: dict[str, str | None] = {}
    cursor = None
    while keys:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=raw_documents.key, asset_partitions=keys),
            limit=1000,
            cursor=cursor,
        )
        for record in page.records:  # newest first
            event = record.asset_materialization
            if event is None or event.partition in found:
                continue
            value = event.metadata.get(LANDING_FINGERPRINT)
            found[event.partition] = value.value if value is not None else None
        if not page.has_more:
            break
        cursor = page.cursor
    return found


def partitions_in_flight(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(dg.RunsFilter(job_name=batch_job.name, statuses=IN_FLIGHT))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


@dg.schedule(
    cron_schedule=RECONCILE_CRON,
    job=batch_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compares the landing zone with what was ingested (registered partitions, "
    "raw_documents fingerprints), reports every gap to reconciliation/latest.json and the "
    "log, registers missing partitions and requests runs for batches never ingested or "
    "changed since ingestion.",
)
def landing_reconciliation(context: dg.ScheduleEvaluationContext, storage: LocalDataRoot):
    layout = storage.layout
    instance = context.instance
    registered = list(instance.get_dynamic_partitions(BATCHES))
    settings = CoalesceSettings.from_env()
    gaps = find_gaps(
        layout.landing,
        registered,
        ingested_fingerprints(instance, registered),
        now=time.time(),
        grace_seconds=settings.max_wait_seconds + settings.window_seconds + 60,
    )
    busy = partitions_in_flight(instance)
    # Temporary copies exist on a local root only (S3 writes are single PUTs).
    collected = collect_stale_temps(layout.root.local) if layout.root.local else []
    for path in collected:
        context.log.info(f"removed {path}: a temporary copy left by a killed write")
    to_repair = [g for g in gaps if g.repair and g.key not in busy]
    atomic_write_json(
        layout.reconciliation_report,
        {
            "checked_at": datetime.now(UTC).isoformat(),
            "landing_batches": len(landing_batch_keys(layout.landing)),
            "registered": len(registered),
            "gaps": [g.as_dict() for g in gaps],
            "repairing": [g.key for g in to_repair],
            "left_to_runs_in_flight": sorted(g.key for g in gaps if g.repair and g.key in busy),
            "collected_temps": [str(p) for p in collected],
        },
    )
    for gap in gaps:
        context.log.warning(f"reconciliation gap {gap.kind}: {gap.key} ({gap.detail})")
    if not to_repair:
        return dg.SkipReason(f"{len(gaps)} gap(s), none to repair")
    for gap in to_repair:
        if gap.kind == "interrupted_coalescing":
            finish_merge(layout.landing, gap.key)
    unregistered = [
        g.key for g in to_repair if g.kind in ("unregistered", "interrupted_coalescing")
    ]
    if unregistered:
        instance.add_dynamic_partitions(BATCHES, unregistered)
    return [
        dg.RunRequest(
            partition_key=g.key,
            run_key=f"reconcile:{g.kind}:{g.key}",
            tags={"llama/reconcile": g.kind},
        )
        for g in to_repair
    ]
