"""The LanceDB upsert against a real database in tmp_path."""

import numpy as np
import pyarrow as pa

from llama_assets.retrieval import index


def rows(ids: list[str], batch: str, dim: int = 4) -> pa.Table:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pa.table(
        {
            "chunk_id": ids,
            "doc_id": [i.split("-")[0] for i in ids],
            "source": ["s"] * len(ids),
            "batch": [batch] * len(ids),
            "title": [None] * len(ids),
            "ordinal": pa.array([0] * len(ids), pa.int32()),
            "char_start": [0] * len(ids),
            "char_end": [1] * len(ids),
            "text": ids,
            "vector": pa.array(vectors.tolist(), pa.list_(pa.float32(), dim)),
        }
    )


def test_upsert_replaces_a_batch_exactly_and_leaves_other_batches(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    index.upsert_batch(table, rows(["a-1", "a-2"], "b1"), "s", "b1")
    index.upsert_batch(table, rows(["c-1"], "b2"), "s", "b2")
    again = index.upsert_batch(table, rows(["a-1", "a-2"], "b1"), "s", "b1")
    assert (again.inserted, again.deleted, again.total_rows) == (0, 0, 3)

    changed = index.upsert_batch(table, rows(["a-2", "a-3"], "b1"), "s", "b1")
    assert (changed.inserted, changed.deleted, changed.total_rows) == (1, 1, 3)
    ids = sorted(r["chunk_id"] for r in table.to_arrow().to_pylist())
    assert ids == ["a-2", "a-3", "c-1"]


def test_vector_search_finds_the_exact_vector_first(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    batch = rows(["a-1", "b-1", "c-1"], "b1")
    index.upsert_batch(table, batch, "s", "b1")
    query = np.array(batch.column("vector")[1].as_py(), dtype=np.float32)
    hits = index.vector_search(table, query, k=2)
    assert hits[0]["chunk_id"] == "b-1" and hits[0]["_distance"] < 1e-5


def test_batch_names_with_quotes_are_escaped():
    assert index.batch_filter("s", "it's") == "source = 's' AND batch = 'it''s'"
