"""Curation assets: content validation (layer 2), profile and drift (layer 3),
and deduplicated, sharded output."""

import json
import sqlite3
import time
from collections import Counter

import dagster as dg
import polars as pl

from llama_assets.base.atomic import atomic_open, atomic_write_json
from llama_assets.base.layout import DataLayout, split_batch_key
from llama_assets.base.rejects import Reject, write_rejects
from llama_assets.base.shards import ShardWriter, read_manifest
from llama_assets.base.sources import drift_baseline_keys, source_policy, sources_file
from llama_assets.curate.clean import (
    DedupStats,
    deduplicate_batch,
    fingerprint_part,
    reconcile_index,
)
from llama_assets.curate.dedup_index import set_aside
from llama_assets.curate.profile import (
    ProfileAccumulator,
    drift,
    drift_report,
    pool_profiles,
)
from llama_assets.curate.review import (
    REVIEW_STATUSES,
    apply_review_cap,
    ensure_decisions_file,
    read_decisions,
)
from llama_assets.curate.schema import (
    CLEAN_COLUMNS,
    REVIEW_SCHEMA,
    CleanShards,
    ReviewCandidates,
    ReviewQueue,
)
from llama_assets.curate.validate import ContentPolicy, validate_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import batch_partitions, earlier_batch_keys, later_batch_keys
from llama_assets.policies import DEDUP_POOL, IO_RETRY
from llama_assets.tables import (
    Table,
    iter_table,
    map_table,
    read_table,
    staged,
    table_metadata,
    write_table,
)
from resources.storage import LocalDataRoot


def review_candidates_table(layout: DataLayout, key: str) -> Table:
    """Borderline documents of a batch: the second table `validated_documents` writes."""
    return staged(layout, validated_documents.key, key, "review_candidates")


def clean_shards_table(layout: DataLayout, key: str) -> Table:
    """A batch's clean shards, ``shards/<source>/<batch>/``: the hand-off downstream."""
    return Table(layout.shards(key), clean_shards.key, key)


LATER_DUPLICATES = "later_batches_with_duplicates"
"""clean_shards metadata: later batches that ran first and kept copies of this
batch's documents; sensors/dedup_order.py re-deduplicates them."""


class ContentConfig(dg.Config):
    allowed_languages: list[str] | None = None
    """Overrides the source's allowed_languages (sources.toml) for this run."""


@dg.asset(
    partitions_def=batch_partitions,
    deps=[raw_documents],
    group_name="curate",
    kinds={"polars", "parquet"},
    retry_policy=IO_RETRY,
    description="Layer 2: PII masked (text, title, messages), language identified from the "
    "prose (or the source's declared language for a page too short or code-heavy to judge), "
    "Gopher/C4 quality scores. A language the source does not allow goes to quarantine/; "
    "the quality rules decide only training: each document records for_index, "
    "for_training and training_exclusion.",
)
def validated_documents(
    context: dg.AssetExecutionContext, config: ContentConfig, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    started = time.perf_counter()
    source, _ = split_batch_key(key)
    source_rules = source_policy(source, sources_file(layout.sources_config))
    languages = config.allowed_languages or list(source_rules.allowed_languages)
    policy = ContentPolicy(
        tuple(languages),
        declared_language=source_rules.declared_language,
        use_for_index=source_rules.use_for_index,
        use_for_training=source_rules.use_for_training,
    )
    decisions, decision_problems = read_decisions(layout.review_decisions)
    for problem in decision_problems:
        context.log.warning(f"review decision ignored: {problem}")
    out = staged(layout, validated_documents.key, key).path
    review: list[dict] = []
    rejects: list[Reject] = []
    counts: dict[str, Counter] = {
        name: Counter()
        for name in ("reasons", "pii", "languages", "language_sources", "uses", "exclusions")
    }
    raw_rows = 0
    # Part by part, in worker processes: memory is bounded by a few parts.
    raw = staged(layout, raw_documents.key, key)
    with ShardWriter(out, max_rows=source_rules.part_rows) as writer:
        for outcome in map_table(raw, validate_documents, policy, decisions):
            review.extend(outcome.review)
            raw_rows += outcome.rows
            writer.write(outcome.kept)
            rejects.extend(outcome.rejects)
            context.log.info(f"validated {raw_rows:,} documents, {len(rejects):,} rejected")
            counts["reasons"].update(outcome.reject_reasons)
            counts["pii"].update(outcome.pii_counts)
            counts["languages"].update(outcome.languages)
            counts["language_sources"].update(outcome.language_sources)
            counts["uses"].update(outcome.uses)
            counts["exclusions"].update(outcome.training_exclusions)
    manifest = writer.manifest
    quarantine = layout.quarantine(key) / "validated_documents.jsonl"
    write_rejects(rejects, quarantine)
    # Borderline documents, with what happened to each, for the review_queue asset;
    # held beyond the source's cap, the rule decides.
    review = apply_review_cap(review, source_rules.review_cap)
    candidates = ReviewCandidates.validate(pl.DataFrame(review, schema=REVIEW_SCHEMA))
    write_table(candidates, review_candidates_table(layout, key))
    statuses = Counter(r["status"] for r in review)
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "for_index": counts["uses"]["index"],
            "for_training": counts["uses"]["training"],
            "not_for_training": manifest["rows"] - counts["uses"]["training"],
            "training_exclusions": dg.MetadataValue.json(
                dict(sorted(counts["exclusions"].items()))
            ),
            "review_held": statuses["held"],
            "review_over_cap": statuses["over_cap"],
            "review_cap": source_rules.review_cap,
            "review_statuses": dg.MetadataValue.json(dict(sorted(statuses.items()))),
            "review_decisions_applied": sum(1 for r in review if r["doc_id"] in decisions),
            "rejects": len(rejects),
            "reject_rate": dg.MetadataValue.float(len(rejects) / raw_rows if raw_rows else 0.0),
            "reject_reasons": dg.MetadataValue.json(dict(sorted(counts["reasons"].items()))),
            "pii_masked": dg.MetadataValue.json(dict(sorted(counts["pii"].items()))),
            "pii_total": sum(counts["pii"].values()),
            "languages": dg.MetadataValue.json(dict(sorted(counts["languages"].items()))),
            "language_sources": dg.MetadataValue.json(
                dict(sorted(counts["language_sources"].items()))
            ),
            "declared_language": source_rules.declared_language,
            "allowed_languages": dg.MetadataValue.json(languages),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[validated_documents],
    group_name="curate",
    kinds={"parquet", "csv"},
    description="Documents within a review margin of a quality threshold (curate/review.py): "
    "held ones (at most the source's review_cap a batch, most words first; the rest over_cap, "
    "decided by the rule) are not trained on until a person decides in review/decisions.csv, "
    "which the next materialisation of validated_documents honours (approve: trained on; "
    "reject: not, as review:rejected). Every one stays searchable.",
)
def review_queue(context: dg.AssetExecutionContext, storage: LocalDataRoot) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    queue = read_table(review_candidates_table(layout, key))
    decisions, _ = read_decisions(layout.review_decisions)
    queue = queue.with_columns(
        pl.col("doc_id")
        .replace_strict(decisions, default=None, return_dtype=pl.String)
        .alias("decision")
    )
    # Held first, those that matter most first (curate/review.py), then the rest.
    status_order = {status: i for i, status in enumerate(REVIEW_STATUSES)}
    queue = queue.sort(
        pl.col("status").replace_strict(status_order, return_dtype=pl.Int32),
        pl.col("words"),
        pl.col("distance").abs(),
        "doc_id",
        descending=[False, True, False, False],
    )
    queue = ReviewQueue.validate(queue)
    out = layout.review_queue(key)
    manifest = write_table(queue, out)
    # A flat copy for people (spreadsheets), written atomically beside the table.
    with atomic_open(out / "queue.csv", "w", encoding="utf-8", newline="") as fh:
        queue.drop("text").with_columns(excerpt=queue["text"].str.slice(0, 200)).write_csv(fh)
    ensure_decisions_file(layout.review_decisions)
    statuses = Counter(queue["status"].to_list())
    preview = queue.filter(pl.col("status") == "held").head(20)
    rows = "\n".join(
        f"| `{r['doc_id']}` | {r['path']} | {r['words']:.0f} | {r['rule']} | {r['value']:.3f} "
        f"| {r['threshold']} |"
        for r in preview.iter_rows(named=True)
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "held": statuses["held"],
            "over_cap": statuses["over_cap"],
            "passed": statuses["passed"],
            "approved": statuses["approved"],
            "rejected": statuses["rejected"],
            "decisions_file": dg.MetadataValue.path(str(layout.review_decisions)),
            "csv": dg.MetadataValue.path(str(out / "queue.csv")),
            "held_preview": dg.MetadataValue.md(
                "| doc_id | path | words | rule | value | threshold |\n|---|---|---|---|---|---|\n"
                + rows
                if rows
                else "Nothing held for review."
            ),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[validated_documents],
    group_name="curate",
    kinds={"json"},
    description="Layer 3: the batch's statistical profile (length, language mix, quality-"
    "signal distributions, volume), built part by part, and its drift against the "
    "source's baseline (rolling or pinned, sources.toml): PSI and normalised Wasserstein "
    "on numeric features, Jensen-Shannon on the language mix (Evidently's tests and "
    "thresholds). drift_score above 1.0 means drifted; the drift sensor acts on it.",
)
def corpus_profile(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    source, _ = split_batch_key(key)
    accumulator = ProfileAccumulator()
    for part in iter_table(staged(layout, validated_documents.key, key)):
        accumulator.add(part)
    profile = accumulator.result()
    policy = source_policy(source, sources_file(layout.sources_config))
    keys, baseline_name = drift_baseline_keys(
        policy, key, earlier_batch_keys(context.instance, key)
    )
    earlier = [
        json.loads(layout.profile(k).read_text())["profile"]
        for k in keys
        if layout.profile(k).is_file()
    ]
    result = drift(profile, pool_profiles(earlier), baseline_name)
    report = drift_report(key, result)
    path = layout.profile(key)
    atomic_write_json(
        path, {"batch": key, "profile": profile, "drift": result, "report_md": report}
    )
    per_feature = {
        f"drift/{name}": dg.MetadataValue.float(round(f["score"], 4))
        for name, f in sorted(result["features"].items())
    }
    return dg.MaterializeResult(
        metadata={
            "documents": profile["documents"],
            "words": profile["words"],
            "mean_words": dg.MetadataValue.float(profile["length_words"]["mean"]),
            "drift_score": dg.MetadataValue.float(result["score"]),
            "drift_threshold": dg.MetadataValue.float(1.0),
            "drifted": dg.MetadataValue.bool(result["drifted"]),
            "drifted_features": dg.MetadataValue.json(
                sorted(k for k, f in result["features"].items() if f["drifted"])
            ),
            "baseline": dg.MetadataValue.text(result["baseline"] or "none"),
            "baseline_batches": len(earlier),
            **per_feature,
            "drift_report": dg.MetadataValue.md(report),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[validated_documents],
    group_name="curate",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    # One batch at a time writes the dedup index, so a batch always sees every
    # batch indexed before it (the pool's limit is 1 in deploy/local/dagster.yaml).
    pool=DEDUP_POOL,
    description="Exact and near-duplicate removal within the batch and against every "
    "earlier batch; parquet shards with a checksummed manifest.json. Later batches that "
    "ran first and kept copies of this batch's documents are listed in "
    "later_batches_with_duplicates (dedup_order_sensor re-deduplicates them). The dedup "
    "index is checked against every other batch's clean shards first: a lost or short "
    "batch is re-indexed from its shards, a corrupt index file is moved aside and rebuilt.",
)
def clean_shards(context: dg.AssetExecutionContext, storage: LocalDataRoot) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    started = time.perf_counter()
    earlier = earlier_batch_keys(context.instance, key)
    later = later_batch_keys(context.instance, key)
    out = clean_shards_table(layout, key).path
    set_aside_to = None
    for attempt in (1, 2):
        try:
            index = storage.dedup_index(context.instance)
            rebuilt = reconcile_index(
                index,
                {k: _clean_rows(layout, k) for k in [*earlier, *later]},
                lambda k: map_table(clean_shards_table(layout, k), fingerprint_part),
            )
            for batch, action in rebuilt.items():
                context.log.warning(f"dedup index: {batch}: {action}")
            manifest, stats, removed, uses = _deduplicate(
                layout, key, index, earlier, later, out, context.log.info
            )
            break
        except sqlite3.DatabaseError as exc:
            if attempt == 2:
                raise dg.Failure(
                    f"the dedup index {layout.dedup_index} is unreadable again after it was "
                    f"rebuilt ({exc}): check the disk, delete the file and re-materialise "
                    f"clean_shards for {key}",
                    allow_retries=False,
                ) from exc
            set_aside_to = set_aside(layout.dedup_index.local)
            context.log.warning(
                f"the dedup index {layout.dedup_index} is corrupt ({exc}): moved aside to "
                f"{set_aside_to}; rebuilding it from the clean shards of every other batch"
            )
    quarantine = layout.quarantine(key) / "clean_shards.jsonl"
    write_rejects(sorted(removed, key=lambda r: (r.path, r.record or 0)), quarantine)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "input_rows": stats.input_rows,
            "for_index": uses["index"],
            "for_training": uses["training"],
            "exact_duplicates": stats.exact,
            "near_duplicates": stats.near,
            "candidates_from_index": stats.candidates_from_index,
            "compared_with_batches": len(earlier),
            LATER_DUPLICATES: dg.MetadataValue.json(sorted(stats.later_batches_with_duplicates)),
            "index_path": dg.MetadataValue.path(str(index)),
            "index_rebuilt_batches": dg.MetadataValue.json(rebuilt),
            "index_set_aside": str(set_aside_to) if set_aside_to else "",
            "removed_path": dg.MetadataValue.path(str(quarantine)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )


def _clean_rows(layout: DataLayout, key: str) -> int | None:
    """Rows of a batch's clean shards by their manifest; None when it has none."""
    try:
        return read_manifest(clean_shards_table(layout, key).path)["rows"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError):
        return -1  # unreadable: never equal to the index's count, so re-indexed (and verified)


def _deduplicate(layout, key, index, earlier, later, out, log=lambda line: None):
    """The batch's survivors written to `out`, part by part against the persistent
    index: memory is bounded by a few parts. MinHash runs in worker processes."""
    source, batch = split_batch_key(key)
    part_rows = source_policy(source, sources_file(layout.sources_config)).part_rows
    started = time.perf_counter()
    stats = DedupStats()
    removed: list[Reject] = []
    parts = map_table(staged(layout, validated_documents.key, key), fingerprint_part)
    uses: Counter[str] = Counter()
    with ShardWriter(out, max_rows=part_rows) as writer:
        seen = 0
        for part, kept in deduplicate_batch(parts, index, key, earlier, stats, later):
            before = len(stats.decisions) - (part.height - kept.height)
            writer.write(CleanShards.validate(kept.select(CLEAN_COLUMNS)))
            uses.update(
                index=int(kept["for_index"].sum()), training=int(kept["for_training"].sum())
            )
            seen += part.height
            log(
                f"deduplicated {seen:,} documents, {len(stats.decisions):,} removed, "
                f"{seen / max(time.perf_counter() - started, 1e-9):,.0f} documents/s"
            )
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
    return writer.manifest, stats, removed, uses
