"""Reading the event log: the latest materialisation of an asset (partition)."""

from __future__ import annotations

import dagster as dg


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None
) -> dg.EventLogRecord | None:
    """The newest materialisation record of `key` (for `partition`), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0] if records else None
