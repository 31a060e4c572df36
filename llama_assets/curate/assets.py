"""Curation assets: content validation (layer 2), profile and drift (layer 3),
and deduplicated, sharded output."""

import json
import time
from collections import Counter

import dagster as dg

from llama_assets.atomic import atomic_write_json
from llama_assets.curate.clean import DedupStats, deduplicate_batch
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.curate.profile import drift, pool_profiles, profile_documents
from llama_assets.curate.rejects import Reject, write_rejects
from llama_assets.curate.shards import ShardWriter
from llama_assets.curate.sources import source_policy, sources_file
from llama_assets.curate.validate import ContentPolicy, validate_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.layout import split_batch_key
from llama_assets.partitions import batch_partitions, earlier_batch_keys
from llama_assets.policies import IO_RETRY
from llama_assets.tables import iter_table, read_table, table_metadata
from resources.storage import LocalDataRoot


class ContentConfig(dg.Config):
    allowed_languages: list[str] | None = None
    """Overrides the source's allowed_languages (sources.toml) for this run."""


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
    source, _ = split_batch_key(key)
    languages = config.allowed_languages or list(
        source_policy(source, sources_file(layout.sources_config)).allowed_languages
    )
    policy = ContentPolicy(tuple(languages))
    out = layout.staging("validated_documents", key)
    rejects: list[Reject] = []
    counts: dict[str, Counter] = {"reasons": Counter(), "pii": Counter(), "languages": Counter()}
    raw_rows = 0
    # Part by part: memory is bounded by one part of the raw table.
    with ShardWriter(out) as writer:
        for raw in iter_table(layout.staging("raw_documents", key)):
            outcome = validate_documents(raw, policy)
            raw_rows += raw.height
            writer.write(outcome.kept)
            rejects.extend(outcome.rejects)
            counts["reasons"].update(outcome.reject_reasons)
            counts["pii"].update(outcome.pii_counts)
            counts["languages"].update(outcome.languages)
    manifest = writer.manifest
    quarantine = layout.quarantine(key) / "validated_documents.jsonl"
    write_rejects(rejects, quarantine)
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "rejects": len(rejects),
            "reject_rate": dg.MetadataValue.float(len(rejects) / raw_rows if raw_rows else 0.0),
            "reject_reasons": dg.MetadataValue.json(dict(sorted(counts["reasons"].items()))),
            "pii_masked": dg.MetadataValue.json(dict(sorted(counts["pii"].items()))),
            "pii_total": sum(counts["pii"].values()),
            "languages": dg.MetadataValue.json(dict(sorted(counts["languages"].items()))),
            "allowed_languages": dg.MetadataValue.json(languages),
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
    source, batch = split_batch_key(key)
    earlier = earlier_batch_keys(context.instance, key)
    index = DedupIndex(layout.dedup_index)
    stats = DedupStats()
    removed: list[Reject] = []
    columns = ["doc_id", "source", "batch", "path", "title", "text", "language", "messages"]
    out = layout.shards(key)
    # Part by part against the persistent index: memory is bounded by one part.
    parts = iter_table(layout.staging("validated_documents", key))
    with ShardWriter(out) as writer:
        for part, kept in deduplicate_batch(parts, index, key, earlier, stats):
            before = len(stats.decisions) - (part.height - kept.height)
            writer.write(kept.select([c for c in columns if c in kept.columns]))
            new = {d.doc_id: d for d in stats.decisions[before:]}
            for row in part.filter(part["doc_id"].is_in(list(new))).iter_rows(named=True):
                d = new[row["doc_id"]]
                removed.append(
                    Reject(
                        source=source,
                        batch=batch,
                        path=row["path"],
                        record=row["record"],
                        stage="clean_shards",
                        reason=f"{d.reason}:{d.duplicate_of}:cluster={d.cluster_id}",
                        excerpt=row["text"][:200],
                    )
                )
    manifest = writer.manifest
    quarantine = layout.quarantine(key) / "clean_shards.jsonl"
    write_rejects(sorted(removed, key=lambda r: (r.path, r.record or 0)), quarantine)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "input_rows": stats.input_rows,
            "exact_duplicates": stats.exact,
            "near_duplicates": stats.near,
            "candidates_from_index": stats.candidates_from_index,
            "compared_with_batches": len(earlier),
            "index_path": dg.MetadataValue.path(str(layout.dedup_index)),
            "removed_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )
