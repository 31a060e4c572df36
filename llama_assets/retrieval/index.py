"""The RAG index: one LanceDB table ``chunks``, upserted one batch at a time.

A batch's rows are merged on ``chunk_id``; rows of the same batch that are no
longer present are deleted in the same commit, so re-materialising a batch
never duplicates a vector and never leaves a stale one behind. Rows of batches
that are no longer registered partitions are deleted by ``remove_batches``
(``llama-platform remove-batch`` and every ``rag_index`` run reconcile).

Indexes, kept up to date after every upsert by ``maintain_indexes``:

- a full-text index (BM25, ``FTS``) on ``text``, for the ``fts`` and ``hybrid``
  search modes, from the first row on;
- an ANN index ``IVF_HNSW_SQ`` (cosine) on ``vector`` once the table holds
  ``ANN_MIN_ROWS`` rows, below which exact search is as fast (measured in
  ``benchmarks/retrieval_index.py``). Queries on the index re-rank
  ``REFINE_FACTOR`` x k candidates with exact distances. Rows added after the
  index was built are searched exactly alongside it (LanceDB scans unindexed
  fragments; ``tests/unit/test_index.py`` checks it), and ``optimize()`` folds them
  into the index; the index is retrained when less than half the table is in it.

Every write makes a new table version; ``restore_version`` makes an earlier
one current again (as a new version, so the restore itself can be undone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from llama_assets.base.layout import check_segment
from llama_assets.base.store import Location, as_location, mirror_prefix
from llama_assets.retrieval.index_files import record_checksums

if TYPE_CHECKING:
    import lancedb

# Lance logs a deprecation line per hybrid query (about score autoprojection);
# keep the terminal for results unless the user asks for Lance's logs.
os.environ.setdefault("LANCEDB_LOG", "error")


def _lancedb():
    """lancedb, imported when a table is opened (about 2 s: not with the code location)."""
    import lancedb

    return lancedb


TABLE_NAME = "chunks"
VECTOR_INDEX = "vector_idx"
FTS_INDEX = "text_idx"
# Measured (benchmarks/results/retrieval_index.md, 384-d, 2 shared cores): at 5k
# rows the ANN index is no faster than exact search (and recall@10 0.98); at 10k
# it halves the p50 (recall 0.99); at 20k it is 3x faster (recall 0.999).
ANN_MIN_ROWS = 10_000
REFINE_FACTOR = 10
# Old versions are kept this long by optimize(); restore can go back that far.
KEEP_VERSIONS = timedelta(days=7)

SEARCH_COLUMNS = [
    "chunk_id",
    "doc_id",
    "source",
    "batch",
    "title",
    "headings",
    "char_start",
    "char_end",
    "text",
]


def chunks_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("batch", pa.string()),
            ("title", pa.string()),
            ("headings", pa.string()),  # heading path, " > "-joined
            ("ordinal", pa.int32()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def connect(uri: Location | Path | str) -> lancedb.DBConnection:
    """The LanceDB database at `uri`: a local folder or an S3 prefix (LanceDB then
    talks to S3 itself, with the store's endpoint and credentials; its commits
    are conditional PUTs, so concurrent writers stay safe)."""
    location = as_location(uri)
    options = location.store.storage_options()
    return _lancedb().connect(str(location), storage_options=options or None)


def read_replica(uri: Location | Path | str) -> lancedb.DBConnection:
    """A connection for queries: the database itself when it is local; for S3 a
    local copy of the table's current version, refreshed incrementally (Lance
    files are immutable, so only new ones are fetched). Vector queries that
    read S3 each time are about 10x slower than local ones."""
    location = as_location(uri)
    if location.local is not None:
        return connect(location)
    target = location.store.cache_dir() / "replicas" / location.key
    mirror_prefix(location / f"{TABLE_NAME}.lance", target / f"{TABLE_NAME}.lance")
    return _lancedb().connect(str(target))


def existing_table(db: lancedb.DBConnection) -> lancedb.table.Table | None:
    """The ``chunks`` table, or None while it has no committed version: missing, or
    a creation killed before its first commit (LanceDB then lists a folder that
    holds only a temporary transaction file, and cannot open it)."""
    try:
        return db.open_table(TABLE_NAME)
    except ValueError:  # "Table 'chunks' was not found"
        return None


def open_table(db: lancedb.DBConnection, dim: int) -> lancedb.table.Table:
    """The ``chunks`` table, created if missing (or never committed); a table from an
    older schema gets the new columns (null until its batch is re-materialised)."""
    table = existing_table(db)
    if table is None:
        # exist_ok: another writer may have created it meanwhile; over a creation
        # that never committed, this commits the first version.
        return db.create_table(TABLE_NAME, schema=chunks_schema(dim), exist_ok=True)
    missing = [f for f in chunks_schema(dim) if f.name not in table.schema.names]
    if missing:
        table.add_columns(missing)
    return table


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def batch_filter(source: str, batch: str) -> str:
    """The LanceDB filter of one batch's rows. The names are validated as path
    segments first (letters, digits, '.', '_', '-'), so no quote or control
    character reaches the SQL; quoting is the second line of defence."""
    check_segment(source, "source")
    check_segment(batch, "batch")
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
    rows = rows.select(table.schema.names).cast(table.schema)
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


def delete_batch(table: lancedb.table.Table, source: str, batch: str) -> int:
    """Delete the batch's rows; a batch with none commits no new table version."""
    rows = table.count_rows(filter=batch_filter(source, batch))
    if rows:
        table.delete(batch_filter(source, batch))
    return rows


def indexed_batches(table: lancedb.table.Table) -> set[tuple[str, str]]:
    """Every ``(source, batch)`` that has rows in the table."""
    if table.count_rows() == 0:
        return set()
    frame = (
        table.search()
        .select(["source", "batch"])
        .limit(table.count_rows())
        .to_arrow()
        .group_by(["source", "batch"])
        .aggregate([])
    )
    return set(
        zip(frame.column("source").to_pylist(), frame.column("batch").to_pylist(), strict=True)
    )


def remove_batches(table: lancedb.table.Table, keep: set[tuple[str, str]]) -> dict[str, int]:
    """Delete the rows of every batch not in ``keep``; returns rows deleted per batch key."""
    deleted = {}
    for source, batch in sorted(indexed_batches(table) - keep):
        deleted[f"{source}/{batch}"] = delete_batch(table, source, batch)
    return deleted


# --- indexes ------------------------------------------------------------------


def _index_names(table: lancedb.table.Table) -> set[str]:
    return {ix.name for ix in table.list_indices()}


@dataclass
class IndexState:
    actions: list[str] = field(default_factory=list)
    vector_index: bool = False
    indexed_rows: int = 0
    unindexed_rows: int = 0


def maintain_indexes(table: lancedb.table.Table, ann_min_rows: int = ANN_MIN_ROWS) -> IndexState:
    """Create the FTS index, create the ANN index once the table is large enough,
    and fold new rows into both (``optimize``), retraining the ANN index when
    less than half of the table is in it."""
    state = IndexState()
    rows = table.count_rows()
    names = _index_names(table)
    if rows == 0:
        record_table_files(table)
        return state
    if FTS_INDEX not in names:
        from lancedb.index import FTS

        table.create_index("text", config=FTS(), name=FTS_INDEX, replace=True)
        state.actions.append("created fts index")
    if VECTOR_INDEX not in names and rows >= ann_min_rows:
        _build_vector_index(table, rows)
        state.actions.append("created vector index")
    elif VECTOR_INDEX in names:
        stats = table.index_stats(VECTOR_INDEX)
        if stats is not None and stats.num_indexed_rows < rows / 2:
            _build_vector_index(table, rows)
            state.actions.append("retrained vector index")
    needs_optimize = any(
        (s := table.index_stats(name)) is not None and s.num_unindexed_rows > 0
        for name in _index_names(table)
    )
    if needs_optimize:
        table.optimize(cleanup_older_than=KEEP_VERSIONS)
        state.actions.append("optimized")
    if VECTOR_INDEX in _index_names(table):
        stats = table.index_stats(VECTOR_INDEX)
        state.vector_index = True
        state.indexed_rows = stats.num_indexed_rows
        state.unindexed_rows = stats.num_unindexed_rows
    record_table_files(table)
    return state


def record_table_files(table: lancedb.table.Table) -> None:
    """Record the checksums of the table's files after a write (`index_files`),
    on the local store and on S3 alike."""
    record_checksums(as_location(str(table.uri).rstrip("/").rpartition("/")[0]))


def _build_vector_index(table: lancedb.table.Table, rows: int) -> None:
    # LanceDB's default partition count (its target partition size): a hand-set
    # sqrt(rows)/2 partitions measured recall@10 0.94 at 20k rows with the
    # default 20 probes against 0.996 with the default.
    from lancedb.index import IvfHnswSq

    table.create_index(
        "vector", config=IvfHnswSq(distance_type="cosine"), name=VECTOR_INDEX, replace=True
    )


def restore_version(table: lancedb.table.Table, version: int) -> int:
    """Make ``version`` current again (as a new version); returns the new version."""
    table.checkout(version)
    table.restore()
    record_table_files(table)
    return table.version


def rows_at_version(table: lancedb.table.Table, version: int) -> int:
    """How many rows the table held at `version` (the table stays on its latest)."""
    table.checkout(version)
    try:
        return table.count_rows()
    finally:
        table.checkout_latest()


def list_versions(table: lancedb.table.Table) -> list[dict[str, Any]]:
    return [
        {"version": v["version"], "timestamp": str(v["timestamp"])} for v in table.list_versions()
    ]


# --- search -------------------------------------------------------------------

MODES = ("vector", "fts", "hybrid")


def vector_search(
    table: lancedb.table.Table, query_vector: np.ndarray, k: int = 10, exact: bool = False
) -> list[dict[str, Any]]:
    """Cosine search; on the ANN index with exact re-ranking of ``REFINE_FACTOR`` x k
    candidates when there is one, exact otherwise (or when ``exact``)."""
    query = table.search(
        np.asarray(query_vector, dtype=np.float32), vector_column_name="vector"
    ).distance_type("cosine")
    # refine_factor is ignored by a flat scan, so no per-query look-up of the
    # table's indexes (list_indices costs about 0.5 ms, a tenth of an ANN query).
    query = query.bypass_vector_index() if exact else query.refine_factor(REFINE_FACTOR)
    hits = query.select([*SEARCH_COLUMNS, "_distance"]).limit(k).to_list()
    for hit in hits:
        hit["score"] = 1.0 - hit["_distance"]
    return hits


def fts_search(table: lancedb.table.Table, text: str, k: int = 10) -> list[dict[str, Any]]:
    """BM25 over ``text`` (the FTS index)."""
    if FTS_INDEX not in _index_names(table):
        return []
    hits = (
        table.search(text, query_type="fts", fts_columns="text")
        .select([*SEARCH_COLUMNS, "_score"])
        .limit(k)
        .to_list()
    )
    for hit in hits:
        hit["score"] = hit["_score"]
    return hits


def hybrid_search(
    table: lancedb.table.Table, text: str, query_vector: np.ndarray, k: int = 10
) -> list[dict[str, Any]]:
    """Vector and BM25 results fused by reciprocal rank (LanceDB's default reranker)."""
    if FTS_INDEX not in _index_names(table):
        return vector_search(table, query_vector, k)
    query = (
        table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
        .vector(np.asarray(query_vector, dtype=np.float32))
        .text(text)
        .distance_type("cosine")
    )
    if VECTOR_INDEX in _index_names(table):
        query = query.refine_factor(REFINE_FACTOR)
    hits = query.select(SEARCH_COLUMNS).limit(k).to_list()
    for hit in hits:
        hit["score"] = hit.get("_relevance_score", 0.0)
    return hits
