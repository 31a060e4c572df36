"""raw_documents: a landing batch read into one schema-checked table."""

import time
from collections import Counter

import dagster as dg

from llama_assets.base.layout import split_batch_key
from llama_assets.base.rejects import write_rejects
from llama_assets.base.shards import ShardWriter
from llama_assets.base.sources import source_policy, sources_file
from llama_assets.base.store import local_copy
from llama_assets.ingest.batch import stream_batch
from llama_assets.ingest.coalesce import LANDING_FINGERPRINT, landing_fingerprint
from llama_assets.ingest.reject_limit import reject_limit_verdict
from llama_assets.ingest.schema import RAW_SCHEMA
from llama_assets.partitions import batch_partitions
from llama_assets.policies import IO_RETRY
from llama_assets.tables import staged, table_metadata
from resources.storage import LocalDataRoot

REJECT_RATE_CHECK = "reject_rate_within_limit"


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingest",
    kinds={"polars", "parquet"},
    retry_policy=IO_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            REJECT_RATE_CHECK,
            asset="raw_documents",
            blocking=True,
            description="Fails the batch (and blocks everything downstream) when layer 1 "
            "rejects more than the source's max_reject_rate (1% by default; per source "
            "in <data root>/sources.toml).",
        )
    ],
    description="Every record of a landing batch, any supported format, schema-checked "
    "(layer 1), streamed part by part. Malformed files and records go to quarantine/ "
    "with a reason.",
)
def raw_documents(context: dg.AssetExecutionContext, storage: LocalDataRoot):
    layout = storage.layout
    key = context.partition_key
    landing = layout.landing_batch(key)
    if not landing.is_dir():
        raise dg.Failure(f"landing batch {landing} does not exist")
    source, batch = split_batch_key(key)
    policy = source_policy(source, sources_file(layout.sources_config))
    started = time.perf_counter()
    # Taken before reading, so a file that lands mid-run makes reconciliation re-ingest.
    fingerprint = landing_fingerprint(landing)
    out = staged(layout, raw_documents.key, key).path
    # The readers take local files: the batch itself, or a download of it from S3.
    with (
        local_copy(landing) as folder,
        ShardWriter(out, schema=RAW_SCHEMA, max_rows=policy.part_rows) as writer,
    ):
        loaded = stream_batch(
            folder,
            source,
            batch,
            writer.write,
            part_rows=policy.part_rows,
            spool_dir=layout.scratch,
            on_part=lambda so_far: context.log.info(
                f"read {so_far.rows:,} records in {so_far.parts} part(s), "
                f"{len(so_far.rejects):,} rejected, "
                f"{so_far.rows / max(time.perf_counter() - started, 1e-9):,.0f} records/s"
            ),
        )
    manifest = writer.manifest
    quarantine = layout.quarantine(key) / "raw_documents.jsonl"
    rejected = write_rejects(loaded.rejects, quarantine)
    seconds = time.perf_counter() - started
    total = manifest["rows"] + rejected
    rate = rejected / total if total else 0.0
    reasons = Counter(r.reason for r in loaded.rejects)
    yield dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "files": loaded.files,
            LANDING_FINGERPRINT: fingerprint.digest,
            "landing_files": fingerprint.files,
            "landing_bytes": dg.MetadataValue.int(fingerprint.bytes),
            "rejects": rejected,
            "reject_rate": dg.MetadataValue.float(rate),
            "max_reject_rate": dg.MetadataValue.float(policy.max_reject_rate),
            "reject_reasons": dg.MetadataValue.json(dict(sorted(reasons.items()))),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "docs_per_second": dg.MetadataValue.float(
                round(manifest["rows"] / seconds, 1) if seconds else 0.0
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name=REJECT_RATE_CHECK,
        passed=rate <= policy.max_reject_rate,
        severity=dg.AssetCheckSeverity.ERROR,
        description=reject_limit_verdict(
            key,
            rejected,
            total,
            policy.max_reject_rate,
            quarantine,
            sources_file(layout.sources_config),
            reasons,
        ),
        metadata={
            "reject_rate": dg.MetadataValue.float(rate),
            "max_reject_rate": dg.MetadataValue.float(policy.max_reject_rate),
            "rejects": rejected,
            "records": total,
            "source": source,
        },
    )
