"""raw_documents: a landing batch read into one schema-checked table."""

import time
from collections import Counter

import dagster as dg

from llama_assets.curate.rejects import write_rejects
from llama_assets.ingest.batch import load_batch
from llama_assets.layout import split_batch_key
from llama_assets.partitions import batch_partitions
from llama_assets.policies import IO_RETRY
from llama_assets.tables import table_metadata, write_table
from resources.storage import LocalDataRoot


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingest",
    kinds={"polars", "parquet"},
    retry_policy=IO_RETRY,
    description="Every record of a landing batch, any supported format, schema-checked "
    "(layer 1). Malformed files and records go to quarantine/ with a reason.",
)
def raw_documents(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout = storage.layout
    key = context.partition_key
    landing = layout.landing_batch(key)
    if not landing.is_dir():
        raise dg.Failure(f"landing batch {landing} does not exist")
    started = time.perf_counter()
    loaded = load_batch(landing, *split_batch_key(key))
    out = layout.staging("raw_documents", key)
    manifest = write_table(loaded.documents, out)
    quarantine = layout.quarantine(key) / "raw_documents.jsonl"
    rejected = write_rejects(loaded.rejects, quarantine)
    seconds = time.perf_counter() - started
    total = manifest["rows"] + rejected
    reasons = Counter(r.reason for r in loaded.rejects)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "files": loaded.files,
            "rejects": rejected,
            "reject_rate": dg.MetadataValue.float(rejected / total if total else 0.0),
            "reject_reasons": dg.MetadataValue.json(dict(sorted(reasons.items()))),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "docs_per_second": dg.MetadataValue.float(round(manifest["rows"] / seconds, 1)),
        }
    )
