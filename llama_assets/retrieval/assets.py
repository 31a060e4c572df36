"""Retrieval assets: chunks, their embeddings, and the LanceDB ``chunks`` table."""

import time

import dagster as dg
import numpy as np
import polars as pl

from llama_assets.curate.assets import clean_shards
from llama_assets.layout import split_batch_key
from llama_assets.partitions import batch_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL, IO_RETRY
from llama_assets.retrieval.chunking import chunk_document
from llama_assets.retrieval.index import upsert_batch
from llama_assets.tables import read_table, table_metadata, write_table
from resources.embedder import EmbedderResource
from resources.storage import LocalDataRoot
from resources.vector_store import LanceDBResource

CHUNK_SCHEMA = {
    "chunk_id": pl.String,
    "doc_id": pl.String,
    "source": pl.String,
    "batch": pl.String,
    "title": pl.String,
    "ordinal": pl.Int32,
    "char_start": pl.Int64,
    "char_end": pl.Int64,
    "text": pl.String,
}


def chunk_frame(docs: pl.DataFrame) -> pl.DataFrame:
    rows = [
        {
            "chunk_id": c.chunk_id,
            "doc_id": c.doc_id,
            "source": doc["source"],
            "batch": doc["batch"],
            "title": doc["title"],
            "ordinal": c.ordinal,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "text": c.text,
        }
        for doc in docs.iter_rows(named=True)
        for c in chunk_document(doc["doc_id"], doc["text"])
    ]
    return pl.DataFrame(rows, schema=CHUNK_SCHEMA)


@dg.asset(
    partitions_def=batch_partitions,
    deps=[clean_shards],
    group_name="retrieval",
    kinds={"parquet"},
    retry_policy=IO_RETRY,
    description="Clean documents split along paragraphs into overlapping chunks; "
    "chunk_id is a content hash scoped to the document.",
)
def chunks(context: dg.AssetExecutionContext, storage: LocalDataRoot) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    docs = read_table(layout.shards(key))
    frame = chunk_frame(docs)
    out = layout.staging("chunks", key)
    manifest = write_table(frame, out)
    words = frame["text"].str.split(" ").list.len() if frame.height else pl.Series([0])
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "documents": docs.height,
            "mean_chunk_words": dg.MetadataValue.float(float(words.mean() or 0)),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    deps=[chunks],
    group_name="retrieval",
    kinds={"torch", "parquet"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=IO_RETRY,
    description="Sentence embeddings of every chunk (L2-normalised float32), from the "
    "configured sentence-transformers model; all-MiniLM-L6-v2 offline by default.",
)
def embeddings(
    context: dg.AssetExecutionContext, storage: LocalDataRoot, embedder: EmbedderResource
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    frame = read_table(layout.staging("chunks", key), ["chunk_id", "text"])
    started = time.perf_counter()
    vectors = embedder.encode(frame["text"].to_list())
    seconds = time.perf_counter() - started
    table = pl.DataFrame(
        {"chunk_id": frame["chunk_id"], "vector": vectors},
        schema={"chunk_id": pl.String, "vector": pl.Array(pl.Float32, vectors.shape[1])},
    )
    out = layout.staging("embeddings", key)
    manifest = write_table(table, out)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(manifest, out),
            "model": embedder.model_name,
            "dimension": int(vectors.shape[1]),
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
    "chunk_id; chunks that left the batch are deleted in the same commit).",
)
def rag_index(
    context: dg.AssetExecutionContext, storage: LocalDataRoot, vector_store: LanceDBResource
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    source, batch = split_batch_key(key)
    frame = read_table(layout.staging("chunks", key)).join(
        read_table(layout.staging("embeddings", key)), on="chunk_id", how="inner"
    )
    dim = frame["vector"].dtype.size if frame.height else 384
    table = vector_store.chunks_table(dim)
    started = time.perf_counter()
    result = upsert_batch(table, frame.to_arrow(), source, batch)
    vectors = frame["vector"].to_numpy() if frame.height else np.zeros((0, dim))
    return dg.MaterializeResult(
        metadata={
            "batch_rows": frame.height,
            "inserted": result.inserted,
            "updated": result.updated,
            "deleted": result.deleted,
            "table_rows": result.total_rows,
            "table_version": result.version,
            "max_norm_error": dg.MetadataValue.float(
                float(np.abs(np.linalg.norm(vectors, axis=1) - 1).max()) if frame.height else 0.0
            ),
            "uri": dg.MetadataValue.path(vector_store.resolved_uri),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )
