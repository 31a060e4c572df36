"""Curation assets: content validation (layer 2), profile and drift (layer 3),
and deduplicated, sharded output."""

import json
import time

import dagster as dg
import polars as pl

from llama_assets.atomic import atomic_write_json
from llama_assets.curate.clean import deduplicate, empty_index
from llama_assets.curate.profile import drift, pool_profiles, profile_documents
from llama_assets.curate.rejects import Reject, write_rejects
from llama_assets.curate.validate import ContentPolicy, validate_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.layout import split_batch_key
from llama_assets.partitions import batch_partitions, earlier_batch_keys
from llama_assets.policies import IO_RETRY
from llama_assets.tables import read_table, table_metadata, write_table
from resources.storage import LocalDataRoot


class ContentConfig(dg.Config):
    allowed_languages: list[str] = ["en"]


@dg.asset(
    partitions_def=batch_partitions,
    deps=[raw_documents],
    group_name="curate",
    kinds={"polars", "parquet"},
    retry_policy=IO_RETRY,
    description="Layer 2: PII masked, language identified, Gopher/C4 quality scores. "
    "Documents that fail a rule go to quarantine/ with the rule's name.",
)
def validated_documents(
    context: dg.AssetExecutionContext, config: ContentConfig, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    started = time.perf_counter()
    raw = read_table(layout.staging("raw_documents", key))
    outcome = validate_documents(raw, ContentPolicy(tuple(config.allowed_languages)))
    out = layout.staging("validated_documents", key)
    manifest = write_table(outcome.kept, out)
    quarantine = layout.quarantine(key) / "validated_documents.jsonl"
    write_rejects(outcome.rejects, quarantine)
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "rejects": len(outcome.rejects),
            "reject_rate": dg.MetadataValue.float(
                len(outcome.rejects) / raw.height if raw.height else 0.0
            ),
            "reject_reasons": dg.MetadataValue.json(outcome.reject_reasons),
            "pii_masked": dg.MetadataValue.json(outcome.pii_counts),
            "pii_total": sum(outcome.pii_counts.values()),
            "languages": dg.MetadataValue.json(outcome.languages),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[validated_documents],
    group_name="curate",
    kinds={"json"},
    description="Layer 3: the batch's statistical profile and its drift against the "
    "pooled profiles of every earlier batch (PSI on length, Jensen-Shannon on language).",
)
def corpus_profile(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    docs = read_table(layout.staging("validated_documents", key))
    profile = profile_documents(docs)
    earlier = [
        json.loads(layout.profile(k).read_text())["profile"]
        for k in earlier_batch_keys(context.instance, key)
        if layout.profile(k).exists()
    ]
    result = drift(profile, pool_profiles(earlier))
    path = layout.profile(key)
    atomic_write_json(path, {"batch": key, "profile": profile, "drift": result})
    features = "\n".join(
        f"| {name} | {f['test']} | {f['value']:.4f} | {f['threshold']} | {f['drifted']} |"
        for name, f in result["features"].items()
    )
    return dg.MaterializeResult(
        metadata={
            "documents": profile["documents"],
            "words": profile["words"],
            "mean_words": dg.MetadataValue.float(profile["length_words"]["mean"]),
            "drift_score": dg.MetadataValue.float(result["score"]),
            "drifted": dg.MetadataValue.bool(result["drifted"]),
            "baseline_batches": len(earlier),
            "drift_report": dg.MetadataValue.md(
                "| feature | test | value | threshold | drifted |\n|---|---|---|---|---|\n"
                + features
                if features
                else "First batch: no baseline yet."
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[validated_documents],
    group_name="curate",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    description="Exact and near-duplicate removal within the batch and against every "
    "earlier batch; parquet shards with a checksummed manifest.json.",
)
def clean_shards(context: dg.AssetExecutionContext, storage: LocalDataRoot) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    started = time.perf_counter()
    docs = read_table(layout.staging("validated_documents", key))
    earlier = [
        layout.staging("dedup_index", k)
        for k in earlier_batch_keys(context.instance, key)
        if (layout.staging("dedup_index", k) / "manifest.json").exists()
    ]
    prior = pl.concat([read_table(p) for p in earlier]) if earlier else empty_index()
    outcome = deduplicate(docs, prior)
    out = layout.shards(key)
    manifest = write_table(
        outcome.kept.select("doc_id", "source", "batch", "path", "title", "text", "language"), out
    )
    write_table(outcome.index, layout.staging("dedup_index", key))
    source, batch = split_batch_key(key)
    by_id = {
        row["doc_id"]: row
        for row in docs.select("doc_id", "path", "record", "text").iter_rows(named=True)
    }
    removed = [
        Reject(
            source=source,
            batch=batch,
            path=by_id[d.doc_id]["path"],
            record=by_id[d.doc_id]["record"],
            stage="clean_shards",
            reason=f"{d.reason}:{d.duplicate_of}:cluster={d.cluster_id}",
            excerpt=by_id[d.doc_id]["text"][:200],
        )
        for d in outcome.decisions
    ]
    quarantine = layout.quarantine(key) / "clean_shards.jsonl"
    write_rejects(removed, quarantine)
    exact = sum(d.reason == "exact_duplicate" for d in outcome.decisions)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "input_rows": docs.height,
            "exact_duplicates": exact,
            "near_duplicates": len(outcome.decisions) - exact,
            "compared_with_documents": prior.height,
            "compared_with_batches": len(earlier),
            "removed_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )
