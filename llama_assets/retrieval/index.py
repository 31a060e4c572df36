"""The RAG index: one LanceDB table ``chunks``, upserted one batch at a time.

A batch's rows are merged on ``chunk_id``; rows of the same batch that are no
longer present are deleted in the same commit, so re-materialising a batch
never duplicates a vector and never leaves a stale one behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

TABLE_NAME = "chunks"


def chunks_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("batch", pa.string()),
            ("title", pa.string()),
            ("ordinal", pa.int32()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def connect(uri: Path | str) -> lancedb.DBConnection:
    return lancedb.connect(str(uri))


def open_table(db: lancedb.DBConnection, dim: int) -> lancedb.table.Table:
    # exist_ok opens the table when it is there (and checks the schema matches).
    return db.create_table(TABLE_NAME, schema=chunks_schema(dim), exist_ok=True)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def batch_filter(source: str, batch: str) -> str:
    return f"source = {_sql_literal(source)} AND batch = {_sql_literal(batch)}"


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    deleted: int
    version: int
    total_rows: int


def upsert_batch(
    table: lancedb.table.Table, rows: pa.Table, source: str, batch: str
) -> UpsertResult:
    """Make the table's rows for ``source/batch`` exactly ``rows``, in one commit."""
    rows = rows.cast(table.schema)
    result = (
        table.merge_insert("chunk_id")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .when_not_matched_by_source_delete(batch_filter(source, batch))
        .execute(rows)
    )
    return UpsertResult(
        inserted=result.num_inserted_rows,
        updated=result.num_updated_rows,
        deleted=result.num_deleted_rows,
        version=table.version,
        total_rows=table.count_rows(),
    )


def delete_batch(table: lancedb.table.Table, source: str, batch: str) -> None:
    table.delete(batch_filter(source, batch))


def vector_search(
    table: lancedb.table.Table, query_vector: np.ndarray, k: int = 10
) -> list[dict[str, Any]]:
    """Exact cosine search; vectors are L2-normalised, so cosine ranks like dot."""
    return (
        table.search(np.asarray(query_vector, dtype=np.float32), vector_column_name="vector")
        .metric("cosine")
        .select(["chunk_id", "doc_id", "source", "batch", "title", "text", "_distance"])
        .limit(k)
        .to_list()
    )
