"""The LanceDB index against a real database in tmp_path: upserts, deletions,
versions, the ANN and full-text indexes, and the embedding cache."""

import numpy as np
import pyarrow as pa
import pytest

from llama_assets.retrieval import index
from llama_assets.retrieval.embedding_cache import EmbeddingCache, embed_with_cache
from llama_assets.retrieval.search import search


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(ids: list[str], batch: str, dim: int = 4, vectors=None, texts=None) -> pa.Table:
    vectors = unit_vectors(len(ids), dim) if vectors is None else vectors
    return pa.table(
        {
            "chunk_id": ids,
            "doc_id": [i.split("-")[0] for i in ids],
            "source": ["s"] * len(ids),
            "batch": [batch] * len(ids),
            "title": [None] * len(ids),
            "headings": [""] * len(ids),
            "ordinal": pa.array([0] * len(ids), pa.int32()),
            "char_start": [0] * len(ids),
            "char_end": [1] * len(ids),
            "text": texts or ids,
            "vector": pa.array(vectors.tolist(), pa.list_(pa.float32(), dim)),
        }
    )


def ids_in(table) -> list[str]:
    return sorted(r["chunk_id"] for r in table.to_arrow().to_pylist())


def test_upsert_is_idempotent_and_deletes_departed_documents(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    index.upsert_batch(table, rows(["a-1", "a-2", "b-1"], "b1"), "s", "b1")
    index.upsert_batch(table, rows(["c-1"], "b2"), "s", "b2")
    again = index.upsert_batch(table, rows(["a-1", "a-2", "b-1"], "b1"), "s", "b1")
    assert (again.inserted, again.deleted, again.total_rows) == (0, 0, 4)

    # Document b left batch b1 and document a changed one chunk: nothing stale stays.
    changed = index.upsert_batch(table, rows(["a-2", "a-3"], "b1"), "s", "b1")
    assert (changed.inserted, changed.deleted, changed.total_rows) == (1, 2, 3)
    assert ids_in(table) == ["a-2", "a-3", "c-1"]


def test_removing_a_batch_removes_its_rows_only(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    index.upsert_batch(table, rows(["a-1", "a-2"], "b1"), "s", "b1")
    index.upsert_batch(table, rows(["c-1"], "b2"), "s", "b2")
    assert index.indexed_batches(table) == {("s", "b1"), ("s", "b2")}
    assert index.remove_batches(table, keep={("s", "b2")}) == {"s/b1": 2}
    assert ids_in(table) == ["c-1"]
    assert index.remove_batches(table, keep={("s", "b2")}) == {}


def test_an_earlier_version_can_be_restored(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    first = index.upsert_batch(table, rows(["a-1", "a-2"], "b1"), "s", "b1")
    index.upsert_batch(table, rows(["a-3"], "b1"), "s", "b1")
    assert ids_in(table) == ["a-3"]
    assert first.version in [v["version"] for v in index.list_versions(table)]
    new_version = index.restore_version(table, first.version)
    assert new_version > first.version
    assert ids_in(table) == ["a-1", "a-2"]
    reopened = index.connect(tmp_path).open_table(index.TABLE_NAME)
    assert ids_in(reopened) == ["a-1", "a-2"]


def test_vector_search_finds_the_exact_vector_first(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    batch = rows(["a-1", "b-1", "c-1"], "b1")
    index.upsert_batch(table, batch, "s", "b1")
    query = np.array(batch.column("vector")[1].as_py(), dtype=np.float32)
    hits = index.vector_search(table, query, k=2)
    assert hits[0]["chunk_id"] == "b-1" and hits[0]["score"] > 1 - 1e-5


def test_ann_index_is_built_above_the_threshold_and_late_rows_are_found(tmp_path):
    dim, n = 16, 3000
    vectors = unit_vectors(n + 20, dim, seed=1)
    table = index.open_table(index.connect(tmp_path), dim=dim)
    ids = [f"d{i}-0" for i in range(n + 20)]
    index.upsert_batch(table, rows(ids[:n], "b1", dim, vectors[:n]), "s", "b1")
    assert index.maintain_indexes(table, ann_min_rows=n + 1).vector_index is False
    state = index.maintain_indexes(table, ann_min_rows=n)
    assert "created vector index" in state.actions and state.indexed_rows == n

    # Rows added after the build are searched before optimize() folds them in.
    index.upsert_batch(table, rows(ids[n:], "b2", dim, vectors[n:]), "s", "b2")
    assert table.index_stats(index.VECTOR_INDEX).num_unindexed_rows == 20
    for i in range(n, n + 20):
        assert index.vector_search(table, vectors[i], k=1)[0]["chunk_id"] == ids[i]
    state = index.maintain_indexes(table, ann_min_rows=n)
    assert "optimized" in state.actions and state.unindexed_rows == 0
    # ANN with refine agrees with exact search on indexed rows.
    for i in (0, 7, 2999):
        assert index.vector_search(table, vectors[i], k=1)[0]["chunk_id"] == ids[i]


def test_full_text_and_hybrid_search(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    texts = ["the walrus operator assigns", "generators yield values", "decorators wrap"]
    vectors = unit_vectors(3, 4)
    index.upsert_batch(table, rows(["a-1", "b-1", "c-1"], "b1", 4, vectors, texts), "s", "b1")
    assert index.maintain_indexes(table).actions == ["created fts index"]
    # A row added after the FTS index was built is found too.
    index.upsert_batch(
        table, rows(["d-1"], "b2", 4, vectors[:1], ["lambda makes functions"]), "s", "b2"
    )
    assert [h["chunk_id"] for h in index.fts_search(table, "walrus", 3)] == ["a-1"]
    assert [h["chunk_id"] for h in index.fts_search(table, "lambda", 3)] == ["d-1"]

    def encode(texts):  # the query "is" the vector of b-1
        return np.stack([vectors[1]] * len(texts))

    (vector_hits,) = search(table, encode, ["yield"], k=2, mode="vector")
    (hybrid_hits,) = search(table, encode, ["generators"], k=2, mode="hybrid")
    assert vector_hits[0]["chunk_id"] == "b-1" and hybrid_hits[0]["chunk_id"] == "b-1"
    with pytest.raises(ValueError):
        search(table, encode, ["x"], mode="nope")


def test_batch_names_with_quotes_are_refused_and_would_be_escaped():
    # Names are validated first (tests/reliability/test_injection.py); quoting stays.
    with pytest.raises(ValueError, match="invalid batch name"):
        index.batch_filter("s", "it's")
    assert index._sql_literal("it's") == "'it''s'"


def test_embedding_cache_embeds_each_text_once_per_model(tmp_path):
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return unit_vectors(len(texts), 8, seed=len(calls))

    cache = EmbeddingCache(tmp_path / "cache", "model-a", 8)
    first = embed_with_cache(["x", "y", "x"], cache, encode)
    assert (first.embedded, first.cached) == (2, 0) and calls == [["x", "y"]]
    assert np.array_equal(first.vectors[0], first.vectors[2])

    again = embed_with_cache(
        ["y", "z", "x"], EmbeddingCache(tmp_path / "cache", "model-a", 8), encode
    )
    assert (again.embedded, again.cached) == (1, 2) and calls[-1] == ["z"]
    assert np.array_equal(again.vectors[0], first.vectors[1])

    other_model = embed_with_cache(["x"], EmbeddingCache(tmp_path / "cache", "model-b", 8), encode)
    assert other_model.embedded == 1


def test_data_roots_share_the_embedding_cache_that_llama_embedding_cache_names(
    tmp_path, monkeypatch
):
    from llama_assets.base.layout import DataLayout

    monkeypatch.delenv("LLAMA_EMBEDDING_CACHE", raising=False)
    assert DataLayout(tmp_path / "a").embedding_cache.local == tmp_path / "a/cache/embeddings"
    monkeypatch.setenv("LLAMA_EMBEDDING_CACHE", str(tmp_path / "shared"))
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    assert a.embedding_cache.local == b.embedding_cache.local == tmp_path / "shared"
    calls = []

    def encode(texts):
        calls.append(texts)
        return np.ones((len(texts), 8), np.float32)

    embed_with_cache(["x"], EmbeddingCache(a.embedding_cache, "model-a", 8), encode)
    again = embed_with_cache(["x"], EmbeddingCache(b.embedding_cache, "model-a", 8), encode)
    assert (again.embedded, again.cached, len(calls)) == (0, 1, 1)


def test_a_table_creation_killed_before_its_first_commit_is_created_again(tmp_path):
    # What kill -9 inside create_table leaves (seen in the crash test): the table's
    # folder with a temporary transaction file and no version. LanceDB lists it and
    # cannot open it; every later rag_index failed with "Table 'chunks' was not found".
    transactions = tmp_path / f"{index.TABLE_NAME}.lance" / "_transactions"
    transactions.mkdir(parents=True)
    (transactions / ".tmpGbmhTT").write_bytes(b"\x00" * 448)
    db = index.connect(tmp_path)
    assert index.existing_table(db) is None
    table = index.open_table(db, 4)
    index.upsert_batch(table, rows(["d1-0", "d2-0"], "b1"), "s", "b1")
    assert ids_in(index.existing_table(index.connect(tmp_path))) == ["d1-0", "d2-0"]
