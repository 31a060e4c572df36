"""Retrieval assets: chunks, their embeddings, and the LanceDB ``chunks`` table."""

import time

import dagster as dg
import numpy as np
import polars as pl

from llama_assets.base.layout import split_batch_key
from llama_assets.base.progress import RateLog
from llama_assets.curate.assets import clean_shards, clean_shards_table
from llama_assets.partitions import BATCHES, batch_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL, IO_RETRY
from llama_assets.retrieval.chunking import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    TokenOffsets,
    chunk_documents,
    hf_token_offsets,
)
from llama_assets.retrieval.embedding_cache import EmbeddingCache, EmbedResult, embed_with_cache
from llama_assets.retrieval.index import maintain_indexes, remove_batches, upsert_batch
from llama_assets.retrieval.index_files import set_aside, verify_checksums
from llama_assets.tables import read_table, staged, table_metadata, write_table
from resources.embedder import EmbedderResource
from resources.storage import LocalDataRoot
from resources.vector_store import LanceDBResource

CHUNK_SCHEMA = {
    "chunk_id": pl.String,
    "doc_id": pl.String,
    "source": pl.String,
    "batch": pl.String,
    "title": pl.String,
    "headings": pl.String,
    "ordinal": pl.Int32,
    "char_start": pl.Int64,
    "char_end": pl.Int64,
    "tokens": pl.Int32,
    "text": pl.String,
}
HEADING_SEPARATOR = " > "


def chunk_frame(
    docs: pl.DataFrame,
    token_offsets: TokenOffsets,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> pl.DataFrame:
    meta = {d["doc_id"]: d for d in docs.select("doc_id", "source", "batch", "title").to_dicts()}
    pieces = chunk_documents(
        list(zip(docs["doc_id"].to_list(), docs["text"].to_list(), strict=True)),
        token_offsets,
        max_tokens,
        overlap_tokens,
    )
    rows = [
        {
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "source": meta[c.doc_id]["source"],
            "batch": meta[c.doc_id]["batch"],
            "title": meta[c.doc_id]["title"],
            "headings": HEADING_SEPARATOR.join(c.headings),
            "ordinal": c.ordinal,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "tokens": c.tokens,
            "text": c.text,
        }
        for c in pieces
    ]
    return pl.DataFrame(rows, schema=CHUNK_SCHEMA)


@dg.asset(
    partitions_def=batch_partitions,
    deps=[clean_shards],
    group_name="retrieval",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    description="Clean documents (for_index: all but those of sources that opt out) cut at "
    "their headings and paragraphs into chunks of at most the embedder's window in its own "
    "tokens (254 for all-MiniLM-L6-v2), with overlap; each chunk has its heading path and "
    "character offsets; chunk_id is a content hash scoped to the document.",
)
def chunks(
    context: dg.AssetExecutionContext, storage: LocalDataRoot, embedder: EmbedderResource
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    shards = read_table(clean_shards_table(layout, key))
    # Every clean document is searchable unless its source opted out (for_index);
    # the quality rules decide only training. Shards from before the column: all.
    docs = shards.filter(pl.col("for_index")) if "for_index" in shards.columns else shards
    started = time.perf_counter()
    max_tokens = min(DEFAULT_MAX_TOKENS, embedder.max_tokens)
    frame = chunk_frame(docs, hf_token_offsets(embedder.tokenizer()), max_tokens)
    seconds = time.perf_counter() - started
    out = staged(layout, chunks.key, key).path
    manifest = write_table(frame, out)
    tokens = frame["tokens"] if frame.height else pl.Series([0])
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "documents": docs.height,
            "documents_not_indexed": shards.height - docs.height,
            "max_tokens": max_tokens,
            "mean_chunk_tokens": dg.MetadataValue.float(float(tokens.mean() or 0)),
            "max_chunk_tokens": int(tokens.max() or 0),
            "chunks_with_headings": int((frame["headings"] != "").sum()) if frame.height else 0,
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
        }
    )


def embed_chunks(
    texts: list[str], embedder: EmbedderResource, cache_uri, log=None
) -> tuple[np.ndarray, EmbedResult]:
    cache = EmbeddingCache(cache_uri, embedder.fingerprint, embedder.dimension)

    def encode(missing: list[str]) -> np.ndarray:
        # Progress of what the model encodes (cached texts cost nothing).
        progress = RateLog("embedded", len(missing), log, "chunks") if log else None
        return embedder.encode_sorted(missing, on_progress=progress.update if progress else None)

    result = embed_with_cache(texts, cache, encode)
    return result.vectors, result


@dg.asset(
    partitions_def=batch_partitions,
    deps=[chunks],
    group_name="retrieval",
    kinds={"torch", "parquet"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=IO_RETRY,
    description="Sentence embeddings of every chunk (L2-normalised float32), from the "
    "configured sentence-transformers model (all-MiniLM-L6-v2 offline by default). "
    "Only chunks whose text is not in the embedding cache (cache/embeddings/, keyed by "
    "model fingerprint and text sha256) are sent to the model, sorted by length.",
)
def embeddings(
    context: dg.AssetExecutionContext, storage: LocalDataRoot, embedder: EmbedderResource
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    frame = read_table(staged(layout, chunks.key, key), ["chunk_id", "text"])
    started = time.perf_counter()
    vectors, result = embed_chunks(
        frame["text"].to_list(), embedder, layout.embedding_cache, log=context.log.info
    )
    seconds = time.perf_counter() - started
    table = pl.DataFrame(
        {"chunk_id": frame["chunk_id"], "vector": vectors},
        schema={"chunk_id": pl.String, "vector": pl.Array(pl.Float32, vectors.shape[1])},
    )
    out = staged(layout, embeddings.key, key).path
    manifest = write_table(table, out)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "model": embedder.model_name,
            "model_fingerprint": embedder.fingerprint,
            "device": embedder.device_name,
            "dimension": int(vectors.shape[1]),
            "embedded": result.embedded,
            "cached": result.cached,
            "cache_hit_rate": dg.MetadataValue.float(
                round(result.cached / frame.height, 4) if frame.height else 1.0
            ),
            "cache": dg.MetadataValue.path(str(layout.embedding_cache)),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "chunks_per_second": dg.MetadataValue.float(
                round(frame.height / seconds, 1) if seconds else 0.0
            ),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[embeddings],
    group_name="retrieval",
    kinds={"lancedb"},
    retry_policy=IO_RETRY,
    description="The batch's chunks upserted into the LanceDB table `chunks` (merge on "
    "chunk_id; chunks that left the batch are deleted in the same commit; rows of "
    "batches that are no longer partitions are deleted). Keeps the full-text index and, "
    "from ANN_MIN_ROWS rows on, an IVF_HNSW_SQ vector index up to date. The table "
    "version is recorded; `llama-platform restore-index` goes back to an earlier one.",
)
def rag_index(
    context: dg.AssetExecutionContext, storage: LocalDataRoot, vector_store: LanceDBResource
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    source, batch = split_batch_key(key)
    frame = index_rows(layout, key)
    dim = frame["vector"].dtype.size if frame.height else 384
    keys = list(context.instance.get_dynamic_partitions(BATCHES))
    rebuilt = repair_index(context, layout, vector_store, dim, [k for k in keys if k != key])
    table = vector_store.chunks_table(dim)
    started = time.perf_counter()
    result = upsert_batch(table, frame.to_arrow(), source, batch)
    registered = {split_batch_key(k) for k in keys}
    removed = remove_batches(table, registered | {(source, batch)})
    upsert_seconds = time.perf_counter() - started
    state = maintain_indexes(table)
    vectors = frame["vector"].to_numpy() if frame.height else np.zeros((0, dim))
    if removed:
        context.log.info(f"deleted the rows of unregistered batches: {removed}")
    return dg.MaterializeResult(
        metadata={
            "batch_rows": frame.height,
            "inserted": result.inserted,
            "updated": result.updated,
            "deleted": result.deleted,
            "removed_batches": dg.MetadataValue.json(removed),
            "rebuilt_from_upstream": dg.MetadataValue.json(rebuilt),
            "table_rows": table.count_rows(),
            "table_version": table.version,
            "vector_index": state.vector_index,
            "indexed_rows": state.indexed_rows,
            "unindexed_rows": state.unindexed_rows,
            "index_actions": dg.MetadataValue.json(state.actions),
            "max_norm_error": dg.MetadataValue.float(
                float(np.abs(np.linalg.norm(vectors, axis=1) - 1).max()) if frame.height else 0.0
            ),
            "uri": dg.MetadataValue.path(vector_store.resolved_uri),
            "upsert_seconds": dg.MetadataValue.float(round(upsert_seconds, 3)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )


def index_rows(layout, key: str):
    """A batch's rows for the ``chunks`` table: its chunks with their vectors."""
    return read_table(staged(layout, chunks.key, key)).join(
        read_table(staged(layout, embeddings.key, key)), on="chunk_id", how="inner"
    )


def repair_index(context, layout, vector_store: LanceDBResource, dim: int, others) -> list[str]:
    """Verify the table's files (`index_files`); when one is damaged, move the
    table aside and rebuild it from every other registered batch's checksummed
    chunks and embeddings (this run then upserts its own batch). Returns the
    batches rebuilt (none when the table is intact)."""
    location = vector_store.location
    problems = verify_checksums(location)
    if not problems:
        return []
    aside = set_aside(location)
    context.log.warning(
        f"the chunks table under {location} is damaged ({'; '.join(problems[:3])}): moved aside "
        f"to {aside}; rebuilding it from the chunks and embeddings of every batch"
    )
    table = vector_store.chunks_table(dim)
    rebuilt = []
    for other in others:
        if not all(
            (staged(layout, asset.key, other).path / "manifest.json").is_file()
            for asset in (chunks, embeddings)
        ):
            continue  # not embedded yet: its own rag_index run adds it
        source, batch = split_batch_key(other)
        upsert_batch(table, index_rows(layout, other).to_arrow(), source, batch)
        rebuilt.append(other)
    return rebuilt
